"""Mask-guided control end to end in the stand-in WebUI (tests/webui): masks from subject words
found with the loaded model's tokenizer, uploaded masks, previews in the gallery, errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from engine_helpers import module_state
from PIL import Image
from refusals import ui_refusal

from lib_masactrl.fields import FIELDS

SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"


def masactrl(**values):
    """The accordion's values in UI order, with MasaCtrl on and ``values`` changed."""
    changed = {"enabled": True, "source_prompt": SOURCE, "start_step": 1, **values}
    return {"MasaCtrl": [changed.get(field.name, field.default) for field in FIELDS]}


def generate(host, **values):
    return host.txt2img(TARGET, steps=4, width=64, height=64, batch_size=2, seed=7, script_args=masactrl(**values))


def half_mask(left: bool) -> Image.Image:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, slice(0, 32) if left else slice(32, 64)] = 255
    return Image.fromarray(mask, "L")


def test_subject_word_masks_are_used_and_shown_with_labels(host, sd15):
    before = module_state(sd15)
    plain = generate(host, start_step=1)
    masked = generate(host, mask_mode="subject words", mask_words="corgi", show_masks=True)
    first = masked.index_of_first_image
    assert len(masked.images) - first == 2 + 2
    from modules.infotext_utils import parse_generation_parameters

    previews = [parse_generation_parameters(info) for info in masked.infotexts[first + 2:]]
    assert [info["MasaCtrl mask"] for info in previews] == ["source 1, step 3", "target 2, step 3"]
    assert all(str(info["Seed"]) == "7" for info in previews), previews  # the gallery's Save button reads it
    assert masked.images[first + 2].size == (64, 64)
    # masked control computes the source rows in a smaller attention call: rounding only
    torch.testing.assert_close(masked.standin_latents[0], plain.standin_latents[0], rtol=1e-5, atol=3e-4)
    assert not torch.equal(masked.standin_latents[1], plain.standin_latents[1])
    assert "MasaCtrl source subject: corgi" in masked.infotexts[first]
    values = host.script_values_from_infotext(masked.infotexts[first], "MasaCtrl")
    assert values[13:18] == ["subject words", "corgi", "", 0.1, True]
    assert module_state(sd15) == before


def test_a_word_missing_from_its_prompt_stops_with_the_word_and_the_prompt(host, sd15):
    before = module_state(sd15)
    message = ui_refusal(generate(host, mask_mode="subject words", mask_words="corgi", mask_target_words="cat"))
    assert f"subject word 'cat' is not in the target prompt '{TARGET}'" in message
    assert module_state(sd15) == before


def test_uploaded_masks_from_the_ui_and_the_api(host):
    ui = generate(host, mask_mode="uploaded masks", source_mask=half_mask(True), target_mask=half_mask(False),
                  show_masks=True)
    first = ui.index_of_first_image
    source_preview = np.asarray(ui.images[first + 2])
    assert source_preview[:, :32].min() == 255 and source_preview[:, 32:].max() == 0

    def encoded(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    args = masactrl(mask_mode="uploaded masks", source_mask=encoded(half_mask(True)), target_mask=encoded(half_mask(False)))
    payload = {"prompt": TARGET, "steps": 4, "width": 64, "height": 64, "batch_size": 2, "seed": 7,
               "alwayson_scripts": {"MasaCtrl": {"args": args["MasaCtrl"]}}}
    status, body = host.api_txt2img(payload)
    assert status == 200 and len(body["images"]) == 2
    args["MasaCtrl"][FIELDS.index(next(f for f in FIELDS if f.name == "source_mask"))] = "not an image"
    status, body = host.api_txt2img({**payload, "alwayson_scripts": {"MasaCtrl": {"args": args["MasaCtrl"]}}})
    assert status == 422 and "a mask given as text must be a base64-encoded image" in body["detail"]


def test_emphasis_long_prompts_and_non_square_sizes(host):
    long_target = "(corgi:1.3) running, " + ", ".join(["on the sunny beach"] * 20)
    processed = host.txt2img(
        long_target, steps=4, width=128, height=64, batch_size=2, seed=7,
        script_args=masactrl(mask_mode="subject words", mask_words="corgi", show_masks=True),
    )
    first = processed.index_of_first_image
    assert "MasaCtrl: " not in processed.comments
    assert [image.size for image in processed.images[first + 2:]] == [(128, 64), (128, 64)]


def test_strokes_drawn_on_an_uploaded_picture_are_the_mask(host):
    """gradio's sketch tool sends the uploaded picture and the strokes; the strokes are the mask."""
    from lib_masactrl.webui.masks import mask_array as to_mask

    picture = Image.fromarray(np.full((64, 64), 200, dtype=np.uint8), "L")
    strokes = np.zeros((64, 64, 3), dtype=np.uint8)
    strokes[10:20, 10:20] = 255
    mask = to_mask({"image": picture, "mask": Image.fromarray(strokes)})
    assert mask.shape == (64, 64) and mask[15, 15] == 1 and mask[40, 40] == 0
    untouched = to_mask({"image": picture, "mask": Image.fromarray(np.zeros_like(strokes))})
    assert np.allclose(untouched, 200 / 255)
