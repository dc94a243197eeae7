"""The accordion's wiring in the stand-in WebUI, read from the gradio Blocks the tab was built in:
which controls show where, and what each event handler updates."""

from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tab_blocks(is_img2img):
    from modules import ui

    return ui.img2img_interface if is_img2img else ui.txt2img_interface


def control(host, name, is_img2img=False):
    from lib_masactrl.fields import FIELD_NAMES

    return host.script("MasaCtrl", is_img2img).controls[FIELD_NAMES.index(name)]


def handlers(blocks, component, trigger):
    """The functions gradio runs when ``trigger`` fires on ``component``, with their outputs."""
    by_id = {block._id: block for block in blocks.blocks.values()}
    return [
        (function.fn, [by_id[i] for i in dependency["outputs"]])
        for dependency, function in zip(blocks.dependencies, blocks.fns)
        if component._id in dependency["targets"] and dependency["trigger"] == trigger
    ]


def container(component, kind):
    import gradio as gr

    block = component.parent
    while not isinstance(block, getattr(gr, kind)):
        block = block.parent
    return block


def test_the_hires_switch_shows_on_txt2img_only(host):
    assert control(host, "hires").visible is True
    assert control(host, "hires", is_img2img=True).visible is False


@pytest.mark.parametrize("is_img2img", [False, True], ids=["txt2img", "img2img"])
def test_each_mask_control_shows_with_the_mask_mode_that_uses_it(host, is_img2img):
    mode = control(host, "mask_mode", is_img2img)
    words_row = container(control(host, "mask_words", is_img2img), "Row")
    uploads_row = container(control(host, "source_mask", is_img2img), "Row")
    show_masks = control(host, "show_masks", is_img2img)
    assert container(control(host, "mask_threshold", is_img2img), "Row") is words_row
    assert container(control(host, "target_mask", is_img2img), "Row") is uploads_row
    assert (show_masks.visible, words_row.visible, uploads_row.visible) == (False, False, False)

    [(update, outputs)] = handlers(tab_blocks(is_img2img), mode, "change")
    assert outputs == [show_masks, words_row, uploads_row]
    values = [choice[0] if isinstance(choice, tuple) else choice for choice in mode.choices]
    shown = {value: [part["visible"] for part in update(value)] for value in values}
    assert shown == {
        "none": [False, False, False],
        "subject words": [True, True, False],
        "uploaded masks": [True, False, True],
    }


def test_the_source_prompt_says_what_an_empty_one_means_on_each_tab(host):
    from lib_masactrl.webui.ui import SOURCE_PROMPT_PLACEHOLDERS

    assert "empty: the main prompt" in control(host, "source_prompt").placeholder
    source_prompt = control(host, "source_prompt", is_img2img=True)
    assert source_prompt.placeholder == SOURCE_PROMPT_PLACEHOLDERS[("inverting", "pairs")]
    assert "empty: no prompt" in source_prompt.placeholder
    invert = control(host, "invert", is_img2img=True)
    [(update, outputs)] = handlers(tab_blocks(True), invert, "change")
    assert outputs[-1] is source_prompt
    assert "empty: the main prompt" in update(False, "pairs")[-1]["placeholder"]
    assert update(True, "pairs")[-1]["placeholder"] == source_prompt.placeholder
    # the tooltip (javascript/masactrl.js) tells both cases on img2img
    script = (ROOT / "javascript" / "masactrl.js").read_text()
    img2img_tooltips = script[script.index("const img2imgTooltips"):]
    assert "With 'Invert the init image' on" in img2img_tooltips
    assert "With it off: empty means the main prompt" in img2img_tooltips


@pytest.mark.parametrize("is_img2img", [False, True], ids=["txt2img", "img2img"])
def test_the_layer_sliders_follow_a_checkpoint_change(host, is_img2img):
    from tiny_unets import sdxl_unet

    start, end = control(host, "start_layer", is_img2img), control(host, "end_layer", is_img2img)
    # built with the loaded SD1.5 model's range, before anyone switched MasaCtrl on
    assert start.maximum == 15 and "SD1.x model: layers 0-15" in start.info and end.maximum == 16
    blocks = tab_blocks(is_img2img)
    refresh_id = f"script_{'img2img' if is_img2img else 'txt2img'}_masactrl_refresh_layers"
    refresh = next(block for block in blocks.blocks.values() if getattr(block, "elem_id", None) == refresh_id)
    assert refresh.visible is False
    script = (ROOT / "javascript" / "masactrl.js").read_text()
    assert "script_${tab}_masactrl_refresh_layers" in script and "onOptionsChanged(followCheckpoint)" in script

    enabled = control(host, "enabled", is_img2img)
    for trigger_component, trigger in ((refresh, "click"), (enabled, "change")):
        # (InputAccordion has a change handler of its own)
        [update] = [fn for fn, outputs in handlers(blocks, trigger_component, trigger) if outputs == [start, end]]
    host.switch_model(sdxl_unet(0))
    start_update, end_update = update(44, 16)
    assert start_update["maximum"] == 69 and "SDXL model: layers 0-69; -1 = 44" in start_update["info"]
    assert "value" not in start_update and "70 = through the last layer" in end_update["info"]
    assert end_update["maximum"] == 70 and "value" not in end_update


def test_a_start_layer_past_the_new_models_last_layer_moves_to_it(host):
    from lib_masactrl.webui.ui import layer_ranges

    start, _ = layer_ranges(44)
    assert start["maximum"] == 15 and start["value"] == 15
    start, _ = layer_ranges(-1)
    assert "value" not in start


def test_before_a_model_is_loaded_the_sliders_take_every_models_range():
    from lib_masactrl.fields import MAX_LAYERS
    from lib_masactrl.webui.ui import _layer_options

    start, end = _layer_options(None)
    assert start["maximum"] == MAX_LAYERS - 1 and "loaded model" in start["info"]


@pytest.mark.parametrize("is_img2img", [False, True], ids=["txt2img", "img2img"])
def test_the_sequence_controls_show_with_the_one_source_layout_and_the_maps_with_controlnet(host, is_img2img):
    layout = control(host, "layout", is_img2img)
    every_source = control(host, "show_every_source", is_img2img)
    animation_row = container(control(host, "animation", is_img2img), "Row")
    assert container(control(host, "fps", is_img2img), "Row") is animation_row
    assert (every_source.visible, animation_row.visible) == (False, False)
    maps_row = container(control(host, "control_maps", is_img2img), "Row")
    [(update, outputs)] = handlers(tab_blocks(is_img2img), layout, "change")
    assert outputs == [every_source, animation_row, maps_row, control(host, "source_prompt", is_img2img)]
    assert [part["visible"] for part in update("one source", "webp", True)[:3]] == [True, True, False]
    assert [part["visible"] for part in update("pairs", "webp", True)[:3]] == [False, False, False]
    # this host has no ControlNet extension: the control maps row stays hidden in both layouts
    assert maps_row.visible is False
