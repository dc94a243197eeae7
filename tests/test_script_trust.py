"""What a careful user and a reviewer hit, end to end in the stand-in WebUI: X/Y/Z cells that state
exactly their own settings, plots stopped before a bad cell, no server files read for the API, one
state per ``process_images`` call, quiet refusals, a UI that never loads a model, an inversion
cache keyed on what it computed with, an animation that is an image, paste and send that follow
the tab, and a WebUI MasaCtrl cannot drive left as it was."""

from __future__ import annotations

import base64
import io
import json
import logging
import sys
import types
import warnings

import numpy as np
import pytest
import torch
from engine_helpers import module_state
from PIL import Image
from test_script_img2img import photo

from lib_masactrl.fields import FIELD_NAMES, FIELDS

SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"
PAYLOAD = {"prompt": TARGET, "steps": 4, "width": 64, "height": 64, "batch_size": 2, "seed": 3}


def accordion(**values):
    changed = {"enabled": True, "source_prompt": SOURCE, **values}
    return [changed.get(field.name, field.default) for field in FIELDS]


def generate(host, batch_size=2, **values):
    return host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=batch_size, seed=7,
                        script_args={"MasaCtrl": accordion(**values)})


def params_of(text):
    from modules.infotext_utils import parse_generation_parameters

    return parse_generation_parameters(text)


def encoded(image, fmt="PNG"):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def axis_index(host, label):
    return [option.label for option in host.script("X/Y/Z plot").current_axis_options].index(label)


def xyz_args(host, label, values):
    """The plot's positional args: X axis ``label`` over ``values``, nothing on Y and Z, sub images on.
    An axis with choices takes its values from the dropdown (the plot's third argument)."""
    index = axis_index(host, label)
    choices = host.script("X/Y/Z plot").current_axis_options[index].choices is not None
    listed = [value.strip() for value in values.split(",")] if choices else []
    return [index, values, listed, 0, "", [], 0, "", [], True, True, False, False, False, False, False, 0, False]


# --- 1. X/Y/Z cells state exactly their own settings -------------------------------------------


@pytest.mark.parametrize("label, values, key, expected", [
    ("[MasaCtrl] Mode", "union, mutual", "MasaCtrl mode", ["union", "mutual"]),
    ("[MasaCtrl] Start step", "0, 3", "MasaCtrl start step", ["0", "3"]),
    ("[MasaCtrl] Strength", "0.5, 1", "MasaCtrl strength", ["0.5", "1.0"]),
])
def test_each_xyz_cell_states_its_own_values_and_pastes_back_to_them(host, label, values, key, expected):
    """Cells are copies of one ``p`` that share ``extra_generation_params``: a value at its default
    must not keep an earlier cell's entry."""
    status, body = host.api_txt2img({**PAYLOAD, "script_name": "X/Y/Z plot", "script_args": xyz_args(host, label, values),
                                     "alwayson_scripts": {"MasaCtrl": {"args": accordion(start_layer=0)}}})
    assert status == 200, body
    infotexts = json.loads(body["info"])["infotexts"]
    cells = [params_of(text) for text in infotexts[1:3]]
    defaults = {"MasaCtrl mode": "mutual", "MasaCtrl start step": "-1", "MasaCtrl strength": "1.0"}
    assert [cell.get(key, defaults[key]) for cell in cells] == expected
    name = next(field.name for field in FIELDS if field.infotext == key)
    pasted = [host.script_values_from_infotext(text, "MasaCtrl")[FIELD_NAMES.index(name)] for text in infotexts[1:3]]
    assert [str(value) for value in pasted] == [str(type(pasted[0])(value)) for value in expected]


def test_notes_of_one_cell_do_not_reach_the_next(host):
    status, body = host.api_txt2img({**PAYLOAD, "script_name": "X/Y/Z plot",
                                     "script_args": xyz_args(host, "[MasaCtrl] Start step", "5, 0"),
                                     "alwayson_scripts": {"MasaCtrl": {"args": accordion(start_layer=0)}}})
    assert status == 200, body
    first, second = (params_of(text) for text in json.loads(body["info"])["infotexts"][1:3])
    assert "start step 5 is past the last step" in first["MasaCtrl notes"]
    assert "MasaCtrl notes" not in second


