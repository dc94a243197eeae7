"""Stand-in for modules/ui.py of the WebUI (``create_ui`` and ``plaintext_to_html``), with the
settings page of modules/ui_settings.py.

``create_ui`` builds what an extension meets in the real UI, with real gradio 3 Blocks:
- the txt2img and img2img tabs, each its own ``gr.Blocks`` (``txt2img_interface`` /
  ``img2img_interface``) holding the inputs of the tab's generate function, wired to it through
  the Generate button as the real UI wires them; the UI categories in their configured order
  (``ordered_ui_categories``), each script's UI created by the tab's ScriptRunner in the category
  of its ``section`` (inside the accordions row for "accordions"), the section-less and selectable
  scripts under "scripts";
- the paste fields of both tabs (modules/infotext_utils.py), scripts' infotext fields included;
- a Settings page with a component for each option that extensions added (``shared.settings_components``);
- the extensions' own tabs (``on_ui_tabs``); everything rendered into one ``demo`` Blocks.
Left out: the extra-networks pages, the output panel's buttons, Extras / PNG Info / Checkpoint
merger / Train / Extensions tabs, the settings of the host itself, and the small UI-only event
handlers (token counters, resolution previews, image editors' tabs, the batch tab: its inputs are
fixed ``gr.State`` values, since the stand-in has no img2img batch mode)."""

from __future__ import annotations

import html
from contextlib import nullcontext
from itertools import groupby

import gradio as gr

from modules import infotext_utils, script_callbacks, scripts, sd_models, sd_samplers, sd_schedulers, shared, shared_items
from modules.call_queue import wrap_gradio_gpu_call
from modules.infotext_utils import PasteField
from modules.ui_components import FormGroup, FormRow, InputAccordion, ResizeHandleRow

txt2img_interface: gr.Blocks | None = None
img2img_interface: gr.Blocks | None = None
txt2img_paste_fields: list = []
img2img_paste_fields: list = []
"""The tabs' paste fields, as infotext_utils.add_paste_fields leaves them here (the old names)."""

builtin_option_keys: set[str] = set()
"""Set by the harness: the host's own option keys, which get no settings component."""


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """ui.plaintext_to_html: each line escaped, lines joined with <br>, in one <p>."""
    body = "<br>\n".join(html.escape(line) for line in text.split("\n"))
    opening = f"<p class='{classname}'>" if classname else "<p>"
    return f"{opening}{body}</p>"


def ordered_ui_categories() -> list[str]:
    """ui.ordered_ui_categories: the categories in their built-in order, except that those named in
    the "UI item order" setting go, in that order, where their listed position falls among the
    others (rank 2i+1 for the i-th listed, 2j for the j-th category otherwise)."""
    listed = [name.strip() for name in shared.opts.ui_reorder_list]

    def rank(numbered: tuple[int, str]) -> int:
        position, category = numbered
        return 2 * listed.index(category) + 1 if category in listed else 2 * position

    return [category for _, category in sorted(enumerate(shared_items.ui_reorder_categories()), key=rank)]


def _slider(label: str, elem_id: str, low: float, high: float, step: float, value: float, **more) -> gr.Slider:
    return gr.Slider(label=label, elem_id=elem_id, minimum=low, maximum=high, step=step, value=value, **more)


def _index_radio(label: str, elem_id: str, choices: list[str], value: str) -> gr.Radio:
    """A radio whose value reaches the generate function as the index of the choice."""
    return gr.Radio(label=label, elem_id=elem_id, choices=choices, value=value, type="index")


def _styles_from_infotext(params: dict):
    styles = params.get("Styles array")
    return styles if isinstance(styles, list) else gr.update()


