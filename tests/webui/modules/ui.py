"""Mirrors the script-related part of modules/ui.py create_ui (plus modules/ui_settings.py's setting
components): the txt2img and img2img tabs are built inside gr.Blocks in the real category order, with
each script's UI created in its section (setup_ui_for_section) and the section-less/selectable ones in
the "scripts" category (ScriptRunner.setup_ui), then the paste fields registered.

Simplified: only the components that feed txt2img()/img2img() and the paste fields are created
(no gallery, buttons, extra-networks pages, Extras/PNG info/Train tabs). Settings components are
created only for options added after startup (i.e. by extensions), the way
ui_settings.create_setting_component creates them. The created components are kept in
``txt2img_components`` / ``img2img_components`` (name -> component) and the argument lists of the
generate buttons in ``txt2img_inputs`` / ``img2img_inputs``."""

import html

import gradio as gr

from modules import infotext_utils, script_callbacks, scripts, sd_models, sd_samplers, sd_schedulers, shared, shared_items
from modules.infotext_utils import PasteField
from modules.shared import opts
from modules.ui_components import DropdownMulti, FormGroup, FormRow, InputAccordion, ResizeHandleRow, ToolButton  # noqa: F401

random_symbol = "\U0001f3b2\ufe0f"
reuse_symbol = "\u267b\ufe0f"
paste_symbol = "\u2199\ufe0f"
refresh_symbol = "\U0001f504"
save_style_symbol = "\U0001f4be"
apply_style_symbol = "\U0001f4cb"
clear_prompt_symbol = "\U0001f5d1\ufe0f"
extra_networks_symbol = "\U0001f3b4"
switch_values_symbol = "\U000021c5"
restore_progress_symbol = "\U0001f300"
detect_image_size_symbol = "\U0001f4d0"

txt2img_paste_fields = []
img2img_paste_fields = []

txt2img_components = {}
img2img_components = {}
txt2img_inputs = []
img2img_inputs = []
txt2img_interface = None
img2img_interface = None
settings_components = {}
extra_tabs = []

builtin_option_keys = set()  # filled by the harness: option keys that existed before scripts loaded