# --- 2. a bad X/Y/Z value stops the whole plot before its first cell -------------------------


def test_a_start_layer_past_the_models_layers_stops_the_plot_with_the_models_range(host, sd15, caplog):
    before = module_state(sd15)
    args = {"script_name": "X/Y/Z plot", "script_args": xyz_args(host, "[MasaCtrl] Start layer", "0, 99"),
            "alwayson_scripts": {"MasaCtrl": {"args": accordion()}}}
    calls = []
    handle = sd15.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    try:
        with caplog.at_level(logging.INFO, logger="masactrl"):
            status, body = host.api_txt2img({**PAYLOAD, **args})
    finally:
        handle.remove()
    assert status == 422
    assert "[MasaCtrl] Start layer value 99" in body["detail"]
    assert "start layer 99 is out of range: this SD1.x model has layers 0-15" in body["detail"]
    assert calls == []  # no cell ran
    assert [record.levelname for record in caplog.records if record.name == "masactrl"] == ["ERROR"]
    # the UI: the plot stops as Interrupt stops it, with the message and no error box
    processed = host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=2, seed=3, selected_script="X/Y/Z plot",
                             script_args={"X/Y/Z plot": dict(enumerate(args["script_args"])), "MasaCtrl": accordion()})
    assert calls == [] and "[MasaCtrl] Start layer value 99" in processed.comments
    assert module_state(sd15) == before


def test_axes_used_while_masactrl_is_off_say_so_in_the_infotext(host):
    status, body = host.api_txt2img({**PAYLOAD, "script_name": "X/Y/Z plot",
                                     "script_args": xyz_args(host, "[MasaCtrl] Mode", "union, mutual"),
                                     "alwayson_scripts": {"MasaCtrl": {"args": accordion(enabled=False)}}})
    assert status == 200, body
    for text in json.loads(body["info"])["infotexts"][1:3]:
        assert "[MasaCtrl] Mode did nothing: MasaCtrl is off" in params_of(text)["MasaCtrl notes"]
        assert "MasaCtrl mode" not in params_of(text)


# --- 3. the API never makes the server read its own files -------------------------------------


@pytest.mark.parametrize("maps", ["path", "folder", "dict"])
def test_server_paths_are_refused_from_the_api(host, tmp_path, maps):
    image = tmp_path / "map.png"
    Image.new("RGB", (64, 64), "white").save(image)
    values = {"path": dict(control_maps=[str(image)]), "folder": dict(control_maps_folder=str(tmp_path)),
              "dict": dict(control_maps=[{"name": str(image)}])}[maps]
    status, body = host.api_txt2img({**PAYLOAD, "alwayson_scripts": {"MasaCtrl": {"args": accordion(
        layout="one source", **values)}}})
    assert status == 422
    assert "the server does not read its own files or folders for an API request" in body["detail"]


def test_the_folder_is_not_in_the_infotext_and_hidden_under_hide_ui_dir_config(host, sd15):
    from lib_masactrl.fields import FIELD_BY_NAME

    assert FIELD_BY_NAME["control_maps_folder"].infotext is None
    from host import WebUIHost

    host.teardown()
    hidden = WebUIHost(sd15, extension_dir=host.extension_dir, cmd_options={"hide_ui_dir_config": True})
    try:
        folder = hidden.script("MasaCtrl").controls[FIELD_NAMES.index("control_maps_folder")]
        assert folder.visible is False
    finally:
        hidden.teardown()


# --- 4 and 5. one state per process_images call --------------------------------------------------


