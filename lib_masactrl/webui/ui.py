"""The MasaCtrl accordion. Labels, defaults, element ids and the order of the controls (which
is the API's positional order) come from the field table (:mod:`lib_masactrl.fields`); tooltips
from ``javascript/masactrl.js``, keyed by the same field names.

Controls show only where they act: the hires-fix switch on txt2img, the inversion controls on
img2img, the per-unit list with *per unit*, and each mask control with the mask mode that uses it.
Hidden controls still send their values, so the API's positional order is the same everywhere.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import gradio as gr

from modules import shared
from modules.ui_components import InputAccordion

from ..fields import (
    AUTO_LAYER,
    FIELD_BY_NAME,
    FIELDS,
    MAX_CONTROLNET_UNITS,
    MAX_FPS,
    MAX_INVERSION_CFG,
    MAX_LAYERS,
    MAX_STEPS,
    Animation,
    ControlNetScope,
    MaskMode,
)
from ..layers import LayerMap
from ..pairing import Layout
from ..settings import Mode, default_start_layer
from . import controlnet, model

ElemId = Callable[[str], str]

SOURCE_PROMPT_PLACEHOLDERS = {
    "inverting": "What the init image shows, used to invert and reconstruct it; empty: no prompt (the paper)",
    "not inverting": "Prompt of the source images (first half of the batch); empty: the main prompt",
}
"""txt2img's source prompt reads as img2img's without inversion."""
REFRESH_LAYERS = "refresh_layers"
"""Element id (after the script's prefix) of the hidden button that javascript/masactrl.js clicks
when the loaded checkpoint changes, so that the layer sliders follow the model."""


class Accordion:
    """The controls of one tab's accordion, by field name."""

    def __init__(self, elem_id: ElemId) -> None:
        self.elem_id = elem_id
        self.made: Dict[str, Any] = {}

    def control(self, kind: Any, name: str, **options: Any) -> Any:
        """One control: label, default and element id come from the field table."""
        field = FIELD_BY_NAME[name]
        options.setdefault("value", field.default)
        self.made[name] = kind(label=field.label, elem_id=self.elem_id(name), **options)
        return self.made[name]

    def choice(self, name: str, values: Any) -> Any:
        return self.control(gr.Radio, name, choices=[value.value for value in values])

    @property
    def ordered(self) -> List[Any]:
        """The controls in the field table's order: what ``ui()`` returns."""
        return [self.made[field.name] for field in FIELDS]

    @property
    def infotext_fields(self) -> List[Tuple[Any, str]]:
        return [(self.made[field.name], field.infotext) for field in FIELDS if field.infotext]


def build(elem_id: ElemId, is_img2img: bool) -> Accordion:
    """Build the accordion inside the script's block; ``elem_id`` is the script's own."""
    ui = Accordion(elem_id)
    start_range, end_range = _layer_options(shared.sd_model)
    with InputAccordion(False, label=FIELD_BY_NAME["enabled"].label, elem_id=elem_id("enabled")) as enabled:
        ui.made["enabled"] = enabled
        source_prompt = ui.control(
            gr.Textbox, "source_prompt", lines=2,
            placeholder=source_prompt_placeholder(is_img2img),
        )
        with gr.Row():
            ui.choice("mode", Mode)
            ui.control(gr.Slider, "strength", minimum=0.0, maximum=1.0, step=0.05)
            ui.control(gr.Checkbox, "hires", visible=not is_img2img)
        with gr.Row():
            ui.control(gr.Slider, "start_step", minimum=0, maximum=MAX_STEPS - 1, step=1)
            ui.control(gr.Slider, "end_step", minimum=1, maximum=MAX_STEPS, step=1)
        with gr.Row():
            start_layer = ui.control(gr.Slider, "start_layer", minimum=AUTO_LAYER, step=1, **start_range)
            end_layer = ui.control(gr.Slider, "end_layer", minimum=1, maximum=MAX_LAYERS, step=1, **end_range)
        with gr.Row(visible=controlnet.installed()):
            scope = ui.choice("controlnet", ControlNetScope)
            units = ui.control(gr.Textbox, "controlnet_units", placeholder="source, target", visible=False)
        with gr.Row(visible=is_img2img):
            invert = ui.control(gr.Checkbox, "invert")
            ui.control(gr.Checkbox, "follow_inversion")
            ui.control(gr.Checkbox, "show_reconstruction")
            ui.control(gr.Slider, "inversion_cfg", minimum=1.0, maximum=MAX_INVERSION_CFG, step=0.5)
        with gr.Accordion(label="Masks", open=False):
            shown = mask_visibility(FIELD_BY_NAME["mask_mode"].default)
            with gr.Row():
                mask_mode = ui.choice("mask_mode", MaskMode)
                ui.control(gr.Checkbox, "show_masks", visible=shown["show_masks"]["visible"])
            with gr.Row(visible=shown["words"]["visible"]) as words:
                ui.control(gr.Textbox, "mask_words", placeholder="corgi")
                ui.control(gr.Textbox, "mask_target_words", placeholder="empty: the source subject words")
                ui.control(gr.Slider, "mask_threshold", minimum=0.0, maximum=1.0, step=0.01)
            with gr.Row(visible=shown["uploads"]["visible"]) as uploads:
                ui.control(gr.Image, "source_mask", type="pil", image_mode="L", tool="sketch")
                ui.control(gr.Image, "target_mask", type="pil", image_mode="L", tool="sketch")
        with gr.Accordion(label="Layout and sequences", open=False):
            with gr.Row():
                layout = ui.choice("layout", Layout)
                every_source = ui.control(gr.Checkbox, "show_every_source", visible=False)
            ui.control(gr.Textbox, "target_prompts", lines=3,
                       placeholder="One prompt per target, in order (or one for all); empty: the main prompt")
            with gr.Row(visible=False) as animation_row:
                ui.choice("animation", Animation)
                ui.control(gr.Slider, "fps", minimum=1, maximum=MAX_FPS, step=1)
            with gr.Row(visible=controlnet.installed()):
                ui.control(gr.File, "control_maps", file_count="multiple", file_types=["image"])
                with gr.Column():
                    ui.control(gr.Textbox, "control_maps_folder", placeholder="a folder of map images, in name order")
                    ui.control(gr.Slider, "control_maps_unit", minimum=1, maximum=MAX_CONTROLNET_UNITS, step=1)
        refresh = gr.Button(visible=False, elem_id=elem_id(REFRESH_LAYERS))
    scope.change(
        fn=lambda value: gr.update(visible=value == ControlNetScope.PER_UNIT.value),
        inputs=[scope], outputs=[units], show_progress=False,
    )
    mask_mode.change(
        fn=lambda value: tuple(mask_visibility(value).values()),
        inputs=[mask_mode], outputs=[ui.made["show_masks"], words, uploads], show_progress=False,
    )
    layout.change(
        fn=lambda value: (gr.update(visible=value == Layout.ONE_SOURCE.value),) * 2,
        inputs=[layout], outputs=[every_source, animation_row], show_progress=False,
    )
    if is_img2img:
        invert.change(
            fn=lambda inverting: gr.update(placeholder=source_prompt_placeholder(inverting)),
            inputs=[invert], outputs=[source_prompt], show_progress=False,
        )
    for event in (enabled.change, refresh.click):
        event(fn=layer_ranges, inputs=[start_layer], outputs=[start_layer, end_layer], show_progress=False)
    return ui


def source_prompt_placeholder(inverting: bool) -> str:
    """img2img: an empty source prompt inverts without a prompt, or means the main prompt when the
    init image is not inverted (the sources are then ordinary img2img rows)."""
    return SOURCE_PROMPT_PLACEHOLDERS["inverting" if inverting else "not inverting"]


def mask_visibility(mode: str) -> Dict[str, Dict[str, Any]]:
    """Updates for the controls that only one mask mode uses: "Show masks" (every mode but none),
    the subject-word row and the mask-upload row."""
    return {
        "show_masks": gr.update(visible=mode != MaskMode.NONE.value),
        "words": gr.update(visible=mode == MaskMode.WORDS.value),
        "uploads": gr.update(visible=mode == MaskMode.UPLOADED.value),
    }


def _layer_options(loaded: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Range and hint of the layer sliders for the loaded model; before any model is loaded, the
    range every supported model fits in."""
    if loaded is None:
        return (
            {"maximum": MAX_LAYERS - 1, "info": "-1 = the loaded model's default"},
            {"info": "values past the last layer = through the last layer"},
        )
    layer_map = LayerMap.from_unet(model.unet_of(loaded))
    count = len(layer_map)
    return (
        {"maximum": count - 1, "info": f"{layer_map.family}: layers 0-{count - 1}; -1 = its default, "
                                        f"{default_start_layer(count)}"},
        {"info": f"{count} or more = through the last layer"},
    )


def layer_ranges(start_layer: int = AUTO_LAYER) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Updates for the layer sliders: the range of the loaded model (16 layers on SD1.x/SD2.x,
    70 on SDXL) and what "auto" resolves to on it. A start layer past the new model's last layer
    moves to that last layer."""
    if shared.sd_model is None:
        return gr.update(), gr.update()
    start, end = _layer_options(shared.sd_model)
    if start_layer is not None and start_layer > start["maximum"]:
        start["value"] = start["maximum"]
    return gr.update(**start), gr.update(**end)
