"""The MasaCtrl accordion. Labels, defaults, element ids and the order of the controls (which
is the API's positional order) come from the field table (:mod:`lib_masactrl.fields`); tooltips
from ``javascript/masactrl.js``, keyed by the same field names.

Controls show only where they act: the hires-fix switch on txt2img, the inversion controls on
img2img while the init image is inverted, the per-unit list with *per unit*, each mask control
with the mask mode that uses it, the sequence controls with the one-source layout, the frame rate
with an animation. Hidden controls still send their values, so the API's positional order is the
same everywhere. Building the accordion never loads a model (see :mod:`.model`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import gradio as gr

from modules import shared
from modules.ui_components import InputAccordion

from ..fields import (
    AUTO_LAYER,
    AUTO_STEP,
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
from . import controlnet, infotext, inversion, model

ElemId = Callable[[str], str]

MASK_DRAWING: Dict[str, Any] = {"tool": "sketch"} if int(gr.__version__.split(".")[0]) < 4 else {}
"""gradio 3 (A1111) lets the user draw a mask on the uploaded image; gradio 4 (Forge) has no sketch
tool on ``gr.Image``, so there a mask is uploaded as an image."""

REFRESH_LAYERS = "refresh_layers"
"""Element id (after the script's prefix) of the hidden button that javascript/masactrl.js clicks
when the loaded checkpoint changes, so that the layer sliders follow the model."""

SOURCE_PROMPT_PLACEHOLDERS = {
    ("inverting", Layout.PAIRS.value): "What the init image shows, used to invert and reconstruct it; empty: no prompt",
    ("inverting", Layout.ONE_SOURCE.value): "What the init image shows, used to invert and reconstruct it; empty: no prompt",
    ("generating", Layout.PAIRS.value): "Prompt of the sources (the first half of the batch); empty: the main prompt",
    ("generating", Layout.ONE_SOURCE.value): "Prompt of the source (image 1 of every batch); empty: the main prompt",
}
"""What the source prompt means: with the init image inverted (img2img), or generating the sources
(txt2img, and img2img without inversion), in each layout."""


class Accordion:
    """The controls of one tab's accordion, by field name, and what pasting parameters updates."""

    def __init__(self, elem_id: ElemId) -> None:
        self.elem_id = elem_id
        self.made: Dict[str, Any] = {}
        self.paste_extras: List[Tuple[Any, Callable[[Dict[str, Any]], Any]]] = []
        """Components pasting updates beyond the fields' values (the sub-accordions to open)."""
        self.enabled_on_paste: Callable[[Dict[str, Any]], Any] | None = None
        self.fields: Tuple[str, ...] = tuple(field.name for field in FIELDS)
        """The fields this accordion has controls for (all of them, unless MasaCtrl cannot run)."""

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
        return [self.made[name] for name in self.fields]

    @property
    def infotext_fields(self) -> List[Tuple[Any, Any]]:
        """What pasting parameters sets: every field with an infotext key (the switch by whether the
        parameters are this tab's, see :func:`~.infotext.enabled_on_paste`), then the extras."""
        fields: List[Tuple[Any, Any]] = []
        for field in FIELDS:
            if not field.infotext or field.name not in self.made:
                continue
            key = self.enabled_on_paste if field.name == "enabled" and self.enabled_on_paste else field.infotext
            fields.append((self.made[field.name], key))
        return fields + self.paste_extras


def build_unsupported(elem_id: ElemId, problem: str) -> Accordion:
    """In a WebUI MasaCtrl cannot drive: the switch alone, with the reason inside. Only plain gradio
    is used, so that building it cannot fail there; pasting never switches it on."""
    ui = Accordion(elem_id)
    with InputAccordion(False, label=FIELD_BY_NAME["enabled"].label, elem_id=elem_id("enabled")) as enabled:
        gr.Markdown(f"{problem}.")
    ui.made["enabled"] = enabled
    ui.enabled_on_paste = lambda params: gr.update(value=False)
    ui.fields = ("enabled",)
    return ui


def build(elem_id: ElemId, is_img2img: bool) -> Accordion:
    """Build the accordion inside the script's block; ``elem_id`` is the script's own."""
    ui = Accordion(elem_id)
    ui.enabled_on_paste = lambda params: infotext.enabled_on_paste(params, is_img2img)
    start_range, end_range = _layer_options(model.loaded_model())
    with InputAccordion(False, label=FIELD_BY_NAME["enabled"].label, elem_id=elem_id("enabled")) as enabled:
        ui.made["enabled"] = enabled
        source_prompt = ui.control(
            gr.Textbox, "source_prompt", lines=2,
            placeholder=source_prompt_placeholder(Layout.PAIRS.value, inverting=is_img2img),
        )
        with gr.Row():
            ui.choice("mode", Mode)
            ui.control(gr.Slider, "strength", minimum=0.0, maximum=1.0, step=0.05)
            ui.control(gr.Checkbox, "hires", visible=not is_img2img)
        with gr.Row():
            ui.control(gr.Slider, "start_step", minimum=AUTO_STEP, maximum=MAX_STEPS - 1, step=1,
                       info="-1 = about 8% of the steps")
            ui.control(gr.Slider, "end_step", minimum=1, maximum=MAX_STEPS, step=1, info="past the last = to the end")
        with gr.Row():
            start_layer = ui.control(gr.Slider, "start_layer", minimum=AUTO_LAYER, step=1, **start_range)
            end_layer = ui.control(gr.Slider, "end_layer", minimum=1, step=1, **end_range)
        with gr.Row(visible=controlnet.installed()):
            scope = ui.choice("controlnet", ControlNetScope)
            units = ui.control(gr.Textbox, "controlnet_units", placeholder="source, target", visible=False)
        with gr.Row(visible=is_img2img):
            invert = ui.control(gr.Checkbox, "invert")
            inverted = [
                ui.control(gr.Checkbox, "follow_inversion"),
                ui.control(gr.Checkbox, "show_reconstruction"),
                ui.control(gr.Slider, "inversion_cfg", minimum=1.0, maximum=MAX_INVERSION_CFG, step=0.5),
            ]
            clear_cache = gr.Button("Forget cached inversions", size="sm", elem_id=elem_id("clear_inversions"))
        with gr.Accordion(label="Masks", open=False) as masks_section:
            shown = mask_visibility(FIELD_BY_NAME["mask_mode"].default)
            with gr.Row():
                mask_mode = ui.choice("mask_mode", MaskMode)
                ui.control(gr.Checkbox, "show_masks", visible=shown["show_masks"]["visible"])
            with gr.Row(visible=shown["words"]["visible"]) as words:
                ui.control(gr.Textbox, "mask_words", placeholder="corgi")
                ui.control(gr.Textbox, "mask_target_words", placeholder="empty: the source's")
                ui.control(gr.Slider, "mask_threshold", minimum=0.0, maximum=1.0, step=0.01)
            with gr.Row(visible=shown["uploads"]["visible"]) as uploads:
                ui.control(gr.Image, "source_mask", type="pil", image_mode="L", **MASK_DRAWING)
                ui.control(gr.Image, "target_mask", type="pil", image_mode="L", **MASK_DRAWING)
        with gr.Accordion(label="Layout and sequences", open=False) as sequence_section:
            with gr.Row():
                layout = ui.choice("layout", Layout)
                every_source = ui.control(gr.Checkbox, "show_every_source", visible=False)
            ui.control(gr.Textbox, "target_prompts", lines=3,
                       placeholder="One prompt per target, in order (or one for all); empty: the main prompt")
            with gr.Row(visible=False) as animation_row:
                animation = ui.choice("animation", Animation)
                fps = ui.control(gr.Slider, "fps", minimum=1, maximum=MAX_FPS, step=1)
            with gr.Row(visible=False) as maps_row:
                ui.control(gr.File, "control_maps", file_count="multiple", file_types=["image"])
                with gr.Column():
                    ui.control(gr.Textbox, "control_maps_folder", placeholder="a folder of map images, in name order",
                               visible=not shared.cmd_opts.hide_ui_dir_config)
                    ui.control(gr.Slider, "control_maps_unit", minimum=1, maximum=MAX_CONTROLNET_UNITS, step=1)
        refresh = gr.Button(visible=False, elem_id=elem_id(REFRESH_LAYERS))
    ui.paste_extras = [(section, infotext.opens_on_paste(names)) for section, names in (
        (masks_section, infotext.MASK_FIELDS), (sequence_section, infotext.SEQUENCE_FIELDS))]

    def quiet(event: Any, fn: Callable[..., Any], inputs: List[Any], outputs: List[Any]) -> None:
        event(fn=fn, inputs=inputs, outputs=outputs, show_progress=False)

    quiet(scope.change, lambda value: gr.update(visible=value == ControlNetScope.PER_UNIT.value), [scope], [units])
    quiet(mask_mode.change, lambda value: tuple(mask_visibility(value).values()), [mask_mode],
          [ui.made["show_masks"], words, uploads])
    quiet(layout.change, lambda value, kind, inverting: sequence_visibility(value, kind, inverting, is_img2img),
          [layout, animation, invert], [every_source, animation_row, maps_row, source_prompt])
    quiet(animation.change, lambda kind: gr.update(visible=kind != Animation.NONE.value), [animation], [fps])
    quiet(invert.change, lambda inverting, value: inversion_visibility(inverting, value, is_img2img), [invert, layout],
          [*inverted, source_prompt])
    quiet(clear_cache.click, forget_inversions, [], [])
    for event in (enabled.change, refresh.click):
        quiet(event, layer_ranges, [start_layer, end_layer], [start_layer, end_layer])
    return ui


def source_prompt_placeholder(layout: str, inverting: bool) -> str:
    """What an empty source prompt means in this layout, with or without inverting the init image."""
    return SOURCE_PROMPT_PLACEHOLDERS[("inverting" if inverting else "generating", layout)]


def mask_visibility(mode: str) -> Dict[str, Dict[str, Any]]:
    """Updates for the controls that only one mask mode uses: "Show masks" (every mode but none),
    the subject-word row and the mask-upload row."""
    return {
        "show_masks": gr.update(visible=mode != MaskMode.NONE.value),
        "words": gr.update(visible=mode == MaskMode.WORDS.value),
        "uploads": gr.update(visible=mode == MaskMode.UPLOADED.value),
    }


def sequence_visibility(layout: str, animation: str, inverting: bool, is_img2img: bool) -> Tuple[Dict[str, Any], ...]:
    """Updates when the layout changes: "Show the source of every batch", the animation row and the
    control maps (with ControlNet) show with one source; the source prompt's placeholder follows."""
    one_source = layout == Layout.ONE_SOURCE.value
    return (
        gr.update(visible=one_source),
        gr.update(visible=one_source),
        gr.update(visible=one_source and controlnet.installed()),
        gr.update(placeholder=source_prompt_placeholder(layout, inverting and is_img2img)),
    )


def inversion_visibility(inverting: bool, layout: str, is_img2img: bool) -> Tuple[Dict[str, Any], ...]:
    """Updates when "Invert the init image" changes: the controls that only an inversion uses show
    with it, and the source prompt's placeholder says what it means now."""
    shown = gr.update(visible=inverting)
    return shown, shown, shown, gr.update(placeholder=source_prompt_placeholder(layout, inverting and is_img2img))


def forget_inversions() -> None:
    """The button beside the inversion controls: empty the inversion cache now."""
    count = inversion.CACHE.clear()
    gr.Info(f"MasaCtrl forgot {count} cached inversion{'s' * (count != 1)}")


def _layer_options(loaded: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Range and hint of the layer sliders for the loaded model; before any model is loaded, or for a
    model MasaCtrl cannot drive, the range every supported model fits in. The two hints are about
    as long, so that the sliders stand at one height."""
    unet = model.unet_or_none(loaded)
    if unet is None:
        return (
            {"maximum": MAX_LAYERS - 1, "info": "-1 = the loaded model's default"},
            {"maximum": MAX_LAYERS, "info": "past the last = through the last"},
        )
    layer_map = LayerMap.from_unet(unet)
    count = len(layer_map)
    return (
        {"maximum": count - 1, "info": f"{layer_map.family}: layers 0-{count - 1}; -1 = {default_start_layer(count)}"},
        {"maximum": count, "info": f"{count} = through the last layer"},
    )


def layer_ranges(start_layer: int = AUTO_LAYER, end_layer: int = MAX_LAYERS) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Updates for the layer sliders: the range of the loaded model (16 layers on SD1.x/SD2.x, 70 on
    SDXL) and what "auto" resolves to on it. A start layer past the new model's last layer moves to
    that last layer; an end layer past it, which means "through the last", to its layer count. No
    model is loaded for this: without one the sliders keep their range."""
    loaded = model.loaded_model()
    if model.unet_or_none(loaded) is None:
        return gr.update(), gr.update()
    start, end = _layer_options(loaded)
    if start_layer is not None and start_layer > start["maximum"]:
        start["value"] = start["maximum"]
    if end_layer is not None and end_layer > end["maximum"]:
        end["value"] = end["maximum"]
    return gr.update(**start), gr.update(**end)