def test_a_refusal_in_a_later_process_images_call_on_the_same_p_stays_a_refusal(host, sd15):
    """Loopback, SD upscale and the img2img Batch tab run ``process_images`` again on one ``p``: the
    second call must not inherit the first call's session."""
    from lib_masactrl.webui import generation
    from modules import processing, shared

    runner = host.runner(is_img2img=True)
    script = host.script("MasaCtrl", is_img2img=True)
    args = host.default_script_args(is_img2img=True)
    args[script.args_from:script.args_to] = accordion(start_step=0, start_layer=0)
    p = processing.StableDiffusionProcessingImg2Img(
        sd_model=shared.sd_model, prompt=TARGET, init_images=[photo()], batch_size=2, steps=4, width=64, height=64,
        denoising_strength=1.0, sampler_name="Euler", seed=5, do_not_save_samples=True, do_not_save_grid=True,
    )
    p.scripts, p.script_args = runner, args
    try:
        first = processing.process_images(p)
        assert len(first.images) == 2 and generation.state_of(p) is None
        p.batch_size = 3  # the second image of a loop: MasaCtrl refuses this one
        p.init_images = [photo(seed=1)] * 3
        second = processing.process_images(p)
        assert second.images == [] and "MasaCtrl needs an even batch size" in second.comments
    finally:
        p.close()
        shared.state.interrupted = False
    assert module_state(sd15) == module_state(sd15)
    assert generation.state_of(p) is None


@pytest.fixture
def watch(host):
    """Per denoiser call, the generation state MasaCtrl keeps on the ``p`` being sampled."""
    from lib_masactrl.webui import generation
    from modules import script_callbacks

    states = []

    def record(params):
        states.append(generation.state_of(params.denoiser.p))

    script_callbacks.on_cfg_denoiser(record, name="test_state_watch")
    try:
        yield states
    finally:
        script_callbacks.remove_callbacks_for_function(record)


def test_loopback_forces_batch_size_one_and_is_refused_in_the_ui_and_the_api(host, sd15):
    from refusals import ui_refusal

    before = module_state(sd15)
    loopback = {"Loopback": [3, 0.5, "Linear", "None"]}
    processed = host.img2img(photo(), TARGET, steps=4, batch_size=2, denoising_strength=1.0, seed=5,
                             selected_script="Loopback", script_args={**loopback, "MasaCtrl": accordion(source_prompt="")})
    assert "MasaCtrl needs an even batch size of at least 2" in ui_refusal(processed)
    assert module_state(sd15) == before
    status, body = host.api_img2img({**PAYLOAD, "init_images": [encoded(photo())], "denoising_strength": 1.0,
                                     "script_name": "Loopback", "script_args": [3, 0.5, "Linear", "None"],
                                     "alwayson_scripts": {"MasaCtrl": {"args": accordion(source_prompt="")}}})
    assert status == 422 and "the batch size is 1" in body["detail"]
    assert module_state(sd15) == before


def test_sd_upscale_gives_every_group_of_tiles_a_state_of_its_own(host, sd15, watch):
    before = module_state(sd15)
    processed = host.img2img(photo(), TARGET, steps=4, batch_size=2, denoising_strength=1.0, seed=5,
                             selected_script="SD upscale", script_args={"SD upscale": [None, 0, 1, 2.0],
                                                                        "MasaCtrl": accordion(source_prompt="")})
    assert processed.images[0].size == (128, 128)
    states = [state for state in watch if state is not None]
    distinct = list({id(state): state for state in states}.values())
    assert len(distinct) == 2 and all(state.session is not None for state in states)  # 4 tiles, 2 per call
    assert all(state.closed for state in distinct)
    assert module_state(sd15) == before