def plaintext_to_html(text, classname=None):
    # mirrors ui.plaintext_to_html
    content = "<br>\n".join(html.escape(x) for x in text.split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def ordered_ui_categories():
    # mirrors ui.ordered_ui_categories: opts.ui_reorder_list entries first, the others in default order
    user_order = {x.strip(): i * 2 + 1 for i, x in enumerate(shared.opts.ui_reorder_list)}
    for _, category in sorted(enumerate(shared_items.ui_reorder_categories()), key=lambda x: user_order.get(x[1], x[0] * 2 + 0)):
        yield category


def create_override_settings_dropdown(tabname, row):
    # mirrors ui.create_override_settings_dropdown
    dropdown = gr.Dropdown([], label="Override settings", visible=False, elem_id=f"{tabname}_override_settings", multiselect=True)
    dropdown.change(fn=lambda x: gr.Dropdown.update(visible=bool(x)), inputs=[dropdown], outputs=[dropdown])
    return dropdown


def create_setting_component(key):
    # mirrors ui_settings.create_setting_component: the component type comes from the option's
    # component, else from the default's type (str -> Textbox, int -> Number, bool -> Checkbox; any other
    # type raises, as in the real one)
    info = opts.data_labels[key]
    value = opts.data[key] if key in opts.data else info.default
    t = type(info.default)
    args = info.component_args() if callable(info.component_args) else info.component_args
    if info.component is not None:
        comp = info.component
    elif t is str:
        comp = gr.Textbox
    elif t is int:
        comp = gr.Number
    elif t is bool:
        comp = gr.Checkbox
    else:
        raise Exception(f"bad options item type: {t} for key {key}")
    return comp(label=info.label, value=value, elem_id=f"setting_{key}", **(args or {}))


def _create_toprow(tabname, components):
    components["prompt"] = gr.Textbox(label="Prompt", elem_id=f"{tabname}_prompt", show_label=False, lines=3)
    components["negative_prompt"] = gr.Textbox(
        label="Negative prompt", elem_id=f"{tabname}_neg_prompt", show_label=False, lines=3
    )
    components["styles"] = gr.Dropdown(label="Styles", elem_id=f"{tabname}_styles", choices=[], value=[], multiselect=True)


def _create_size_sliders(tabname, c):
    c["width"] = gr.Slider(minimum=64, maximum=2048, step=8, label="Width", value=512, elem_id=f"{tabname}_width")
    c["height"] = gr.Slider(minimum=64, maximum=2048, step=8, label="Height", value=512, elem_id=f"{tabname}_height")


def _create_batch_sliders(tabname, c):
    c["batch_count"] = gr.Slider(minimum=1, step=1, label="Batch count", value=1, elem_id=f"{tabname}_batch_count")
    c["batch_size"] = gr.Slider(minimum=1, maximum=8, step=1, label="Batch size", value=1, elem_id=f"{tabname}_batch_size")


def _create_cfg_slider(tabname, c):
    c["cfg_scale"] = gr.Slider(minimum=1.0, maximum=30.0, step=0.5, label="CFG Scale", value=7.0, elem_id=f"{tabname}_cfg_scale")


def _create_dimensions(tabname, c, create_size):
    # the "dimensions" category of both tabs: the size column, then the batch sliders beside it when
    # dimensions_and_batch_together
    with FormRow():
        with gr.Column(elem_id=f"{tabname}_column_size", scale=4):
            create_size()
        if opts.dimensions_and_batch_together:
            with gr.Column(elem_id=f"{tabname}_column_batch"):
                _create_batch_sliders(tabname, c)


def _create_tab(tabname, c, sections, accordion_items=None):
    # what create_ui does for both tabs: the prompt row, then in the settings column the UI categories in
    # their order, each created by ``sections[category]`` (tab-specific) or the categories both tabs
    # share, with the scripts' UIs of that section after it (inside the row for "accordions", after the
    # tab's own accordions).
    # Returns the tab's Blocks, its dummy component and the script inputs.
    runner = scripts.scripts_img2img if tabname == "img2img" else scripts.scripts_txt2img
    c.clear()
    scripts.scripts_current = runner
    runner.initialize_scripts(is_img2img=tabname == "img2img")
    custom_inputs = []

    def create_scripts():
        nonlocal custom_inputs
        with FormGroup(elem_id=f"{tabname}_script_container"):
            custom_inputs = runner.setup_ui()

    def create_accordions():
        with gr.Row(elem_id=f"{tabname}_accordions", elem_classes="accordions"):
            if accordion_items is not None:
                accordion_items()
            runner.setup_ui_for_section("accordions")

    def create_checkboxes():
        with FormRow(elem_classes="checkboxes-row", variant="compact"):
            pass

    def create_batch():
        if not opts.dimensions_and_batch_together:
            with FormRow(elem_id=f"{tabname}_column_batch"):
                _create_batch_sliders(tabname, c)

    def create_override_settings():
        with FormRow(elem_id=f"{tabname}_override_settings_row") as row:
            c["override_settings"] = create_override_settings_dropdown(tabname, row)

    shared_sections = {
        "accordions": create_accordions,
        "checkboxes": create_checkboxes,
        "batch": create_batch,
        "override_settings": create_override_settings,
        "scripts": create_scripts,
    }

    with gr.Blocks(analytics_enabled=False) as interface:
        _create_toprow(tabname, c)
        dummy_component = gr.Label(visible=False)
        with gr.Column(variant="compact", elem_id=f"{tabname}_settings"):
            runner.prepare_ui()
            for category in ordered_ui_categories():
                create = sections.get(category, shared_sections.get(category))
                if create is not None:
                    create()
                if category != "accordions":
                    runner.setup_ui_for_section(category)

    return interface, dummy_component, custom_inputs


def create_txt2img_tab():
    # mirrors the txt2img part of ui.create_ui (see the module docstring)
    global txt2img_interface, txt2img_inputs
    c = txt2img_components
    containers = {}  # the hires rows the paste fields show

    def create_cfg():
        with gr.Row():
            _create_cfg_slider("txt2img", c)

    def create_hires_fix():
        with InputAccordion(False, label="Hires. fix", elem_id="txt2img_hr") as enable_hr:
            c["enable_hr"] = enable_hr
            with FormRow(elem_id="txt2img_hires_fix_row1", variant="compact"):
                c["hr_upscaler"] = gr.Dropdown(
                    label="Upscaler",
                    elem_id="txt2img_hr_upscaler",
                    choices=[*shared.latent_upscale_modes, *[x.name for x in shared.sd_upscalers]],
                    value=shared.latent_upscale_default_mode,
                )
                c["hr_second_pass_steps"] = gr.Slider(
                    minimum=0, maximum=150, step=1, label="Hires steps", value=0, elem_id="txt2img_hires_steps"
                )
                c["denoising_strength"] = gr.Slider(
                    minimum=0.0,
                    maximum=1.0,
                    step=0.01,
                    label="Denoising strength",
                    value=0.7,
                    elem_id="txt2img_denoising_strength",
                )
            with FormRow(elem_id="txt2img_hires_fix_row2", variant="compact"):
                c["hr_scale"] = gr.Slider(
                    minimum=1.0, maximum=4.0, step=0.05, label="Upscale by", value=2.0, elem_id="txt2img_hr_scale"
                )
                c["hr_resize_x"] = gr.Slider(
                    minimum=0, maximum=2048, step=8, label="Resize width to", value=0, elem_id="txt2img_hr_resize_x"
                )
                c["hr_resize_y"] = gr.Slider(
                    minimum=0, maximum=2048, step=8, label="Resize height to", value=0, elem_id="txt2img_hr_resize_y"
                )
            with FormRow(elem_id="txt2img_hires_fix_row3", variant="compact", visible=opts.hires_fix_show_sampler) as row3:
                containers["hr_sampler"] = row3
                c["hr_checkpoint_name"] = gr.Dropdown(
                    label="Checkpoint",
                    elem_id="hr_checkpoint",
                    choices=["Use same checkpoint"] + sd_models.checkpoint_tiles(use_short=True),
                    value="Use same checkpoint",
                )
                c["hr_sampler_name"] = gr.Dropdown(
                    label="Hires sampling method",
                    elem_id="hr_sampler",
                    choices=["Use same sampler"] + sd_samplers.visible_sampler_names(),
                    value="Use same sampler",
                )
                c["hr_scheduler"] = gr.Dropdown(
                    label="Hires schedule type",
                    elem_id="hr_scheduler",
                    choices=["Use same scheduler"] + [x.label for x in sd_schedulers.schedulers],
                    value="Use same scheduler",
                )
            with FormRow(elem_id="txt2img_hires_fix_row4", variant="compact", visible=opts.hires_fix_show_prompts) as row4:
                containers["hr_prompts"] = row4
                c["hr_prompt"] = gr.Textbox(label="Hires prompt", elem_id="hires_prompt", show_label=False, lines=3)
                c["hr_negative_prompt"] = gr.Textbox(
                    label="Hires negative prompt", elem_id="hires_neg_prompt", show_label=False, lines=3
                )

    sections = {
        "dimensions": lambda: _create_dimensions("txt2img", c, lambda: _create_size_sliders("txt2img", c)),
        "cfg": create_cfg,
    }
    txt2img_interface, dummy_component, custom_inputs = _create_tab("txt2img", c, sections, accordion_items=create_hires_fix)

    txt2img_inputs = (
        [dummy_component]
        + [
            c[name]
            for name in (
                "prompt negative_prompt styles batch_count batch_size cfg_scale height width enable_hr denoising_strength "
                "hr_scale hr_upscaler hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name "
                "hr_scheduler hr_prompt hr_negative_prompt override_settings"
            ).split()
        ]
        + list(custom_inputs)
    )

    paste = [
        PasteField(c["prompt"], "Prompt", api="prompt"),
        PasteField(c["negative_prompt"], "Negative prompt", api="negative_prompt"),
        PasteField(c["cfg_scale"], "CFG scale", api="cfg_scale"),
        PasteField(c["width"], "Size-1", api="width"),
        PasteField(c["height"], "Size-2", api="height"),
        PasteField(c["batch_size"], "Batch size", api="batch_size"),
        PasteField(
            c["styles"], lambda d: d["Styles array"] if isinstance(d.get("Styles array"), list) else gr.update(), api="styles"
        ),
        PasteField(c["denoising_strength"], "Denoising strength", api="denoising_strength"),
        PasteField(
            c["enable_hr"],
            lambda d: "Denoising strength" in d and ("Hires upscale" in d or "Hires upscaler" in d or "Hires resize-1" in d),
            api="enable_hr",
        ),
        PasteField(c["hr_scale"], "Hires upscale", api="hr_scale"),
        PasteField(c["hr_upscaler"], "Hires upscaler", api="hr_upscaler"),
        PasteField(c["hr_second_pass_steps"], "Hires steps", api="hr_second_pass_steps"),
        PasteField(c["hr_resize_x"], "Hires resize-1", api="hr_resize_x"),
        PasteField(c["hr_resize_y"], "Hires resize-2", api="hr_resize_y"),
        PasteField(c["hr_checkpoint_name"], "Hires checkpoint", api="hr_checkpoint_name"),
        PasteField(c["hr_sampler_name"], sd_samplers.get_hr_sampler_from_infotext, api="hr_sampler_name"),
        PasteField(c["hr_scheduler"], sd_samplers.get_hr_scheduler_from_infotext, api="hr_scheduler"),
        PasteField(
            containers["hr_sampler"],
            lambda d: (
                gr.update(visible=True)
                if d.get("Hires sampler", "Use same sampler") != "Use same sampler"
                or d.get("Hires checkpoint", "Use same checkpoint") != "Use same checkpoint"
                or d.get("Hires schedule type", "Use same scheduler") != "Use same scheduler"
                else gr.update()
            ),
        ),
        PasteField(c["hr_prompt"], "Hires prompt", api="hr_prompt"),
        PasteField(c["hr_negative_prompt"], "Hires negative prompt", api="hr_negative_prompt"),
        PasteField(
            containers["hr_prompts"],
            lambda d: (
                gr.update(visible=True)
                if d.get("Hires prompt", "") != "" or d.get("Hires negative prompt", "") != ""
                else gr.update()
            ),
        ),
        *scripts.scripts_txt2img.infotext_fields,
    ]
    infotext_utils.add_paste_fields("txt2img", None, paste, c["override_settings"])

    return txt2img_interface


def create_img2img_tab():
    # mirrors the img2img part of ui.create_ui (see the module docstring)
    global img2img_interface, img2img_inputs
    c = img2img_components

    def create_image_inputs():
        c["img2img_selected_tab"] = gr.Number(value=0, visible=False)
        upload = {"show_label": False, "source": "upload", "interactive": True, "type": "pil"}
        c["init_img"] = gr.Image(label="Image for img2img", elem_id="img2img_image", image_mode="RGBA", **upload)
        c["sketch"] = gr.Image(label="Image for img2img", elem_id="img2img_sketch", image_mode="RGB", **upload)
        c["init_img_with_mask"] = gr.Image(
            label="Image for inpainting with mask", elem_id="img2maskimg", image_mode="RGBA", **upload
        )
        c["inpaint_color_sketch"] = gr.Image(
            label="Color sketch inpainting", elem_id="inpaint_sketch", image_mode="RGB", **upload
        )
        c["inpaint_color_sketch_orig"] = gr.State(None)
        c["init_img_inpaint"] = gr.Image(label="Image for img2img", elem_id="img_inpaint_base", **upload)
        c["init_mask_inpaint"] = gr.Image(
            label="Mask", source="upload", interactive=True, type="pil", image_mode="RGBA", elem_id="img_inpaint_mask"
        )
        c["img2img_batch_input_dir"] = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
        c["img2img_batch_output_dir"] = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir")
        c["img2img_batch_inpaint_mask_dir"] = gr.Textbox(
            label="Inpaint batch mask directory (required for inpaint batch processing only)",
            elem_id="img2img_batch_inpaint_mask_dir",
        )
        c["img2img_batch_use_png_info"] = gr.Checkbox(label="Append png info to prompts", elem_id="img2img_batch_use_png_info")
        c["img2img_batch_png_info_props"] = gr.CheckboxGroup(
            ["Prompt", "Negative prompt", "Seed", "CFG scale", "Sampler", "Steps", "Model hash"],
            label="Parameters to take from png info",
            info="Prompts from png info will be appended to prompts set in ui.",
        )
        c["img2img_batch_png_info_dir"] = gr.Textbox(label="PNG info directory", elem_id="img2img_batch_png_info_dir")
        c["img2img_batch_source_type"] = gr.Textbox(visible=False, value="upload")
        c["img2img_batch_upload"] = gr.Files(label="Files", interactive=True, elem_id="img2img_batch_upload")
        with FormRow():
            c["resize_mode"] = gr.Radio(
                label="Resize mode",
                elem_id="resize_mode",
                choices=["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"],
                type="index",
                value="Just resize",
            )

    def create_size():
        c["selected_scale_tab"] = gr.Number(value=0, visible=False)
        _create_size_sliders("img2img", c)
        c["scale_by"] = gr.Slider(minimum=0.05, maximum=4.0, step=0.05, label="Scale", value=1.0, elem_id="img2img_scale")

    def create_denoising():
        c["denoising_strength"] = gr.Slider(
            minimum=0.0, maximum=1.0, step=0.01, label="Denoising strength", value=0.75, elem_id="img2img_denoising_strength"
        )

    def create_cfg():
        with gr.Row():
            _create_cfg_slider("img2img", c)
            c["image_cfg_scale"] = gr.Slider(
                minimum=0,
                maximum=3.0,
                step=0.05,
                label="Image CFG Scale",
                value=1.5,
                elem_id="img2img_image_cfg_scale",
                visible=False,
            )

    def create_inpaint():
        with FormGroup(elem_id="inpaint_controls", visible=False):
            c["mask_blur"] = gr.Slider(label="Mask blur", minimum=0, maximum=64, step=1, value=4, elem_id="img2img_mask_blur")
            c["mask_alpha"] = gr.Slider(label="Mask transparency", visible=False, elem_id="img2img_mask_alpha")
            c["inpainting_mask_invert"] = gr.Radio(
                label="Mask mode",
                choices=["Inpaint masked", "Inpaint not masked"],
                value="Inpaint masked",
                type="index",
                elem_id="img2img_mask_mode",
            )
            c["inpainting_fill"] = gr.Radio(
                label="Masked content",
                choices=["fill", "original", "latent noise", "latent nothing"],
                value="original",
                type="index",
                elem_id="img2img_inpainting_fill",
            )
            c["inpaint_full_res"] = gr.Radio(
                label="Inpaint area",
                choices=["Whole picture", "Only masked"],
                type="index",
                value="Whole picture",
                elem_id="img2img_inpaint_full_res",
            )
            c["inpaint_full_res_padding"] = gr.Slider(
                label="Only masked padding, pixels",
                minimum=0,
                maximum=256,
                step=4,
                value=32,
                elem_id="img2img_inpaint_full_res_padding",
            )

    sections = {
        "image": create_image_inputs,
        "dimensions": lambda: _create_dimensions("img2img", c, create_size),
        "denoising": create_denoising,
        "cfg": create_cfg,
        "inpaint": create_inpaint,
    }
    img2img_interface, dummy_component, custom_inputs = _create_tab("img2img", c, sections)

    img2img_inputs = (
        [dummy_component]
        + [
            c[name]
            for name in (
                "img2img_selected_tab prompt negative_prompt styles init_img sketch init_img_with_mask inpaint_color_sketch "
                "inpaint_color_sketch_orig init_img_inpaint init_mask_inpaint mask_blur mask_alpha inpainting_fill "
                "batch_count batch_size cfg_scale image_cfg_scale denoising_strength selected_scale_tab height width "
                "scale_by resize_mode inpaint_full_res inpaint_full_res_padding inpainting_mask_invert "
                "img2img_batch_input_dir img2img_batch_output_dir img2img_batch_inpaint_mask_dir override_settings "
                "img2img_batch_use_png_info img2img_batch_png_info_props img2img_batch_png_info_dir "
                "img2img_batch_source_type img2img_batch_upload"
            ).split()
        ]
        + list(custom_inputs)
    )

    paste = [
        (c["prompt"], "Prompt"),
        (c["negative_prompt"], "Negative prompt"),
        (c["cfg_scale"], "CFG scale"),
        (c["image_cfg_scale"], "Image CFG scale"),
        (c["width"], "Size-1"),
        (c["height"], "Size-2"),
        (c["batch_size"], "Batch size"),
        (c["styles"], lambda d: d["Styles array"] if isinstance(d.get("Styles array"), list) else gr.update()),
        (c["denoising_strength"], "Denoising strength"),
        (c["mask_blur"], "Mask blur"),
        (c["inpainting_mask_invert"], "Mask mode"),
        (c["inpainting_fill"], "Masked content"),
        (c["inpaint_full_res"], "Inpaint area"),
        (c["inpaint_full_res_padding"], "Masked area padding"),
        *scripts.scripts_img2img.infotext_fields,
    ]
    infotext_utils.add_paste_fields("img2img", c["init_img"], paste, c["override_settings"])
    infotext_utils.add_paste_fields("inpaint", c["init_img_with_mask"], paste, c["override_settings"])

    return img2img_interface


def create_ui():
    # mirrors ui.create_ui's order: paste fields reset, settings registered (on_ui_settings), txt2img tab,
    # img2img tab, extension tabs (on_ui_tabs), settings components
    infotext_utils.reset()
    script_callbacks.ui_settings_callback()  # ui_settings.UiSettings.register_settings

    create_txt2img_tab()
    create_img2img_tab()
    scripts.scripts_current = None

    extra_tabs.clear()
    extra_tabs.extend(script_callbacks.ui_tabs_callback())

    settings_components.clear()
    with gr.Blocks(analytics_enabled=False):
        for key, info in list(opts.data_labels.items()):
            if key in builtin_option_keys:
                continue
            if info.section[0] is None:  # like the real settings page, an option without a section fails here
                continue
            settings_components[key] = create_setting_component(key)
    shared.settings_components = settings_components

    with gr.Blocks(analytics_enabled=False) as demo:
        pass
    return demo
