"""Strength end to end in the stand-in WebUI: the accordion's slider, its infotext key and paste,
the API (appended after the older arguments, so old positional payloads keep their meaning), the
X/Y/Z axis, and its effect in txt2img, img2img editing, masks and one-source sequences. (ControlNet
with strength is in tests/test_script_controlnet.py.)"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from engine_helpers import module_state
from PIL import Image
from test_script_img2img import photo
from test_script_masks import half_mask
from webui_reference import engine_reference

from lib_masactrl.fields import FIELD_NAMES, FIELDS

SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"
STRENGTH = FIELD_NAMES.index("strength")


def accordion(**values):
    """The accordion's values in UI order, MasaCtrl on from step 0 and layer 0."""
    changed = {"enabled": True, "source_prompt": SOURCE, "start_step": 0, "start_layer": 0, **values}
    return [changed.get(field.name, field.default) for field in FIELDS]


def pixels(body) -> list:
    """The API's images as pixel arrays (the PNGs also carry their infotexts, which differ)."""
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(image)))) for image in body["images"]]


def generate(host, batch_size=2, **values):
    return host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=batch_size, seed=7,
                        script_args={"MasaCtrl": accordion(**values)})


def test_the_slider_sits_beside_the_mode_with_its_range_and_default(host):
    import gradio as gr

    for is_img2img in (False, True):
        controls = host.script("MasaCtrl", is_img2img).controls
        slider = controls[STRENGTH]
        assert isinstance(slider, gr.Slider) and slider.label == "Strength"
        assert (slider.minimum, slider.maximum, slider.value) == (0.0, 1.0, 1.0)
        assert slider.elem_id == f"script_{'img2img' if is_img2img else 'txt2img'}_masactrl_strength"
        assert slider.parent is controls[FIELD_NAMES.index("mode")].parent


def test_txt2img_targets_are_the_engines_blend_and_sources_stay(host, sd15):
    from lib_masactrl import MasaCtrlSettings

    before = module_state(sd15)
    full = generate(host)
    half = generate(host, strength=0.5)
    none = generate(host, strength=0.0)
    uncontrolled = generate(host, start_step=4)
    reference = engine_reference((None, 0), [SOURCE, TARGET], [7, 7], MasaCtrlSettings(start_step=0, start_layer=0,
                                                                                         strength=0.5))
    assert torch.equal(half.standin_latents, reference)
    for result in (half, none):
        assert torch.equal(result.standin_latents[0], uncontrolled.standin_latents[0])  # mutual: bit for bit
    assert torch.equal(none.standin_latents[1], uncontrolled.standin_latents[1])
    distance = {name: float((result.standin_latents[1] - uncontrolled.standin_latents[1]).abs().mean())
                for name, result in (("half", half), ("full", full))}
    assert 0 < distance["half"] < distance["full"]
    assert "MasaCtrl: " not in half.comments + none.comments
    assert module_state(sd15) == before


def test_infotext_records_strength_and_paste_restores_it(host):
    half = generate(host, strength=0.5)
    first = half.index_of_first_image
    assert all("MasaCtrl strength: 0.5" in text for text in half.infotexts[first:])
    assert host.script_values_from_infotext(half.infotexts[first + 1], "MasaCtrl")[STRENGTH] == 0.5
    full = generate(host)
    assert "MasaCtrl strength" not in full.infotexts[full.index_of_first_image]
    assert host.script_values_from_infotext(full.infotexts[first + 1], "MasaCtrl")[STRENGTH] == 1.0