def test_the_batch_tab_with_png_info_stops_at_the_image_masactrl_refuses(host, sd15, watch):
    """The second image's own prompt lacks the target subject word: its generation is refused, and
    does not run with the first image's session."""
    from modules import img2img
    from modules.processing import create_infotext  # noqa: F401  (the tab reads the images' own infotexts)

    def with_prompt(prompt, seed):
        picture = photo(seed=seed)
        picture.info["parameters"] = f"{prompt}\nSteps: 4, Sampler: Euler, Seed: 5, Size: 64x64"
        return picture

    before = module_state(sd15)
    masks = dict(source_prompt="a dog", mask_mode="subject words", mask_words="dog")
    host.img2img(None, "", steps=4, batch_size=2, denoising_strength=1.0, seed=5,
                 batch_images=[with_prompt("a dog running", 0), with_prompt("a cat running", 1)],
                 use_png_info=True, png_info_props=["Prompt"],
                 script_args={"MasaCtrl": accordion(**masks)})
    first, *rest = img2img.batch_results
    assert len(first.images[first.index_of_first_image:]) == 2 and first.all_prompts == ["a dog", "a dog running"]
    assert len(rest) == 1 and rest[0].images == [] and "subject word 'dog' is not in the target prompt" in rest[0].comments
    assert len({id(state) for state in watch if state is not None}) == 1  # only the first image was sampled
    assert module_state(sd15) == before


# --- 6. refusals are quiet ---------------------------------------------------------------------


def test_a_ui_refusal_is_one_line_no_traceback_no_error_box(host, caplog):
    from modules import call_queue, errors

    reports = len(errors.reports)
    with caplog.at_level(logging.INFO):
        processed = generate(host, batch_size=3)
    assert processed.images == [] and "MasaCtrl needs an even batch size" in processed.comments
    assert call_queue.last_ui_exception is None and errors.reports[reports:] == []
    assert [(record.name, record.levelname) for record in caplog.records if record.levelno >= logging.WARNING] == [
        ("masactrl", "ERROR")]


def test_an_api_refusal_adds_no_python_warning(host):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status, body = host.api_txt2img({**PAYLOAD, "batch_size": 3, "alwayson_scripts": {"MasaCtrl": {"args": accordion()}}})
        host.api_txt2img({**PAYLOAD, "alwayson_scripts": {"MasaCtrl": {"args": accordion(start_step=5)}}})
    assert status == 422
    assert [str(item.message) for item in caught if "MasaCtrl" in str(item.message)] == []


def test_a_refused_generation_never_starts_the_sampler(host, sd15, monkeypatch):
    """Refused in ``process``, or through the API while a pass is prepared: the sampler never
    starts, so no progress bar is left half drawn."""
    from modules import sd_samplers_common

    calls, started = [], []
    launch = sd_samplers_common.Sampler.launch_sampling
    monkeypatch.setattr(sd_samplers_common.Sampler, "launch_sampling",
                        lambda self, steps, func: started.append(steps) or launch(self, steps, func))
    handle = sd15.register_forward_pre_hook(lambda module, inputs: calls.append(1))
    try:
        generate(host, batch_size=3)
        host.api_txt2img({**PAYLOAD, "batch_size": 3, "alwayson_scripts": {"MasaCtrl": {"args": accordion()}}})
        option = host.add_sd_unet("[TRT] tiny")  # refused while the pass is prepared
        status, body = host.api_txt2img({**PAYLOAD, "alwayson_scripts": {"MasaCtrl": {"args": accordion()}}})
        host.remove_sd_unet(option)
    finally:
        handle.remove()
    assert status == 422 and "SD Unet replacement" in body["detail"]
    assert calls == [] and started == []


# --- 7. building the UI never loads a model ------------------------------------------------------


def test_building_the_ui_and_reloading_never_ask_for_a_model(host, monkeypatch):
    from modules import sd_models

    asked = []
    monkeypatch.setattr(sd_models.model_data, "get_sd_model", lambda: asked.append(1) or sd_models.model_data.sd_model)
    host.reload_scripts()
    from lib_masactrl.webui.ui import layer_ranges

    layer_ranges()
    assert asked == []


def test_without_a_loaded_model_the_sliders_keep_every_models_range(host, monkeypatch):
    from lib_masactrl.webui.ui import layer_ranges
    from modules import sd_models

    monkeypatch.setattr(sd_models.model_data, "sd_model", None)
    assert layer_ranges() == ({"__type__": "generic_update"}, {"__type__": "generic_update"})


