"""Mirrors modules/infotext_utils.py: infotext quoting/parsing, paste fields, override settings.

The real paste happens in a gradio click handler built by connect_paste(); the stand-in builds the same
handler (``make_paste_function``) and exposes ``paste_infotext(tabname, infotext)`` to run it without a
browser. connect_paste_params_buttons does not wire buttons (no server runs)."""

from __future__ import annotations

import base64
import io
import json
import re
import sys

import gradio as gr

from modules import errors, images, infotext_versions, prompt_parser, script_callbacks, shared

sys.modules["modules.generation_parameters_copypaste"] = sys.modules[__name__]  # old name, as in the real file

re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")
re_hypernet_hash = re.compile(r"\(([0-9a-f]+)\)$")
type_of_gr_update = type(gr.update())


class ParamBinding:
    # mirrors infotext_utils.ParamBinding
    def __init__(
        self,
        paste_button,
        tabname,
        source_text_component=None,
        source_image_component=None,
        source_tabname=None,
        override_settings_component=None,
        paste_field_names=None,
    ):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    # mirrors infotext_utils.PasteField: a (component, label-or-function) pair with an optional API field name
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict[str, dict] = {}
registered_param_bindings: list[ParamBinding] = []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()


def quote(text):
    # mirrors infotext_utils.quote: JSON-quotes values containing ',', ':' or a newline
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    # mirrors infotext_utils.unquote
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def image_from_url_text(filedata):
    # mirrors infotext_utils.image_from_url_text for base64 data (no gradio temp files in the stand-in)
    if filedata is None:
        return None
    if type(filedata) is list:
        if len(filedata) == 0:
            return None
        filedata = filedata[0]
    if filedata.startswith("data:image/png;base64,"):
        filedata = filedata[len("data:image/png;base64,") :]
    return images.read(io.BytesIO(base64.decodebytes(filedata.encode("utf-8"))))


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    # mirrors infotext_utils.add_paste_fields: (component, target) pairs become PasteField; also sets the
    # old modules.ui.<tab>_paste_fields names
    if fields:
        for i in range(len(fields)):
            if not isinstance(fields[i], PasteField):
                fields[i] = PasteField(*fields[i])

    paste_fields[tabname] = {"init_img": init_img, "fields": fields, "override_settings_component": override_settings_component}

    import modules.ui

    if tabname == "txt2img":
        modules.ui.txt2img_paste_fields = fields
    elif tabname == "img2img":
        modules.ui.img2img_paste_fields = fields


def create_buttons(tabs_list):
    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons, send_image, send_generate_info):
    for tabname, button in buttons.items():
        source_text_component = send_generate_info if isinstance(send_generate_info, gr.components.Component) else None
        source_tabname = send_generate_info if isinstance(send_generate_info, str) else None
        register_paste_params_button(
            ParamBinding(
                paste_button=button,
                tabname=tabname,
                source_text_component=source_text_component,
                source_image_component=send_image,
                source_tabname=source_tabname,
            )
        )


def register_paste_params_button(binding: ParamBinding):
    registered_param_bindings.append(binding)


def connect_paste_params_buttons():
    pass  # simplified: no buttons are wired in the stand-in


def restore_old_hires_fix_params(res):
    # mirrors infotext_utils.restore_old_hires_fix_params
    firstpass_width = res.get("First pass size-1", None)
    firstpass_height = res.get("First pass size-2", None)

    if shared.opts.use_old_hires_fix_width_height:
        hires_width = int(res.get("Hires resize-1", 0))
        hires_height = int(res.get("Hires resize-2", 0))
        if hires_width and hires_height:
            res["Size-1"] = hires_width
            res["Size-2"] = hires_height
            return

    if firstpass_width is None or firstpass_height is None:
        return

    firstpass_width, firstpass_height = int(firstpass_width), int(firstpass_height)
    width = int(res.get("Size-1", 512))
    height = int(res.get("Size-2", 512))

    if firstpass_width == 0 or firstpass_height == 0:
        from modules import processing

        firstpass_width, firstpass_height = processing.old_hires_fix_first_pass_dimensions(width, height)

    res["Size-1"] = firstpass_width
    res["Size-2"] = firstpass_height
    res["Hires resize-1"] = width
    res["Hires resize-2"] = height


