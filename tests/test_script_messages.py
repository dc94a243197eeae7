"""What MasaCtrl tells the user reaches UI and API users alike: notes in the comments and in every
image's infotext (the API's ``info`` has no comments: modules/processing.py, ``Processed.js``),
refusals as a 422 with one log line and no traceback, and X/Y/Z cells that show the targets."""

from __future__ import annotations

import base64
import io
import json
import logging

import numpy as np
import torch
from engine_helpers import module_state
from PIL import Image

SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"
PAYLOAD = {"prompt": TARGET, "width": 64, "height": 64, "batch_size": 2, "seed": 3}


def masactrl(**values):
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, "source_prompt": SOURCE, **values}
    return [changed.get(field.name, field.default) for field in FIELDS]


def encoded(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(np.kron(rng.uniform(40, 215, size=(4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8))


def notes_in(body):
    """The MasaCtrl notes of every image, as an API client reads them from ``info``."""
    from modules.infotext_utils import parse_generation_parameters

    info = json.loads(body["info"])
    return [parse_generation_parameters(text).get("MasaCtrl notes", "") for text in info["infotexts"]], info


def test_a_start_step_past_the_img2img_steps_is_told_in_the_ui_and_the_api(host):
    """img2img at strength 0.3 of 10 steps samples 4 steps (t_enc + 1): start step 5 acts on none."""
    expected = ("start step 5 is past the last step (3) of this img2img generation, which samples 4 of 10 steps "
                "at denoising strength 0.3: the batch is paired but MasaCtrl does not act on it")
    processed = host.img2img(photo(), TARGET, steps=10, denoising_strength=0.3, batch_size=2, seed=3,
                             script_args={"MasaCtrl": masactrl(start_step=5)})
    assert f"MasaCtrl: {expected}" in processed.comments
    status, body = host.api_img2img({**PAYLOAD, "init_images": [encoded(photo())], "steps": 10, "denoising_strength": 0.3,
                                     "alwayson_scripts": {"MasaCtrl": {"args": masactrl(start_step=5)}}})
    assert status == 200, body
    notes, info = notes_in(body)
    assert notes == [expected, expected]
    assert info["extra_generation_params"]["MasaCtrl notes"] == expected


def test_a_start_step_past_the_hires_steps_is_told_for_that_pass(host):
    status, body = host.api_txt2img({
        **PAYLOAD, "steps": 6, "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 2, "denoising_strength": 0.6,
        "alwayson_scripts": {"MasaCtrl": {"args": masactrl(start_step=4, hires=True)}},
    })
    assert status == 200, body
    notes, _ = notes_in(body)
    assert notes == ["start step 4 is past the last step (1) of the hires fix pass, which samples 2 steps: the batch "
                     "is paired but MasaCtrl does not act on it"] * 2


def test_a_sampler_that_adds_noise_is_told_in_the_api_too(host):
    status, body = host.api_img2img({**PAYLOAD, "init_images": [encoded(photo())], "steps": 4, "denoising_strength": 1.0,
                                     "sampler_name": "DPM fast", "alwayson_scripts": {"MasaCtrl": {"args": masactrl()}}})
    assert status == 200, body
    notes, _ = notes_in(body)
    assert all("the DPM fast sampler added fresh noise while it sampled" in note for note in notes)


def test_a_refusal_answers_422_with_one_log_line_and_no_traceback(host, sd15, caplog):
    from modules import errors

    before = module_state(sd15)
    reports = len(errors.reports)
    with caplog.at_level(logging.INFO, logger="masactrl"):
        status, body = host.api_txt2img({**PAYLOAD, "batch_size": 3, "steps": 4,
                                         "alwayson_scripts": {"MasaCtrl": {"args": masactrl()}}})
    assert status == 422
    assert "MasaCtrl needs an even batch size of at least 2" in body["detail"] and body["error"] == "MasaCtrlInputError"
    assert body["errors"] == body["detail"]
    assert errors.reports[reports:] == []  # the API reports (with a traceback) only exceptions that are not HTTP ones
    lines = [record for record in caplog.records if record.name == "masactrl"]
    assert [(record.levelname, record.exc_info) for record in lines] == [("ERROR", None)]
    assert module_state(sd15) == before


def test_a_refusal_reads_as_the_message_in_the_ui(host):
    from refusals import ui_refusal

    message = ui_refusal(host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=3,
                                      script_args={"MasaCtrl": masactrl()}))
    assert message.startswith("MasaCtrl needs an even batch size of at least 2")
    assert "422" not in message and "MasaCtrl: MasaCtrl" not in message and "MasaCtrlInputError" not in message


def xyz_args(host, values="0, 2"):
    labels = [option.label for option in host.script("X/Y/Z plot").current_axis_options]
    return [labels.index("[MasaCtrl] Start step"), values, [], 0, "", [], 0, "", [], True, True, False, False, False,
            False, False, 0, False]


def test_xyz_cells_show_sources_and_targets_through_the_api(host):
    """The API sets do_not_save_grid (no batch grid): without MasaCtrl's help each cell would be
    the unchanged source."""
    status, body = host.api_txt2img({
        **PAYLOAD, "steps": 4, "script_name": "X/Y/Z plot", "script_args": xyz_args(host),
        "alwayson_scripts": {"MasaCtrl": {"args": masactrl(start_layer=0)}},
    })
    assert status == 200, body
    images = [Image.open(io.BytesIO(base64.b64decode(image))) for image in body["images"]]
    grid, cells = images[0], images[1:3]
    assert [cell.size for cell in cells] == [(128, 64), (128, 64)] and grid.size[0] >= 256
    pixels = [np.asarray(cell.convert("RGB")).astype(int) for cell in cells]
    assert np.array_equal(pixels[0][:, :64], pixels[1][:, :64])  # the sources: unchanged by the sweep
    assert np.abs(pixels[0][:, 64:] - pixels[1][:, 64:]).max() > 0  # the targets: start step 0 vs 2
    info = json.loads(body["info"])
    assert all(text.startswith(TARGET) for text in info["infotexts"][1:3])


def test_xyz_axes_exist_when_the_webui_runs_api_only(sd15):
    """With --nowebui the API builds the UI, where the plot takes its axis list, before the
    before_ui callbacks run (webui.py, api_only): the axes are added when the script loads."""
    from host import WebUIHost

    host = WebUIHost(sd15, extension_dir=str(__import__("pathlib").Path(__file__).parents[1]), nowebui=True)
    try:
        status, body = host.api_txt2img({
            **PAYLOAD, "steps": 4, "script_name": "X/Y/Z plot", "script_args": xyz_args(host),
            "alwayson_scripts": {"MasaCtrl": {"args": masactrl(start_layer=0)}},
        })
        labels = [option.label for option in host.script("X/Y/Z plot").current_axis_options]
    finally:
        host.teardown()
    assert status == 200, body
    assert labels.count("[MasaCtrl] Start step") == 1
    assert [Image.open(io.BytesIO(base64.b64decode(image))).size for image in body["images"][1:3]] == [(128, 64)] * 2


def test_xyz_cells_in_the_ui_keep_the_batch_grid(host):
    processed = host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=2, seed=3, selected_script="X/Y/Z plot",
                             script_args={"X/Y/Z plot": dict(enumerate(xyz_args(host))), "MasaCtrl": masactrl()})
    cells = processed.images[processed.index_of_first_image:]
    assert [cell.size for cell in cells] == [(128, 64), (128, 64)]


def test_the_refiner_switch_is_told_in_every_infotext():
    from host import WebUIHost
    from tiny_unets import sdxl_refiner_unet, sdxl_unet

    from modules import shared

    host = WebUIHost(sdxl_unet(0), model_name="tiny-sdxl", extension_dir=str(__import__("pathlib").Path(__file__).parents[1]))
    try:
        shared.opts.refiner_switch_by_sample_steps = True
        processed = host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=2, seed=3, refiner_switch_at=0.5,
                                 refiner=(sdxl_refiner_unet(0), "tiny-refiner"), script_args={"MasaCtrl": masactrl(start_step=0)})
    finally:
        host.teardown()
    first = processed.index_of_first_image
    assert all("MasaCtrl notes: the model changed during sampling (refiner)" in text for text in processed.infotexts[first:])
    assert torch.isfinite(processed.standin_latents).all()