# --- 8. the inversion cache keys on what the inversion computed with -------------------------------


def edit(host, **values):
    return host.img2img(photo(), TARGET, steps=6, sampler_name="Euler", denoising_strength=1.0, batch_size=2, seed=5,
                        script_args={"MasaCtrl": accordion(source_prompt="", start_step=2, **values)})


def cached(host):
    from lib_masactrl.webui import inversion

    return inversion.CACHE


def test_a_u_net_patch_of_another_extension_inverts_again(host, sd15):
    from lib_masactrl import LayerMap

    edit(host)
    assert len(cached(host)) == 1
    block = LayerMap.from_unet(sd15)[3].block
    handle = block.register_forward_hook(lambda module, inputs, output: output * 1.01)  # FreeU-like
    try:
        edit(host)
    finally:
        handle.remove()
    assert len(cached(host)) == 2
    edit(host)
    assert len(cached(host)) == 2  # the unpatched model again: the first entry


def test_the_latent_noise_fill_keys_the_seed(host):
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :32] = 255
    for seed in (5, 6):
        host.img2img(photo(), TARGET, mask=Image.fromarray(mask), inpainting_fill=2, steps=4, sampler_name="Euler",
                     denoising_strength=1.0, batch_size=2, seed=seed, script_args={"MasaCtrl": accordion(source_prompt="")})
    assert len(cached(host)) == 2


def test_the_forget_button_empties_the_cache(host):
    from modules import ui

    edit(host)
    assert len(cached(host)) == 1
    blocks = ui.img2img_interface
    button = next(block for block in blocks.blocks.values()
                  if getattr(block, "elem_id", None) == "script_img2img_masactrl_clear_inversions")
    [function] = [fn for dependency, fn in zip(blocks.dependencies, blocks.fns) if button._id in dependency["targets"]]
    function.fn()
    assert len(cached(host)) == 0


# --- 9 and 14. the animation is an image, saved as the WebUI saves images ---------------------------


def test_the_animation_is_an_image_that_keeps_its_frames_and_is_saved_by_the_webui(host):
    from modules import images, shared

    shared.opts.samples_save = True
    sequence = dict(layout="one source", start_step=1, start_layer=0, animation="webp", fps=4,
                    target_prompts="a corgi\na cat\na fox")  # other frames: an animation keeps each once
    processed = host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=4, seed=7,
                             script_args={"MasaCtrl": accordion(**sequence)})
    assert all(isinstance(image, Image.Image) for image in processed.images)
    animation = processed.images[-1]
    buffer = io.BytesIO()
    animation.save(buffer, format="PNG")  # as the gallery's cache and the API's base64 encode it
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 3
    saved = [entry for entry in images.saved_images if entry[2]["suffix"] == "-masactrl-animation"]
    assert len(saved) == 1 and saved[0][0] is animation
    assert 'MasaCtrl animation: "3 targets at 4 fps"' in processed.infotexts[-1]
    assert 'MasaCtrl animation' in saved[0][1]


def test_through_the_api_the_animation_is_the_last_image_with_all_its_frames(host):
    status, body = host.api_txt2img({**PAYLOAD, "batch_size": 4, "alwayson_scripts": {"MasaCtrl": {"args": accordion(
        layout="one source", target_prompts="a corgi\na cat\na fox")}}})
    assert status == 200, body
    last = Image.open(io.BytesIO(base64.b64decode(body["images"][-1])))
    assert last.n_frames == 3
    source = params_of(json.loads(body["info"])["infotexts"][0])
    assert "MasaCtrl target prompt" not in source  # no image used the main prompt
    assert "MasaCtrl target prompt" not in json.loads(body["info"])["extra_generation_params"]