class _GenerationTab:
    """One generation tab while it is built. ``parts`` holds its components under the names of the
    generate function's parameters; ``ARGUMENTS`` lists the ones the function takes, in its order.
    A method ``_category_<name>`` fills the UI category of that name."""

    name = ""
    ARGUMENTS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.runner = scripts.scripts_img2img if self.name == "img2img" else scripts.scripts_txt2img
        self.parts: dict[str, gr.components.Component] = {}
        self.script_inputs: list = []

    def elem(self, suffix: str) -> str:
        return f"{self.name}_{suffix}"

    def build(self) -> gr.Blocks:
        scripts.scripts_current = self.runner
        self.runner.initialize_scripts(is_img2img=self.name == "img2img")
        with gr.Blocks(analytics_enabled=False) as blocks:
            task_id = gr.Label(visible=False)  # the real UI's dummy component; the page's JS fills in the task id
            self.parts["prompt"] = gr.Textbox(label="Prompt", elem_id=self.elem("prompt"), show_label=False, lines=3)
            self.parts["negative_prompt"] = gr.Textbox(
                label="Negative prompt", elem_id=self.elem("neg_prompt"), show_label=False, lines=3
            )
            self.parts["styles"] = gr.Dropdown(
                label="Styles", elem_id=self.elem("styles"), choices=list(shared.prompt_styles.styles), value=[], multiselect=True
            )
            with ResizeHandleRow(equal_height=False):
                with gr.Column(variant="compact", elem_id=self.elem("settings")):
                    self.runner.prepare_ui()
                    for category in ordered_ui_categories():
                        self._fill_category(category)
                self._wire_generate_button(task_id)
        self._register_paste_fields()
        return blocks

    def _fill_category(self, category: str) -> None:
        """The tab's own part of the category, then the scripts of that section (the scripts'
        accordions in one row with the tab's own)."""
        holder = gr.Row(elem_id=self.elem("accordions"), elem_classes="accordions") if category == "accordions" else nullcontext()
        with holder:
            getattr(self, f"_category_{category}", lambda: None)()
            self.runner.setup_ui_for_section(category)

    def _wire_generate_button(self, task_id: gr.Label) -> None:
        import modules.img2img
        import modules.txt2img

        generate = {"txt2img": modules.txt2img.txt2img, "img2img": modules.img2img.img2img}[self.name]
        with gr.Column(elem_id=self.elem("results")):
            button = gr.Button("Generate", elem_id=self.elem("generate"), variant="primary")
            outputs = [
                gr.Gallery(label="Output", elem_id=self.elem("gallery")),
                gr.Textbox(visible=False, elem_id=f"generation_info_{self.name}"),
                gr.HTML(elem_id=f"html_info_{self.name}"),
                gr.HTML(elem_id=f"html_log_{self.name}"),
            ]
        inputs = [task_id, *(self.parts[name] for name in self.ARGUMENTS), *self.script_inputs]
        button.click(fn=wrap_gradio_gpu_call(generate, extra_outputs=[None, "", ""]), inputs=inputs, outputs=outputs)

    def _batch_sliders(self) -> None:
        self.parts["batch_count"] = gr.Slider(label="Batch count", elem_id=self.elem("batch_count"), minimum=1, step=1, value=1)
        self.parts["batch_size"] = _slider("Batch size", self.elem("batch_size"), 1, 8, 1, 1)

    def _size_sliders(self) -> None:
        for name in ("width", "height"):
            self.parts[name] = _slider(name.capitalize(), self.elem(name), 64, 2048, 8, 512)

    def _dimensions(self, size_part) -> None:
        with FormRow():
            with gr.Column(elem_id=self.elem("column_size"), scale=4):
                size_part()
            if shared.opts.dimensions_and_batch_together:
                with gr.Column(elem_id=self.elem("column_batch")):
                    self._batch_sliders()

    def _category_batch(self) -> None:
        if not shared.opts.dimensions_and_batch_together:
            with FormRow(elem_id=self.elem("column_batch")):
                self._batch_sliders()

    def _category_override_settings(self) -> None:
        """ui.create_override_settings_dropdown: hidden until a paste puts overrides into it."""
        with FormRow(elem_id=self.elem("override_settings_row")):
            dropdown = gr.Dropdown([], label="Override settings", visible=False, elem_id=self.elem("override_settings"),
                                   multiselect=True)
        dropdown.change(fn=lambda chosen: gr.Dropdown.update(visible=bool(chosen)), inputs=[dropdown], outputs=[dropdown])
        self.parts["override_settings"] = dropdown

    def _category_scripts(self) -> None:
        with FormGroup(elem_id=self.elem("script_container")):
            self.script_inputs = self.runner.setup_ui()

    def _category_cfg(self) -> None:
        with gr.Row():
            self.parts["cfg_scale"] = _slider("CFG Scale", self.elem("cfg_scale"), 1.0, 30.0, 0.5, 7.0)

    def _common_paste_fields(self, api: bool) -> list[PasteField]:
        """The fields both tabs paste (txt2img's also name the API field they fill)."""
        labels = {"Prompt": "prompt", "Negative prompt": "negative_prompt", "CFG scale": "cfg_scale", "Size-1": "width",
                  "Size-2": "height", "Batch size": "batch_size", "Denoising strength": "denoising_strength"}
        fields = [PasteField(self.parts[name], label, api=name if api else None) for label, name in labels.items()]
        fields.append(PasteField(self.parts["styles"], _styles_from_infotext, api="styles" if api else None))
        return fields


