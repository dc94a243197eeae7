"""Stand-in for ``modules/infotext_utils.py`` and ``modules/infotext_versions.py`` of the WebUI
v1.10.1: quoting and parsing infotexts, the paste fields of each tab and what the paste button does
with them, and settings overridden by "key: value" texts.

The real paste runs in a gradio click handler; ``paste_infotext(tabname, infotext)`` does the same
work without a browser. Simplified: an empty infotext is not replaced by params.txt, and the parser
drops the compatibility rules for pre-1.0 infotexts (old hires-fix sizes, "Hypernet")."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import gradio as gr
from packaging import version

from modules import errors, prompt_parser, script_callbacks, shared

_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")

paste_fields: dict[str, dict[str, Any]] = {}
"""Per tab: {"init_img": component, "fields": [PasteField...], "override_settings_component": component}."""


class PasteField(tuple):
    """infotext_utils.py ``PasteField``: a (component, target) pair, where the target is an infotext
    key (``label``) or a function of the parsed infotext (``function``); ``api`` names the request
    field the API fills from it when a request carries an infotext."""

    def __new__(cls, component, target, *, api: str | None = None):
        field = super().__new__(cls, (component, target))
        field.component, field.api = component, api
        field.label = target if isinstance(target, str) else None
        field.function = target if callable(target) else None
        return field


def reset() -> None:
    paste_fields.clear()


def add_paste_fields(tabname: str, init_img, fields, override_settings_component=None) -> None:
    """Register a tab's paste fields; plain (component, target) pairs become PasteFields."""
    fields = [field if isinstance(field, PasteField) else PasteField(*field) for field in fields or ()]
    paste_fields[tabname] = {"init_img": init_img, "fields": fields, "override_settings_component": override_settings_component}


def quote(text):
    """A value as written in an infotext: JSON-quoted when it holds ',', ':' or a newline."""
    return json.dumps(text, ensure_ascii=False) if any(mark in str(text) for mark in ",:\n") else text


def _unquote(text: str) -> str:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --- infotext versions (infotext_versions.py) -------------------------------------------------------


def _written_by(text: str | None):
    """The WebUI version in an infotext's "Version" ("v1.6.0-123-gabc" -> 1.6.0 post 123), or None."""
    if text is None:
        return None
    try:
        return version.parse(re.sub(r"^([^-]+-[^-]+)-.*", r"\1", text))
    except version.InvalidVersion:
        return None


# What infotexts of older versions mean by default, as the settings that recreate it
# (infotext_versions.py backcompat): (first version without it, whether it applies, infotext key).
_BACKCOMPAT = (
    ("1.6.0", lambda params: "[" in params.get("Prompt", ""), "Old prompt editing timelines"),
    ("1.6.0", lambda params: params.get("Sampler", "") in ("DDIM", "PLMS"), "Pad conds v0"),
    ("v1.7.0-225", lambda params: True, "Downcast alphas_cumprod"),
    ("1.8.0", lambda params: bool(params.get("Refiner")), "Refiner switch by sampling steps"),
)


def _apply_backcompat(params: dict) -> None:
    written = _written_by(params.get("Version"))
    if not shared.opts.auto_backcompat or written is None:
        return
    for fixed_in, applies, key in _BACKCOMPAT:
        if written < version.parse(fixed_in) and applies(params):
            params[key] = True


# --- parsing ------------------------------------------------------------------------------------


# Keys an infotext leaves out when the control or setting was at this value.
_ABSENT_MEANS = {
    "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0, "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler", "Hires checkpoint": "Use same checkpoint", "Hires prompt": "",
    "Hires negative prompt": "", "Mask mode": "Inpaint masked", "Masked content": "original",
    "Inpaint area": "Whole picture", "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic",
    "Schedule max sigma": 0, "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full",
    "FP8 weight": "Disable", "Refiner switch by sampling steps": False,
}


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    """The prompt lines, and those from the "Negative prompt:" line on, each joined without their
    leading empty lines (later empty lines stay, as in the real parser)."""
    prompt, negative = [], None
    for line in (line.strip() for line in lines):
        if line.startswith("Negative prompt:"):
            negative = [] if negative is None else negative
            line = line[len("Negative prompt:"):].strip()
        (prompt if negative is None else negative).append(line)
    return tuple("\n".join(itertools.dropwhile(lambda part: not part, parts)) for parts in (prompt, negative or []))