def parse_generation_parameters(x: str, skip_fields: list[str] | None = None):
    # mirrors infotext_utils.parse_generation_parameters: prompt lines, "Negative prompt:" lines, and the
    # last line's "key: value" pairs (if it has at least 3); "WxH" values split into key-1/key-2; then the
    # defaults the real one fills in for missing keys, backcompat flags and skip_fields removal
    if skip_fields is None:
        skip_fields = shared.opts.infotext_skip_pasting

    res = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        try:
            if v[0] == '"' and v[-1] == '"':
                v = unquote(v)
            m = re_imagesize.match(v)
            if m is not None:
                res[f"{k}-1"] = m.group(1)
                res[f"{k}-2"] = m.group(2)
            else:
                res[k] = v
        except Exception:
            print(f'Error parsing "{k}: {v}"')

    if shared.opts.infotext_styles != "Ignore":
        found_styles, prompt_no_styles, negative_prompt_no_styles = shared.prompt_styles.extract_styles_from_prompt(
            prompt, negative_prompt
        )

        same_hr_styles = True
        if "Hires prompt" in res or "Hires negative prompt" in res:
            infotext_ver = infotext_versions.parse_version(res.get("Version"))
            if infotext_ver > infotext_versions.v180_hr_styles if infotext_ver else True:
                hr_prompt, hr_negative_prompt = res.get("Hires prompt", prompt), res.get("Hires negative prompt", negative_prompt)
                hr_found_styles, hr_prompt_no_styles, hr_negative_prompt_no_styles = (
                    shared.prompt_styles.extract_styles_from_prompt(hr_prompt, hr_negative_prompt)
                )
                same_hr_styles = found_styles == hr_found_styles
                if same_hr_styles:
                    res["Hires prompt"] = "" if hr_prompt_no_styles == prompt_no_styles else hr_prompt_no_styles
                    res["Hires negative prompt"] = (
                        "" if hr_negative_prompt_no_styles == negative_prompt_no_styles else hr_negative_prompt_no_styles
                    )

        if same_hr_styles:
            prompt, negative_prompt = prompt_no_styles, negative_prompt_no_styles
            if (shared.opts.infotext_styles == "Apply if any" and found_styles) or shared.opts.infotext_styles == "Apply":
                res["Styles array"] = found_styles

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt

    if "Clip skip" not in res:
        res["Clip skip"] = "1"

    hypernet = res.get("Hypernet", None)
    if hypernet is not None:
        res["Prompt"] += f"""<hypernet:{hypernet}:{res.get("Hypernet strength", "1.0")}>"""

    defaults = [
        ("Hires sampler", "Use same sampler"),
        ("Hires schedule type", "Use same scheduler"),
        ("Hires checkpoint", "Use same checkpoint"),
        ("Hires prompt", ""),
        ("Hires negative prompt", ""),
        ("Mask mode", "Inpaint masked"),
        ("Masked content", "original"),
        ("Inpaint area", "Whole picture"),
        ("Masked area padding", 32),
    ]
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    for key, value in defaults:
        if key not in res:
            res[key] = value

    restore_old_hires_fix_params(res)

    defaults = [
        ("RNG", "GPU"),
        ("Schedule type", "Automatic"),
        ("Schedule max sigma", 0),
        ("Schedule min sigma", 0),
        ("Schedule rho", 0),
        ("VAE Encoder", "Full"),
        ("VAE Decoder", "Full"),
        ("FP8 weight", "Disable"),
    ]
    for key, value in defaults:
        if key not in res:
            res[key] = value

    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False

    prompt_attention = prompt_parser.parse_prompt_attention(prompt) + prompt_parser.parse_prompt_attention(negative_prompt)
    prompt_uses_emphasis = len(prompt_attention) != len([p for p in prompt_attention if p[1] == 1.0 or p[0] == "BREAK"])
    if "Emphasis" not in res and prompt_uses_emphasis:
        res["Emphasis"] = "Original"

    if "Refiner switch by sampling steps" not in res:
        res["Refiner switch by sampling steps"] = False

    infotext_versions.backcompat(res)

    for key in skip_fields:
        res.pop(key, None)

    return res


infotext_to_setting_name_mapping = []