def test_api_takes_strength_after_the_older_arguments(host, sd15):
    before = module_state(sd15)
    payload = {"prompt": TARGET, "steps": 4, "width": 64, "height": 64, "batch_size": 2, "seed": 3}

    def run(args):
        status, body = host.api_txt2img({**payload, "alwayson_scripts": {"MasaCtrl": {"args": args}}})
        assert status == 200, body
        return body

    old = accordion()[:STRENGTH]  # a payload written before strength existed
    assert len(old) == STRENGTH
    old_body, full_body = run(old), run(accordion(strength=1.0))
    half_body, dict_body = run(accordion(strength=0.5)), run([{"enabled": True, "source_prompt": SOURCE,
                                                               "start_step": 0, "start_layer": 0, "strength": 0.5}])
    old_images, full_images, half_images, dict_images = (pixels(body) for body in (old_body, full_body, half_body,
                                                                                    dict_body))
    assert all(np.array_equal(a, b) for a, b in zip(old_images, full_images))
    assert all(np.array_equal(a, b) for a, b in zip(half_images, dict_images))
    assert np.array_equal(half_images[0], full_images[0]) and not np.array_equal(half_images[1], full_images[1])
    assert "MasaCtrl strength: 0.5" in json.loads(half_body["info"])["infotexts"][1]
    status, body = host.api_txt2img({**payload, "alwayson_scripts": {"MasaCtrl": {"args": accordion(strength=1.5)}}})
    assert status == 422 and "strength 1.5 is out of range: allowed are 0.0 to 1.0" in body["detail"]
    assert module_state(sd15) == before


def test_xyz_axis_sweeps_strength(host):
    xyz = host.script("X/Y/Z plot")
    labels = [option.label for option in xyz.current_axis_options]
    processed = host.txt2img(
        TARGET, steps=4, width=64, height=64, batch_size=2, seed=7, selected_script="X/Y/Z plot",
        script_args={"X/Y/Z plot": {0: labels.index("[MasaCtrl] Strength"), 1: "0, 0.5, 1", 10: True},
                     "MasaCtrl": accordion()},
    )
    cells = [text for text in processed.infotexts if "MasaCtrl" in text and "Steps: 4" in text]
    assert any("MasaCtrl strength: 0.5" in text for text in cells)
    assert any("MasaCtrl strength: 0.0" in text for text in cells)


def test_img2img_edits_take_strength_and_the_reconstruction_stays(host):
    def edit(strength):
        return host.img2img(photo(), TARGET, steps=8, sampler_name="Euler", denoising_strength=1.0, batch_size=2,
                            seed=5, script_args={"MasaCtrl": accordion(source_prompt="", start_step=2, strength=strength)})

    full, half, none = edit(1.0), edit(0.5), edit(0.0)
    for result in (half, none):
        assert torch.equal(result.standin_latents[0], full.standin_latents[0])  # the reconstruction
    a, b, c = (result.standin_latents[1] for result in (full, half, none))
    assert float((b - c).abs().mean()) > 0 and float((a - b).abs().mean()) > 0
    assert "MasaCtrl strength: 0.5" in half.infotexts[half.index_of_first_image + 1]


def test_masks_with_strength_blend_the_masked_control(host):
    masks = dict(mask_mode="uploaded masks", source_mask=half_mask(True), target_mask=half_mask(False))
    full, half, none = (generate(host, strength=strength, **masks) for strength in (1.0, 0.5, 0.0))
    plain = generate(host, start_step=4, **masks)
    torch.testing.assert_close(half.standin_latents[0], plain.standin_latents[0], rtol=1e-5, atol=3e-4)
    assert torch.equal(none.standin_latents, plain.standin_latents)  # strength 0: the plain batch, bit for bit
    distance = [float((result.standin_latents[1] - plain.standin_latents[1]).abs().mean()) for result in (half, full)]
    assert 0 < distance[0] < distance[1]


def test_a_sequence_takes_strength_for_every_target(host):
    from lib_masactrl import MasaCtrlSettings

    sequence = dict(layout="one source", animation="none", target_prompts="a corgi jumping\na corgi sleeping\na corgi")
    half = generate(host, batch_size=4, strength=0.5, **sequence)
    reference = engine_reference((None, 0, 0, 0), half.all_prompts, [7] * 4,
                                 MasaCtrlSettings(start_step=0, start_layer=0, strength=0.5))
    assert torch.equal(half.standin_latents, reference)
    full = generate(host, batch_size=4, **sequence)
    assert torch.equal(half.standin_latents[0], full.standin_latents[0])
    assert all(not torch.equal(half.standin_latents[i], full.standin_latents[i]) for i in (1, 2, 3))


@pytest.mark.parametrize("value", ["0.25", 0.25])
def test_strength_from_text_or_number(host, value):
    from lib_masactrl.fields import parse_args

    assert parse_args({"enabled": True, "strength": value}).strength == 0.25
    assert parse_args({"MasaCtrl": True, "MasaCtrl strength": value}).settings().strength == 0.25