class _Txt2ImgTab(_GenerationTab):
    name = "txt2img"
    ARGUMENTS = tuple(
        "prompt negative_prompt styles batch_count batch_size cfg_scale height width enable_hr denoising_strength hr_scale "
        "hr_upscaler hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler hr_prompt "
        "hr_negative_prompt override_settings".split()
    )

    def _category_dimensions(self) -> None:
        self._dimensions(self._size_sliders)

    def _category_accordions(self) -> None:
        """The "Hires. fix" InputAccordion: upscaler and steps, scale or target size, and the rows
        for a checkpoint/sampler/scheduler and prompts of its own, shown as the settings say."""
        parts = self.parts
        with InputAccordion(False, label="Hires. fix", elem_id="txt2img_hr") as parts["enable_hr"]:
            with FormRow(variant="compact"):
                upscalers = [*shared.latent_upscale_modes, *(upscaler.name for upscaler in shared.sd_upscalers)]
                parts["hr_upscaler"] = gr.Dropdown(label="Upscaler", elem_id="txt2img_hr_upscaler", choices=upscalers,
                                                   value=shared.latent_upscale_default_mode)
                parts["hr_second_pass_steps"] = _slider("Hires steps", "txt2img_hires_steps", 0, 150, 1, 0)
                parts["denoising_strength"] = _slider("Denoising strength", "txt2img_denoising_strength", 0.0, 1.0, 0.01, 0.7)
            with FormRow(variant="compact"):
                parts["hr_scale"] = _slider("Upscale by", "txt2img_hr_scale", 1.0, 4.0, 0.05, 2.0)
                for axis, label in (("x", "Resize width to"), ("y", "Resize height to")):
                    parts[f"hr_resize_{axis}"] = _slider(label, f"txt2img_hr_resize_{axis}", 0, 2048, 8, 0)
            with FormRow(variant="compact", visible=shared.opts.hires_fix_show_sampler) as self.hires_choices_row:
                for name, (label, elem_id, same, choices) in _hires_choices().items():
                    parts[name] = gr.Dropdown(label=label, elem_id=elem_id, choices=[same, *choices], value=same)
            with FormRow(variant="compact", visible=shared.opts.hires_fix_show_prompts) as self.hires_prompts_row:
                for name, label, elem_id in (("hr_prompt", "Hires prompt", "hires_prompt"),
                                             ("hr_negative_prompt", "Hires negative prompt", "hires_neg_prompt")):
                    parts[name] = gr.Textbox(label=label, elem_id=elem_id, show_label=False, lines=3)

    def _register_paste_fields(self) -> None:
        hires = {"Hires upscale": "hr_scale", "Hires upscaler": "hr_upscaler", "Hires steps": "hr_second_pass_steps",
                 "Hires resize-1": "hr_resize_x", "Hires resize-2": "hr_resize_y", "Hires checkpoint": "hr_checkpoint_name",
                 "Hires prompt": "hr_prompt", "Hires negative prompt": "hr_negative_prompt"}
        from_functions = {
            "enable_hr": _hires_was_used,
            "hr_sampler_name": sd_samplers.get_hr_sampler_from_infotext,
            "hr_scheduler": sd_samplers.get_hr_scheduler_from_infotext,
        }
        fields = self._common_paste_fields(api=True)
        fields += [PasteField(self.parts[name], label, api=name) for label, name in hires.items()]
        fields += [PasteField(self.parts[name], read, api=name) for name, read in from_functions.items()]
        fields += [PasteField(self.hires_choices_row, _show_hires_choices)]
        fields += [PasteField(self.hires_prompts_row, _show_hires_prompts)]
        fields += self.runner.infotext_fields
        infotext_utils.add_paste_fields("txt2img", None, fields, self.parts["override_settings"])


def _hires_choices() -> dict[str, tuple]:
    """The hires pass's own checkpoint, sampler and scheduler: (label, elem_id, "same" entry, choices)."""
    schedulers = [scheduler.label for scheduler in sd_schedulers.schedulers]
    return {
        "hr_checkpoint_name": ("Checkpoint", "hr_checkpoint", "Use same checkpoint", sd_models.checkpoint_tiles(use_short=True)),
        "hr_sampler_name": ("Hires sampling method", "hr_sampler", "Use same sampler", sd_samplers.visible_sampler_names()),
        "hr_scheduler": ("Hires schedule type", "hr_scheduler", "Use same scheduler", schedulers),
    }