def create_override_settings_dict(text_pairs):
    # mirrors infotext_utils.create_override_settings_dict: ["Clip skip: 2", ...] -> {setting: value}
    res = {}
    params = {}
    for pair in text_pairs:
        k, v = pair.split(":", maxsplit=1)
        params[k] = v.strip()

    mapping = [(info.infotext, k) for k, info in shared.opts.data_labels.items() if info.infotext]
    for param_name, setting_name in mapping + infotext_to_setting_name_mapping:
        value = params.get(param_name, None)
        if value is None:
            continue
        res[setting_name] = shared.opts.cast_value(setting_name, value)
    return res


def get_override_settings(params, *, skip_fields=None):
    # mirrors infotext_utils.get_override_settings: infotext keys that map to settings differing from now
    res = []
    mapping = [(info.infotext, k) for k, info in shared.opts.data_labels.items() if info.infotext]
    for param_name, setting_name in mapping + infotext_to_setting_name_mapping:
        if param_name in (skip_fields or {}):
            continue
        v = params.get(param_name, None)
        if v is None:
            continue
        if setting_name == "sd_model_checkpoint" and shared.opts.disable_weights_auto_swap:
            continue
        v = shared.opts.cast_value(setting_name, v)
        current_value = getattr(shared.opts, setting_name, None)
        if v == current_value:
            continue
        res.append((param_name, setting_name, v))
    return res


def make_paste_function(paste_fields_list):
    # mirrors the paste_func closure of infotext_utils.connect_paste: parses the infotext, fires the
    # infotext_pasted callbacks, then one gr.update per field (function targets may return updates;
    # values are cast to the type of the component's current value; errors leave the field unchanged)
    def paste_func(prompt):
        params = parse_generation_parameters(prompt)
        script_callbacks.infotext_pasted_callback(prompt, params)
        res = []
        for output, key in paste_fields_list:
            if callable(key):
                try:
                    v = key(params)
                except Exception:
                    errors.report(f"Error executing {key}", exc_info=True)
                    v = None
            else:
                v = params.get(key, None)

            if v is None:
                res.append(gr.update())
            elif isinstance(v, type_of_gr_update):
                res.append(v)
            else:
                try:
                    valtype = type(output.value)
                    if valtype is bool and v == "False":
                        val = False
                    elif valtype is int:
                        val = float(v)
                    else:
                        val = valtype(v)
                    res.append(gr.update(value=val))
                except Exception:
                    res.append(gr.update())
        return res

    return paste_func


def connect_paste(button, paste_fields_list, input_comp, override_settings_component, tabname):
    # mirrors infotext_utils.connect_paste (the override-settings field is added the same way)
    if override_settings_component is not None:
        already_handled_fields = {key: 1 for _, key in paste_fields_list}

        def paste_settings(params):
            vals = get_override_settings(params, skip_fields=already_handled_fields)
            vals_pairs = [f"{infotext_text}: {value}" for infotext_text, setting_name, value in vals]
            return gr.Dropdown.update(value=vals_pairs, choices=vals_pairs, visible=bool(vals_pairs))

        paste_fields_list = paste_fields_list + [(override_settings_component, paste_settings)]

    button.click(
        fn=make_paste_function(paste_fields_list),
        inputs=[input_comp],
        outputs=[x[0] for x in paste_fields_list],
        show_progress=False,
    )


def paste_infotext(tabname, infotext):
    """Stand-in helper: what clicking the tab's paste button does with ``infotext``. Returns a list of
    (component, update dict) for every paste field of the tab, in order."""
    entry = paste_fields[tabname]
    fields = list(entry["fields"])
    override_settings_component = entry["override_settings_component"]
    if override_settings_component is not None:
        already_handled_fields = {key: 1 for _, key in fields}

        def paste_settings(params):
            vals = get_override_settings(params, skip_fields=already_handled_fields)
            vals_pairs = [f"{infotext_text}: {value}" for infotext_text, setting_name, value in vals]
            return gr.Dropdown.update(value=vals_pairs, choices=vals_pairs, visible=bool(vals_pairs))

        fields = fields + [(override_settings_component, paste_settings)]
    updates = make_paste_function(fields)(infotext)
    return [(field[0], update) for field, update in zip(fields, updates)]