def test_the_api_extra_generation_params_hold_no_null(host):
    status, body = host.api_txt2img({**PAYLOAD, "alwayson_scripts": {"MasaCtrl": {"args": accordion()}}})
    assert status == 200
    assert None not in json.loads(body["info"])["extra_generation_params"].values()


# --- 10, 13. paste and send -------------------------------------------------------------------------


def test_pasting_parameters_without_masactrl_switches_it_off(host):
    enabled = host.script_values_from_infotext(f"{TARGET}\nSteps: 4, Sampler: Euler, Seed: 3, Size: 64x64", "MasaCtrl")[0]
    assert enabled is False


def test_a_txt2img_pair_pasted_into_img2img_leaves_masactrl_off_there(host):
    processed = generate(host)
    text = processed.infotexts[processed.index_of_first_image + 1]
    assert host.script_values_from_infotext(text, "MasaCtrl")[0] is True
    assert host.script_values_from_infotext(text, "MasaCtrl", is_img2img=True)[0] is False
    edited = edit(host)
    text = edited.infotexts[edited.index_of_first_image + 1]
    assert host.script_values_from_infotext(text, "MasaCtrl", is_img2img=True)[0] is True
    assert host.script_values_from_infotext(text, "MasaCtrl")[0] is False


def test_send_to_copies_no_masactrl_setting(host):
    assert host.script("MasaCtrl").paste_field_names == []


def test_pasted_settings_open_their_section(host):
    import gradio as gr

    processed = generate(host, batch_size=4, layout="one source", animation="none")
    updates = {component.label: update for component, update in host.paste_infotext(
        processed.infotexts[processed.index_of_first_image]) if isinstance(component, gr.Accordion)}
    assert updates["Layout and sequences"].get("open") is True and "open" not in updates["Masks"]


# --- 12, 15, 17. texts and visibility --------------------------------------------------------------


def test_the_source_prompt_placeholder_follows_the_layout(host):
    from test_script_ui import control, handlers, tab_blocks

    for is_img2img in (False, True):
        layout, source = control(host, "layout", is_img2img), control(host, "source_prompt", is_img2img)
        [(update, outputs)] = handlers(tab_blocks(is_img2img), layout, "change")
        assert outputs[-1] is source
        assert "image 1 of every batch" in update("one source", "webp", False)[-1]["placeholder"]
        assert "first half" in update("pairs", "webp", False)[-1]["placeholder"]


def test_inversion_controls_hide_without_inversion_and_fps_without_animation(host):
    from test_script_ui import control, handlers, tab_blocks

    invert = control(host, "invert", True)
    [(update, outputs)] = handlers(tab_blocks(True), invert, "change")
    assert outputs[:3] == [control(host, name, True) for name in ("follow_inversion", "show_reconstruction",
                                                                     "inversion_cfg")]
    assert [part["visible"] for part in update(False, "pairs")[:3]] == [False] * 3
    assert "empty: the main prompt" in update(False, "pairs")[3]["placeholder"]
    animation = control(host, "animation")
    [(update, outputs)] = handlers(tab_blocks(False), animation, "change")
    assert outputs == [control(host, "fps")] and update("none")["visible"] is False and update("gif")["visible"] is True


def test_labels_and_hints_fit(host):
    mode = control_named(host, "mask_mode")
    assert mode.label == "Masks from"
    assert len(control_named(host, "mask_target_words").placeholder) <= 24
    start, end = control_named(host, "start_layer"), control_named(host, "end_layer")
    assert abs(len(start.info) - len(end.info)) <= 12 and end.maximum == 16


def control_named(host, name, is_img2img=False):
    return host.script("MasaCtrl", is_img2img).controls[FIELD_NAMES.index(name)]


# --- 16. a default start step that controls short schedules ---------------------------------------