def _hires_was_used(params: dict) -> bool:
    return "Denoising strength" in params and any(key in params for key in ("Hires upscale", "Hires upscaler", "Hires resize-1"))


_HIRES_SAME = {"Hires sampler": "Use same sampler", "Hires checkpoint": "Use same checkpoint",
               "Hires schedule type": "Use same scheduler"}


def _show_hires_choices(params: dict):
    """Reveal the hires checkpoint/sampler row when the infotext names something other than "same"."""
    differs = any(params.get(key, same) != same for key, same in _HIRES_SAME.items())
    return gr.update(visible=True) if differs else gr.update()


def _show_hires_prompts(params: dict):
    return gr.update(visible=True) if params.get("Hires prompt", "") or params.get("Hires negative prompt", "") else gr.update()


class _Img2ImgTab(_GenerationTab):
    name = "img2img"
    ARGUMENTS = tuple(
        "mode prompt negative_prompt styles init_img sketch init_img_with_mask inpaint_color_sketch inpaint_color_sketch_orig "
        "init_img_inpaint init_mask_inpaint mask_blur mask_alpha inpainting_fill batch_count batch_size cfg_scale "
        "image_cfg_scale denoising_strength selected_scale_tab height width scale_by resize_mode inpaint_full_res "
        "inpaint_full_res_padding inpainting_mask_invert batch_input_dir batch_output_dir batch_inpaint_mask_dir "
        "override_settings batch_use_png_info batch_png_info_props batch_png_info_dir batch_source_type batch_upload".split()
    )
    IMAGES = {
        "init_img": ("img2img", "Image for img2img", "img2img_image", "RGBA"),
        "sketch": ("Sketch", "Image for img2img", "img2img_sketch", "RGB"),
        "init_img_with_mask": ("Inpaint", "Image for inpainting with mask", "img2maskimg", "RGBA"),
        "inpaint_color_sketch": ("Inpaint sketch", "Color sketch inpainting", "inpaint_sketch", "RGB"),
        "init_img_inpaint": ("Inpaint upload", "Image for img2img", "img_inpaint_base", "RGB"),
        "init_mask_inpaint": ("Inpaint upload", "Mask", "img_inpaint_mask", "RGBA"),
    }
    """The image inputs of the mode tabs, by the generate function's names: (tab, label, elem_id, mode)."""
    BATCH_TAB = {"batch_input_dir": "", "batch_output_dir": "", "batch_inpaint_mask_dir": "", "batch_use_png_info": False,
                 "batch_png_info_props": [], "batch_png_info_dir": "", "batch_source_type": "upload", "batch_upload": []}

    def _category_image(self) -> None:
        parts = self.parts
        parts["mode"] = gr.Number(value=0, visible=False)  # the selected mode tab, which the page's JS sends
        with gr.Tabs(elem_id="mode_img2img"):
            for tab, images in groupby(self.IMAGES.items(), key=lambda item: item[1][0]):
                with gr.TabItem(tab):
                    for name, (_, label, elem_id, image_mode) in images:
                        parts[name] = gr.Image(label=label, elem_id=elem_id, show_label=False, source="upload",
                                               interactive=True, type="pil", image_mode=image_mode)
        parts["inpaint_color_sketch_orig"] = gr.State(None)
        for name, value in self.BATCH_TAB.items():
            parts[name] = gr.State(value)
        with FormRow():
            modes = ["Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)"]
            parts["resize_mode"] = _index_radio("Resize mode", "resize_mode", modes, modes[0])

    def _category_dimensions(self) -> None:
        def size_part():
            self.parts["selected_scale_tab"] = gr.Number(value=0, visible=False)
            with gr.Tabs(elem_id="img2img_tabs_resize"):
                with gr.Tab(label="Resize to", elem_id="img2img_tab_resize_to"):
                    self._size_sliders()
                with gr.Tab(label="Resize by", elem_id="img2img_tab_resize_by"):
                    self.parts["scale_by"] = _slider("Scale", "img2img_scale", 0.05, 4.0, 0.05, 1.0)

        self._dimensions(size_part)

    def _category_cfg(self) -> None:
        with gr.Row():
            self.parts["cfg_scale"] = _slider("CFG Scale", "img2img_cfg_scale", 1.0, 30.0, 0.5, 7.0)
            self.parts["image_cfg_scale"] = _slider("Image CFG Scale", "img2img_image_cfg_scale", 0, 3, 0.05, 1.5, visible=False)

    def _category_denoising(self) -> None:
        self.parts["denoising_strength"] = _slider("Denoising strength", "img2img_denoising_strength", 0.0, 1.0, 0.01, 0.75)

    def _category_inpaint(self) -> None:
        """The inpainting controls (the real UI shows them on the inpaint mode tabs only)."""
        parts = self.parts
        with FormGroup(elem_id="inpaint_controls", visible=False):
            parts["mask_blur"] = _slider("Mask blur", "img2img_mask_blur", 0, 64, 1, 4)
            parts["mask_alpha"] = gr.Slider(label="Mask transparency", visible=False, elem_id="img2img_mask_alpha")
            radios = {
                "inpainting_mask_invert": ("Mask mode", "img2img_mask_mode", ["Inpaint masked", "Inpaint not masked"], 0),
                "inpainting_fill": ("Masked content", "img2img_inpainting_fill", ["fill", "original", "latent noise",
                                                                                   "latent nothing"], 1),
                "inpaint_full_res": ("Inpaint area", "img2img_inpaint_full_res", ["Whole picture", "Only masked"], 0),
            }
            for name, (label, elem_id, choices, default) in radios.items():
                parts[name] = _index_radio(label, elem_id, choices, choices[default])
            parts["inpaint_full_res_padding"] = _slider("Only masked padding, pixels", "img2img_inpaint_full_res_padding",
                                                        0, 256, 4, 32)

    def _register_paste_fields(self) -> None:
        labels = {"Image CFG scale": "image_cfg_scale", "Mask blur": "mask_blur", "Mask mode": "inpainting_mask_invert",
                  "Masked content": "inpainting_fill", "Inpaint area": "inpaint_full_res",
                  "Masked area padding": "inpaint_full_res_padding"}
        fields = self._common_paste_fields(api=False) + [PasteField(self.parts[name], label) for label, name in labels.items()]
        fields += self.runner.infotext_fields
        for tab, image in (("img2img", "init_img"), ("inpaint", "init_img_with_mask")):
            infotext_utils.add_paste_fields(tab, self.parts[image], fields, self.parts["override_settings"])


