"""The MasaCtrl script end to end in the stand-in WebUI (tests/webui): real k-diffusion sampling
over a tiny real ldm U-Net, the script loaded the way the WebUI loads extensions."""

from __future__ import annotations

import pathlib
import re

import pytest
import torch
from engine_helpers import module_state
from refusals import ui_refusal
from tiny_unets import sd15_unet
from webui_reference import engine_reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"




def close(actual, expected):
    """Equal up to float32 rounding of differently batched matmuls (latents reach about 50)."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=3e-4)


def masactrl(*args):
    return {"MasaCtrl": list(args)}


def refused(processed, message):
    assert message in ui_refusal(processed)


def generate(host, prompt, seed=7, batch_size=1, **kwargs):
    kwargs.setdefault("steps", 4)
    kwargs.setdefault("width", 64)
    kwargs.setdefault("height", 64)
    return host.txt2img(prompt, seed=seed, batch_size=batch_size, **kwargs)


def plain_pair(host, sampler, **kwargs):
    source = generate(host, SOURCE, sampler_name=sampler, **kwargs).standin_latents[0]
    target = generate(host, TARGET, sampler_name=sampler, **kwargs).standin_latents[0]
    return source, target


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "Heun"])
def test_sources_are_plain_and_targets_are_controlled(host, sd15, sampler):
    """Sources equal plain generation: bit for bit against the same paired batch without control
    (start step past the end), and up to batch-size rounding against a batch of one. Targets
    differ from plain targets and equal the engine driven directly."""
    from lib_masactrl import MasaCtrlSettings

    before = module_state(sd15)
    plain_source, plain_target = plain_pair(host, sampler)
    uncontrolled = generate(host, TARGET, batch_size=2, sampler_name=sampler, script_args=masactrl(True, SOURCE, "mutual", 4))
    processed = generate(
        host, TARGET, batch_size=2, sampler_name=sampler, script_args=masactrl(True, SOURCE, "mutual", 0, 150, 0),
    )
    source, target = processed.standin_latents
    assert torch.equal(source, uncontrolled.standin_latents[0])
    close(source, plain_source)
    close(uncontrolled.standin_latents[1], plain_target)
    # batch-size rounding is below 3e-4 here; control moves the target 10-100 times further
    assert (target - plain_target).abs().max() > 5e-3
    reference = engine_reference((None, 0), [SOURCE, TARGET], [7, 7], MasaCtrlSettings(start_step=0, start_layer=0),
                                 sampler)
    assert torch.equal(processed.standin_latents, reference)
    assert module_state(sd15) == before
    assert processed.all_prompts == [SOURCE, TARGET]
    assert processed.all_seeds == [7, 7]
    assert "MasaCtrl: " not in processed.comments


@pytest.mark.parametrize(
    "options",
    [{"batch_cond_uncond": False}, {"skip_early_cond": 0.5}],
    ids=["cond and uncond split", "uncond skipped early"],
)
def test_every_call_layout_gives_the_same_images(sd15, options):
    from host import WebUIHost

    results = []
    for opts in ({}, options):
        host = WebUIHost(sd15, extension_dir=str(ROOT), options=opts)
        try:
            processed = generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 1))
            results.append(processed.standin_latents)
            assert "MasaCtrl: " not in processed.comments
        finally:
            host.teardown()
    if "skip_early_cond" in options:
        assert not torch.allclose(results[0], results[1])
    else:
        close(results[1], results[0])


def test_and_prompts_and_long_prompts_pair_correctly(host, sd15):
    long_target = " ".join([TARGET] * 12)
    processed = generate(
        host, f"{long_target} AND a red ball", batch_size=2, script_args=masactrl(True, SOURCE, "union", 1),
    )
    assert "MasaCtrl: " not in processed.comments
    # the short source cond is padded to the target's 154 tokens in the batch, so the source is
    # compared with the same batch without control; union mode computes the source rows in a
    # smaller attention call than the whole batch, so they agree up to that call's rounding
    uncontrolled = generate(
        host, f"{long_target} AND a red ball", batch_size=2, script_args=masactrl(True, SOURCE, "union", 4),
    )
    close(processed.standin_latents[0], uncontrolled.standin_latents[0])
    assert not torch.equal(processed.standin_latents[1], uncontrolled.standin_latents[1])


def test_start_step_past_the_end_pairs_without_control_and_says_so(host):
    plain_source, plain_target = plain_pair(host, "Euler a")
    processed = generate(host, TARGET, batch_size=2, sampler_name="Euler a", script_args=masactrl(True, SOURCE, "mutual", 6))
    close(processed.standin_latents[0], plain_source)
    close(processed.standin_latents[1], plain_target)
    assert "MasaCtrl: start step 6 is past the last step (3)" in processed.comments


def test_disabled_is_identical_to_no_extension(host):
    with_args = generate(host, TARGET, batch_size=2, script_args=masactrl(False, SOURCE, "mutual", 0))
    without = generate(host, TARGET, batch_size=2)
    assert torch.equal(with_args.standin_latents, without.standin_latents)
    assert "MasaCtrl" not in with_args.infotexts[0]


def test_batch_count_repeats_the_pairing_and_infotexts_round_trip(host):
    processed = generate(host, TARGET, batch_size=2, n_iter=2, seed=100,
                         script_args=masactrl(True, SOURCE, "union", 3, 5, 12, 15, True))
    assert processed.all_prompts == [SOURCE, TARGET, SOURCE, TARGET]
    assert processed.all_seeds == [100, 100, 102, 102]
    first = processed.index_of_first_image  # the grid's infotext comes first when a grid is returned
    infotexts = processed.infotexts[first:]
    assert [text.split("\n")[0] for text in infotexts] == [SOURCE, TARGET, SOURCE, TARGET]
    assert all(f"Seed: {seed}," in text for seed, text in zip([100, 100, 102, 102], infotexts))
    values = host.script_values_from_infotext(infotexts[1], "MasaCtrl")
    assert values == [
        True, SOURCE, "union", 3, 5, 12, 15, True, "targets", "", True, 1.0, True, "none", "", "", 0.1, False, None, None,
        True, "pairs", "", False, None, None, 1, "webp", 8, 1.0,
    ]


def test_the_ui_returns_components_in_api_order(host):
    script = host.script("MasaCtrl")
    labels = [getattr(component, "label", None) for component in script.controls]
    assert labels == [
        "MasaCtrl", "Source prompt", "Mode", "Start step", "End step", "Start layer", "End layer", "Apply during hires fix",
        "ControlNet units apply to", "Per enabled unit", "Invert the init image", "Inversion CFG scale",
        "Show reconstruction", "Masks from", "Source subject words", "Target subject words", "Mask threshold",
        "Show masks", "Source mask", "Target mask", "Source follows the inversion", "Layout", "Target prompts, one per line",
        "Show the source of every batch", "Control maps, one per target", "Control maps folder",
        "ControlNet unit for the maps", "Animation", "Frames per second", "Strength",
    ]
    assert host.default_script_args()[script.args_from:script.args_to] == [
        False, "", "mutual", -1, 150, -1, 70, False, "targets", "", True, 1.0, True, "none", "", "", 0.1, False, None, None,
        True, "pairs", "", False, None, "", 1, "webp", 8, 1.0,
    ]


@pytest.mark.parametrize("tab", ["txt2img", "img2img"])
def test_every_control_has_a_tooltip_on_both_tabs(host, tab):
    from lib_masactrl.fields import FIELDS

    script = host.script("MasaCtrl", is_img2img=tab == "img2img")
    names = [field.name for field in FIELDS]
    accordion, *others = script.controls
    elem_ids = [accordion.accordion_id] + [component.elem_id for component in others]
    assert elem_ids == [f"script_{tab}_masactrl_{name}" for name in names]
    source = (ROOT / "javascript" / "masactrl.js").read_text()
    assert "script_${tab}_masactrl_${name}" in source
    tooltips = dict(re.findall(r"^\s+(\w+): \"([^\"]+)\",$", source, flags=re.MULTILINE))
    assert sorted(tooltips) == sorted(names)
    assert all(text.endswith(".") for text in tooltips.values())


def test_layer_sliders_follow_the_loaded_model(host):
    from tiny_unets import sdxl_unet

    from lib_masactrl.webui.ui import layer_ranges

    start, end = layer_ranges()
    assert start["maximum"] == 15 and "SD1.x model: layers 0-15; -1 = 10" in start["info"]
    assert end["maximum"] == 16 and end["value"] == 16 and "16 = through the last layer" in end["info"]
    host.switch_model(sdxl_unet(0))
    start, end = layer_ranges()
    assert start["maximum"] == 69 and "SDXL model: layers 0-69; -1 = 44" in start["info"]
    assert end["maximum"] == 70 and "value" not in end


@pytest.mark.parametrize(
    "batch_size, args, message",
    [
        (1, (True, SOURCE), "MasaCtrl needs an even batch size of at least 2"),
        (3, (True, SOURCE), "the batch size is 3"),
        (2, (True, SOURCE, "mutual", 4, 150, 40), "start layer 40 is out of range: this SD1.x model has layers 0-15"),
    ],
)
def test_bad_input_stops_the_generation_with_its_message_and_no_patch(host, sd15, batch_size, args, message):
    before = module_state(sd15)
    refused(generate(host, TARGET, batch_size=batch_size, script_args=masactrl(*args)), message)
    assert module_state(sd15) == before
    assert generate(host, TARGET, batch_size=2).standin_latents is not None
    assert module_state(sd15) == before


def test_api_positional_and_dict_args_and_422_for_bad_values(host, sd15):
    before = module_state(sd15)
    payload = {"prompt": TARGET, "steps": 4, "width": 64, "height": 64, "batch_size": 2, "seed": 3}
    status, body = host.api_txt2img({**payload, "alwayson_scripts": {"MasaCtrl": {"args": [True, SOURCE, "mutual", 1]}}})
    assert status == 200 and len(body["images"]) == 2
    status, body = host.api_txt2img({**payload, "alwayson_scripts": {"MasaCtrl": {"args": [{"enabled": True, "mode": "union"}]}}})
    assert status == 200
    status, body = host.api_txt2img({**payload, "alwayson_scripts": {"MasaCtrl": {"args": [True, SOURCE, "blend"]}}})
    assert status == 422
    assert "mode 'blend' is not known: use one of mutual, union" in body["detail"]
    assert module_state(sd15) == before


@pytest.mark.parametrize("skip", [False, True], ids=["interrupt", "skip"])
def test_interrupt_and_skip_leave_no_patch(host, sd15, skip):
    before = module_state(sd15)
    host.interrupt_at(3, skip=skip)
    generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 1))
    assert module_state(sd15) == before


def test_an_exception_during_sampling_leaves_no_patch(host, sd15):
    from lib_masactrl import LayerMap

    before = module_state(sd15)
    block = LayerMap.from_unet(sd15)[12].block

    def fail(module, args):
        raise RuntimeError("CUDA out of memory (simulated)")

    handle = block.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="simulated"):
            generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 0))
    finally:
        handle.remove()
    assert module_state(sd15) == before


def test_hires_fix_keeps_pairs_and_controls_only_when_ticked(host):
    kwargs = dict(batch_size=2, enable_hr=True, hr_scale=2, denoising_strength=0.6)
    off = generate(host, TARGET, script_args=masactrl(True, SOURCE, "mutual", 1), **kwargs)
    on = generate(host, TARGET, script_args=masactrl(True, SOURCE, "mutual", 1, 150, -1, 70, True), **kwargs)
    assert off.all_prompts == on.all_prompts == [SOURCE, TARGET]
    assert torch.equal(on.standin_latents[0], off.standin_latents[0])
    assert not torch.equal(on.standin_latents[1], off.standin_latents[1])
    assert "MasaCtrl hires fix: True" in on.infotexts[on.index_of_first_image + 1]


def test_reload_and_model_switch_leave_no_patch(host, sd15):
    before = module_state(sd15)
    host.reload_scripts()
    processed = generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 1))
    assert processed.all_prompts == [SOURCE, TARGET]
    assert module_state(sd15) == before
    other = sd15_unet(seed=1)
    other_before = module_state(other)
    host.switch_model(other)
    generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 1))
    assert module_state(other) == other_before
    assert module_state(sd15) == before


def test_the_sdxl_refiner_switch_hands_control_to_the_refiners_own_layers():
    from host import WebUIHost
    from tiny_unets import sdxl_refiner_unet, sdxl_unet

    from modules import shared

    base, refiner = sdxl_unet(0), sdxl_refiner_unet(0)
    states = module_state(base), module_state(refiner)
    host = WebUIHost(base, extension_dir=str(ROOT), model_name="tiny-sdxl")
    try:
        shared.opts.refiner_switch_by_sample_steps = True
        processed = generate(
            host, TARGET, batch_size=2, refiner=(refiner, "tiny-refiner"), refiner_switch_at=0.5,
            script_args=masactrl(True, SOURCE, "mutual", 0),
        )
    finally:
        host.teardown()
    assert "MasaCtrl: the model changed during sampling (refiner); MasaCtrl follows the new model" in processed.comments
    assert "never ran through MasaCtrl" not in processed.comments
    assert "MasaCtrl start layer: 44" in processed.infotexts[processed.index_of_first_image]
    assert (module_state(base), module_state(refiner)) == states


def test_an_sd_unet_replacement_stops_the_generation_with_its_name(host, sd15):
    before = module_state(sd15)
    option = host.add_sd_unet("[TRT] tiny")
    refused(generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE)),
            "the SD Unet replacement '[TRT] tiny' (Settings > SD Unet) bypasses the attention layers")
    assert module_state(sd15) == before
    host.set_setting("sd_unet", "None")
    assert generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE)).all_prompts == [SOURCE, TARGET]
    assert option.activations >= 1


def test_xyz_plot_axes_sweep_the_settings(host):
    xyz = host.script("X/Y/Z plot")
    labels = [option.label for option in xyz.current_axis_options]
    assert {"[MasaCtrl] Start step", "[MasaCtrl] Start layer", "[MasaCtrl] Mode"} <= set(labels)
    args = {0: labels.index("[MasaCtrl] Start step"), 1: "0, 2", 3: labels.index("[MasaCtrl] Mode"),
            5: ["mutual", "union"], 10: True}
    processed = generate(
        host, TARGET, batch_size=2, selected_script="X/Y/Z plot",
        script_args={"X/Y/Z plot": args, "MasaCtrl": [True, SOURCE]},
    )
    cells = [text for text in processed.infotexts if "MasaCtrl start step" in text]
    settings = {(text.split("MasaCtrl start step: ")[1][0], "union" if "MasaCtrl mode: union" in text else "mutual")
                for text in cells}
    assert settings == {("0", "mutual"), ("2", "mutual"), ("0", "union"), ("2", "union")}


def test_token_merging_is_controlled_too(sd15):
    from host import WebUIHost

    before = module_state(sd15)
    host = WebUIHost(sd15, extension_dir=str(ROOT), options={"token_merging_ratio": 0.5})
    try:
        uncontrolled = generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 4, 150, 0))
        processed = generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "union", 0, 150, 0))
    finally:
        host.teardown()
    assert "MasaCtrl: " not in processed.comments
    # union mode: the source rows run in their own, smaller attention call (rounding only)
    close(processed.standin_latents[0], uncontrolled.standin_latents[0])
    assert (processed.standin_latents[1] - uncontrolled.standin_latents[1]).abs().max() > 5e-3
    assert module_state(sd15) == before


@pytest.mark.parametrize("optimization", ["sdp-no-mem", "None"])
def test_other_attention_optimisations_are_controlled_alike(sd15, optimization):
    """The controlled call runs whatever attention forward the WebUI installed: the same images as
    with sdp up to the rounding of the attention kernels."""
    from host import WebUIHost

    results = []
    for name in ("sdp", optimization):
        host = WebUIHost(sd15, extension_dir=str(ROOT), optimization=name)
        try:
            results.append(generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE, "mutual", 0, 150, 0)))
        finally:
            host.teardown()
    close(results[1].standin_latents, results[0].standin_latents)
    assert "MasaCtrl: " not in results[1].comments


def test_pasting_a_source_images_parameters_restores_the_target_prompt(host):
    processed = generate(host, TARGET, batch_size=2, script_args=masactrl(True, SOURCE))
    first = processed.index_of_first_image
    source_info, target_info = processed.infotexts[first:first + 2]
    assert source_info.startswith(SOURCE) and f"MasaCtrl target prompt: {TARGET}," in source_info
    assert "MasaCtrl target prompt" not in target_info
    for info in (source_info, target_info):
        updates = host.paste_infotext(info)
        prompts = [update["value"] for component, update in updates
                   if getattr(component, "elem_id", "") == "txt2img_prompt" and isinstance(update, dict)]
        assert prompts == [TARGET]
        assert host.script_values_from_infotext(info, "MasaCtrl")[1] == SOURCE


def test_styles_apply_to_the_source_prompt_too(host, monkeypatch):
    """The WebUI applies styles to every prompt before ``process`` (processing.py, setup_prompts);
    the stand-in has no style database, so a one-style one stands in for modules/styles.py."""
    from modules import shared

    def apply_styles_to_prompt(prompt, styles):
        return f"{prompt}, film grain" if "film" in styles else prompt

    monkeypatch.setattr(shared.prompt_styles, "apply_styles_to_prompt", apply_styles_to_prompt)
    processed = generate(host, TARGET, batch_size=2, styles=["film"], script_args=masactrl(True, SOURCE))
    assert processed.all_prompts == [f"{SOURCE}, film grain", f"{TARGET}, film grain"]