def test_the_automatic_start_step_controls_a_four_step_run(host):
    auto = generate(host, start_layer=0)
    old_default = generate(host, start_layer=0, start_step=4)
    assert "MasaCtrl: " not in auto.comments and "past the last step" in old_default.comments
    assert not torch.equal(auto.standin_latents[1], old_default.standin_latents[1])
    text = auto.infotexts[auto.index_of_first_image + 1]
    assert params_of(text)["MasaCtrl start step"] == "-1"
    assert host.script_values_from_infotext(text, "MasaCtrl")[FIELD_NAMES.index("start_step")] == -1


def test_an_infotext_from_before_the_automatic_default_means_step_four(host):
    old = f"{TARGET}\nSteps: 30, Sampler: Euler, Seed: 3, Size: 64x64, MasaCtrl: True, MasaCtrl source prompt: {SOURCE}"
    assert host.script_values_from_infotext(old, "MasaCtrl")[FIELD_NAMES.index("start_step")] == 4


def test_the_automatic_start_step_is_the_papers_share():
    from lib_masactrl.settings import default_start_step

    assert [default_start_step(steps) for steps in (4, 6, 8, 20, 25, 30, 50)] == [0, 0, 1, 2, 2, 2, 4]


# --- 10, 18. a model or a WebUI MasaCtrl cannot drive ------------------------------------------------


def test_an_unusual_model_with_masactrl_off_is_left_alone_and_with_it_on_is_refused(host, caplog):
    from modules import errors

    class OtherModel:
        """A model without an ldm U-Net (another architecture)."""

        model = types.SimpleNamespace(transformer=torch.nn.Linear(2, 2))

    reports = len(errors.reports)
    from lib_masactrl.webui import generation

    p = types.SimpleNamespace(sd_model=OtherModel(), extra_generation_params={}, comments=[], is_api=True,
                              close=lambda: None, comment=lambda text: p.comments.append(text))
    with caplog.at_level(logging.INFO, logger="masactrl"):
        generation.start(p, accordion(enabled=False))
        assert caplog.records == [] and errors.reports[reports:] == []
        generation.start(p, accordion())
    assert "has no Stable Diffusion U-Net MasaCtrl can control" in caplog.records[-1].getMessage()
    with pytest.raises(Exception, match="U-Net MasaCtrl can control"):
        p.sample()
    generation.state_of(p).close()


@pytest.fixture
def old_forge(monkeypatch):
    """Makes the running WebUI look like a Forge from before August 2024: its ``modules_forge``
    package is importable, Forge's ``backend`` package is not."""
    module = types.ModuleType("modules_forge")
    module.__spec__ = importlib_spec("modules_forge")
    monkeypatch.setitem(sys.modules, "modules_forge", module)
    for name in ("backend", "backend.patcher", "backend.patcher.unet"):  # Forge's stand-in may be loaded
        monkeypatch.setitem(sys.modules, name, None)
    return module


def importlib_spec(name):
    import importlib.machinery

    return importlib.machinery.ModuleSpec(name, None)


def test_in_an_old_forge_the_accordion_says_it_does_nothing_and_the_host_is_left_as_it_was(sd15, old_forge, caplog):
    import pathlib

    from host import WebUIHost

    before = module_state(sd15)
    with caplog.at_level(logging.INFO, logger="masactrl"):
        host = WebUIHost(sd15, extension_dir=str(pathlib.Path(__file__).parents[1]))
    try:
        script = host.script("MasaCtrl")
        assert len(script.controls) == 1
        assert [record.getMessage() for record in caplog.records].count(
            "MasaCtrl does not support this version of WebUI Forge: it needs a Forge with the 'backend' package "
            "(August 2024 or newer); update Forge, or use the AUTOMATIC1111 WebUI (v1.7 or newer).") >= 1
        plain = host.txt2img(TARGET, steps=4, batch_size=2, seed=7)
        assert not hasattr(plain, "masactrl") and module_state(sd15) == before
        status, body = host.api_txt2img({**PAYLOAD, "alwayson_scripts": {"MasaCtrl": {"args": [True]}}})
        assert status == 422 and "does not support this version of WebUI Forge" in body["detail"]
    finally:
        host.teardown()
    assert module_state(sd15) == before