def _take_styles(params: dict, prompt: str, negative: str) -> tuple[str, str]:
    """With opts.infotext_styles, the styles found in the prompts are taken out of them (and of the
    hires prompts, for infotexts of 1.8.0-139 on, if those have the same styles) into "Styles array"."""
    styles, bare_prompt, bare_negative = shared.prompt_styles.extract_styles_from_prompt(prompt, negative)
    if "Hires prompt" in params or "Hires negative prompt" in params:
        written = _written_by(params.get("Version"))
        if written is None or written > version.parse("1.8.0-139"):
            hires = (params.get("Hires prompt", prompt), params.get("Hires negative prompt", negative))
            hr_styles, hr_prompt, hr_negative = shared.prompt_styles.extract_styles_from_prompt(*hires)
            if hr_styles != styles:
                return prompt, negative
            params["Hires prompt"] = "" if hr_prompt == bare_prompt else hr_prompt
            params["Hires negative prompt"] = "" if hr_negative == bare_negative else hr_negative
    if shared.opts.infotext_styles == "Apply" or (shared.opts.infotext_styles == "Apply if any" and styles):
        params["Styles array"] = styles
    return bare_prompt, bare_negative


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None) -> dict[str, Any]:
    """infotext_utils.py ``parse_generation_parameters``: the prompt, the negative prompt and the
    "key: value" pairs of the last line (when it has at least three; "WxH" values become "key-1" and
    "key-2"; a key with an empty value is dropped), with the values absent keys stand for, the
    back-compatibility keys of older versions, and ``skip_fields`` (default:
    opts.infotext_skip_pasting) removed. Values stay text."""
    *lines, last = x.strip().split("\n")
    if len(_PAIR.findall(last)) < 3:
        lines, last = [*lines, last], ""
    prompt, negative = _split_prompts(lines)
    params: dict[str, Any] = {}
    for key, value in _PAIR.findall(last):
        if not value:
            continue
        if value[0] == '"' and value[-1] == '"':
            value = _unquote(value)
        size = _SIZE.match(value)
        if size:
            params[f"{key}-1"], params[f"{key}-2"] = size.groups()
        else:
            params[key] = value
    if shared.opts.infotext_styles != "Ignore":
        prompt, negative = _take_styles(params, prompt, negative)
    params["Prompt"], params["Negative prompt"] = prompt, negative
    for key, value in _ABSENT_MEANS.items():
        params.setdefault(key, value)
    if params["FP8 weight"] != "Disable":
        params.setdefault("Cache FP16 weight for LoRA", False)
    weighted = prompt_parser.parse_prompt_attention(prompt) + prompt_parser.parse_prompt_attention(negative)
    if any(weight != 1.0 and text != "BREAK" for text, weight in weighted):
        params.setdefault("Emphasis", "Original")
    _apply_backcompat(params)
    for key in shared.opts.infotext_skip_pasting if skip_fields is None else skip_fields:
        params.pop(key, None)
    return params


# --- settings named in infotexts ------------------------------------------------------------------


def _settings_by_infotext_key() -> list[tuple[str, str]]:
    return [(info.infotext, name) for name, info in shared.opts.data_labels.items() if info.infotext]


def create_override_settings_dict(text_pairs) -> dict[str, Any]:
    """infotext_utils.py ``create_override_settings_dict``: ["Clip skip: 2", ...] (the override
    settings box) as {setting name: value of the setting's type}."""
    given = dict(pair.split(":", maxsplit=1) for pair in text_pairs)
    return {name: shared.opts.cast_value(name, given[key].strip()) for key, name in _settings_by_infotext_key() if key in given}


def get_override_settings(params: dict, *, skip_fields=None) -> list[tuple[str, str, Any]]:
    """infotext_utils.py ``get_override_settings``: (infotext key, setting, value) for the settings an
    infotext names with a value other than the current one (the checkpoint only without
    opts.disable_weights_auto_swap)."""
    found = []
    for key, name in _settings_by_infotext_key():
        if key in (skip_fields or {}) or params.get(key) is None:
            continue
        if name == "sd_model_checkpoint" and shared.opts.disable_weights_auto_swap:
            continue
        value = shared.opts.cast_value(name, params[key])
        if value != getattr(shared.opts, name, None):
            found.append((key, name, value))
    return found


# --- pasting --------------------------------------------------------------------------------------


def _update_for(component, value):
    """The gr.update a pasted value gives: none for None, an update returned by a paste function as
    is, else the value converted to the type of the component's value ("False" is false, numbers for
    int components arrive as float); a value that does not convert leaves the component alone."""
    if value is None:
        return gr.update()
    if isinstance(value, dict):
        return value
    kind = type(component.value)
    try:
        if kind is bool and value == "False":
            return gr.update(value=False)
        return gr.update(value=float(value) if kind is int else kind(value))
    except Exception:
        return gr.update()


def _pasted_value(target, params: dict):
    """A paste field's value: its key's in the parsed infotext, or what its function makes of it
    (None, reported, when the function fails)."""
    if not callable(target):
        return params.get(target)
    try:
        return target(params)
    except Exception:
        errors.report(f"Error executing {target}", exc_info=True)
        return None


def paste_infotext(tabname: str, infotext: str) -> list[tuple[Any, dict]]:
    """Stand-in for clicking the tab's paste button (the handler of infotext_utils.py
    ``connect_paste``): the infotext parsed, the infotext_pasted callbacks, then one update per paste
    field, and last the override-settings box listing the settings that differ from the current ones.
    Returns (component, update) pairs in field order."""
    entry = paste_fields[tabname]
    fields = list(entry["fields"])
    handled = {target for _, target in fields}
    if entry["override_settings_component"] is not None:

        def overridden(params):
            texts = [f"{key}: {value}" for key, _, value in get_override_settings(params, skip_fields=handled)]
            return gr.Dropdown.update(value=texts, choices=texts, visible=bool(texts))

        fields.append((entry["override_settings_component"], overridden))

    params = parse_generation_parameters(infotext)
    script_callbacks.infotext_pasted_callback(infotext, params)
    return [(component, _update_for(component, _pasted_value(target, params))) for component, target in fields]
