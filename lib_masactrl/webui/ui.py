"""The MasaCtrl accordion. Labels, defaults, element ids and the order of the controls (which
is the API's positional order) come from the field table (:mod:`lib_masactrl.fields`); tooltips
from ``javascript/masactrl.js``, keyed by the same field names."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import gradio as gr

from modules import shared
from modules.ui_components import InputAccordion

from ..fields import AUTO_LAYER, FIELD_BY_NAME, FIELDS, MAX_INVERSION_CFG, MAX_LAYERS, MAX_STEPS, ControlNetScope, MaskMode
from ..layers import LayerMap
from ..settings import Mode, default_start_layer
from . import controlnet, model

ElemId = Callable[[str], str]


class Accordion:
    """The controls of one tab's accordion, by field name."""

    def __init__(self, elem_id: ElemId, is_img2img: bool) -> None:
        self.elem_id = elem_id
        self.is_img2img = is_img2img
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
    ui = Accordion(elem_id, is_img2img)
    source_placeholder = (
        "What the init image shows, used to invert and reconstruct it; empty: no prompt (the paper)" if is_img2img
        else "Prompt of the source images (first half of the batch); empty: the main prompt"
    )
    with InputAccordion(False, label=FIELD_BY_NAME["enabled"].label, elem_id=elem_id("enabled")) as enabled:
        ui.made["enabled"] = enabled
        ui.control(gr.Textbox, "source_prompt", lines=2, placeholder=source_placeholder)
        with gr.Row():
            ui.choice("mode", Mode)
            ui.control(gr.Checkbox, "hires")
        with gr.Row():
            ui.control(gr.Slider, "start_step", minimum=0, maximum=MAX_STEPS - 1, step=1)
            ui.control(gr.Slider, "end_step", minimum=1, maximum=MAX_STEPS, step=1)
        with gr.Row():
            ui.control(gr.Slider, "start_layer", minimum=AUTO_LAYER, maximum=MAX_LAYERS - 1, step=1)
            ui.control(gr.Slider, "end_layer", minimum=1, maximum=MAX_LAYERS, step=1)
        with gr.Row(visible=controlnet.installed()):
            scope = ui.choice("controlnet", ControlNetScope)
            units = ui.control(gr.Textbox, "controlnet_units", placeholder="source, target", visible=False)
        with gr.Row(visible=is_img2img):
            ui.control(gr.Checkbox, "invert")
            ui.control(gr.Checkbox, "show_reconstruction")
            ui.control(gr.Slider, "inversion_cfg", minimum=1.0, maximum=MAX_INVERSION_CFG, step=0.5)
        with gr.Accordion(label="Masks", open=False):
            with gr.Row():
                ui.choice("mask_mode", MaskMode)
                ui.control(gr.Checkbox, "show_masks")
            with gr.Row():
                ui.control(gr.Textbox, "mask_words", placeholder="corgi")
                ui.control(gr.Textbox, "mask_target_words", placeholder="empty: the source subject words")
                ui.control(gr.Slider, "mask_threshold", minimum=0.0, maximum=1.0, step=0.01)
            with gr.Row():
                ui.control(gr.Image, "source_mask", type="pil", image_mode="L", tool="sketch")
                ui.control(gr.Image, "target_mask", type="pil", image_mode="L", tool="sketch")
        scope.change(
            fn=lambda value: gr.update(visible=value == ControlNetScope.PER_UNIT.value),
            inputs=[scope], outputs=[units], show_progress=False,
        )
    enabled.change(
        fn=layer_ranges, inputs=[], outputs=[ui.made["start_layer"], ui.made["end_layer"]], show_progress=False
    )
    return ui


def layer_ranges() -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Updates for the layer sliders: the range of the loaded model (16 layers on SD1.x/SD2.x,
    70 on SDXL) and what "auto" resolves to on it."""
    if shared.sd_model is None:
        return gr.update(), gr.update()
    layer_map = LayerMap.from_unet(model.unet_of(shared.sd_model))
    count = len(layer_map)
    start = gr.update(
        maximum=count - 1,
        info=f"{layer_map.family}: layers 0-{count - 1}; -1 = its default, {default_start_layer(count)}",
    )
    end = gr.update(info=f"{count} or more = through the last layer")
    return start, end
