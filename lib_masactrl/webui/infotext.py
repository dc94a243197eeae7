"""What the infotext holds beyond the field table, and pasting it back.

Pasting parameters (the paste button, or an image dropped on PNG Info and sent on) sets every
control whose key the infotext has. Two rules of our own on top:

- the header switch follows the pasted parameters: on only for a MasaCtrl image made on this tab
  (txt2img, or img2img), off for anything else, so that pasting a plain image's parameters, or a
  txt2img pair's into img2img (where the source prompt would mean "what the init image shows"),
  never leaves MasaCtrl on with settings from elsewhere;
- a section holding pasted settings that differ from their defaults opens, so that they are seen.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import gradio as gr

from ..fields import FIELD_BY_NAME, fill_pasted_defaults, recorded_inversion
from ..pairing import Pairing
from . import options

PREFIX = "MasaCtrl"
"""Every infotext key MasaCtrl writes starts with it."""
TARGET_PROMPT_KEY = "MasaCtrl target prompt"
ENABLED_KEY = FIELD_BY_NAME["enabled"].infotext
MADE_IN_KEY = "MasaCtrl made in"
"""Set while pasting only: the tab the pasted image was made on."""

MASK_FIELDS = ("mask_mode", "mask_words", "mask_target_words", "mask_threshold", "show_masks")
SEQUENCE_FIELDS = ("layout", "target_prompts", "show_every_source", "control_maps_unit", "animation", "fps")
"""The fields of the "Masks" and "Layout and sequences" sections that the infotext holds."""

HIRES_KEYS = ("Hires upscale", "Hires steps", "Hires upscaler")
"""Keys only a hires fix pass writes (parsing fills in others, such as "Hires resize-1", with defaults)."""


def main_prompt_of_sources(pairing: Pairing, main_prompts: Sequence[str]) -> Callable[..., str | None]:
    """Infotext value for source images: the main prompt they replaced. A source image's own prompt
    is the source prompt, so pasting its parameters would otherwise make the source prompt the
    main prompt. ``create_infotext`` calls it with its locals: ``all_prompts`` is one batch's
    prompts (with ``index`` in the batch, ``p.iteration`` the batch) or the whole generation's."""

    def value(p: Any = None, all_prompts: Sequence[str] | None = None, index: int = 0, **_: Any) -> str | None:
        if not all_prompts or len(all_prompts) % len(pairing) or pairing.is_target(index):
            return None
        if len(all_prompts) != len(main_prompts):
            index += getattr(p, "iteration", 0) * len(all_prompts)
        return main_prompts[index] if index < len(main_prompts) else None

    return value


def drop_unlisted_values(processed: Any) -> None:
    """The per-image target prompt is a function the infotexts have already called; left in the
    result's ``extra_generation_params``, the API would show it as ``null``."""
    params = getattr(processed, "extra_generation_params", None)
    if isinstance(params, dict) and callable(params.get(TARGET_PROMPT_KEY)):
        del params[TARGET_PROMPT_KEY]


def made_in_img2img(params: Dict[str, Any]) -> bool:
    """Whether pasted parameters are an img2img image's: an inverted one, or one with a denoising
    strength that no hires fix pass explains."""
    if recorded_inversion(params):
        return True
    hires = any(key in params for key in HIRES_KEYS) or str(params.get("Hires resize-1", 0)) not in ("0", "")
    return "Denoising strength" in params and not hires


def made_with_masactrl(params: Dict[str, Any]) -> bool:
    """Whether pasted parameters are those of a MasaCtrl image."""
    return str(params.get(ENABLED_KEY, "")).strip().lower() == "true"


def enabled_on_paste(params: Dict[str, Any], is_img2img: bool) -> Any:
    """The header switch after pasting ``params`` into the txt2img or img2img tab."""
    tab = "img2img" if is_img2img else "txt2img"
    return gr.update(value=made_with_masactrl(params) and params.get(MADE_IN_KEY) == tab)


def opens_on_paste(names: Sequence[str]) -> Callable[[Dict[str, Any]], Any]:
    """For a section: open it when pasted MasaCtrl parameters set one of its fields to another value
    than the default (pasting fills in the defaults, so each key is there)."""
    fields = [FIELD_BY_NAME[name] for name in names]

    def update(params: Dict[str, Any]) -> Any:
        if not made_with_masactrl(params):
            return gr.update()
        changed = any(field.infotext in params and str(params[field.infotext]) != str(field.default) for field in fields)
        return gr.update(open=True) if changed else gr.update()

    return update


def on_infotext_pasted(infotext: str, params: Dict[str, Any]) -> None:
    """Before the fields are set: the main prompt a source replaced, the defaults of the keys the
    infotext leaves out, and which tab made the image (read before the defaults hide it)."""
    params[MADE_IN_KEY] = "img2img" if made_in_img2img(params) else "txt2img"
    if TARGET_PROMPT_KEY in params:
        params["Prompt"] = params.pop(TARGET_PROMPT_KEY)
    if recorded_inversion(params):
        params.setdefault(options.READS_INFOTEXT, options.READS_BEFORE.value)
    fill_pasted_defaults(params)