_COMPONENT_FOR_DEFAULT = {str: gr.Textbox, int: gr.Number, bool: gr.Checkbox}


def _setting_component(key: str):
    """ui_settings.create_setting_component: the option's own component class, else one chosen by
    the type of its default (any other type is an error, as in the real page); its current value,
    its component arguments, elem_id ``setting_<key>``."""
    info = shared.opts.data_labels[key]
    component = info.component or _COMPONENT_FOR_DEFAULT.get(type(info.default))
    if component is None:
        raise Exception(f"bad options item type: {type(info.default)} for key {key}")
    arguments = info.component_args() if callable(info.component_args) else info.component_args
    value = shared.opts.data.get(key, info.default)
    return component(label=info.label, value=value, elem_id=f"setting_{key}", **(arguments or {}))


def _settings_page() -> gr.Blocks:
    """ui_settings.UiSettings.create_ui for the options extensions added: one tab per section, an
    option whose section has no id left out."""
    added = [(key, info.section) for key, info in shared.opts.data_labels.items()
             if key not in builtin_option_keys and info.section[0] is not None]
    components = {}
    with gr.Blocks(analytics_enabled=False) as page, gr.Tabs(elem_id="settings"):
        for section, options in groupby(added, key=lambda pair: pair[1]):
            with gr.TabItem(label=section[1], elem_id=f"settings_{section[0]}"), gr.Column(variant="compact"):
                for key, _ in options:
                    components[key] = _setting_component(key)
    shared.settings_components = components
    return page


def create_ui() -> gr.Blocks:
    """ui.create_ui: paste fields reset and the settings registered (``on_ui_settings``), the
    txt2img tab, then the img2img tab (each with ``scripts.scripts_current`` set to its runner, so
    component callbacks know the tab), the settings page, the extensions' tabs, all in one Blocks."""
    global txt2img_interface, img2img_interface
    infotext_utils.reset()
    script_callbacks.ui_settings_callback()
    txt2img_interface = _Txt2ImgTab().build()
    img2img_interface = _Img2ImgTab().build()
    scripts.scripts_current = None

    settings = _settings_page()
    pages = [(txt2img_interface, "txt2img", "txt2img"), (img2img_interface, "img2img", "img2img")]
    pages += script_callbacks.ui_tabs_callback()
    pages.append((settings, "Settings", "settings"))
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo, gr.Tabs(elem_id="tabs"):
        for page, label, page_id in pages:
            with gr.TabItem(label, id=page_id, elem_id=f"tab_{page_id}"):
                page.render()
    return demo
