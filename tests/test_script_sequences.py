"""One source, many targets: the one-source layout, target prompts and the animation, end to end
in the stand-in WebUI. (Control maps for ControlNet are tested with the ControlNet stand-in, in
tests/test_script_controlnet.py.)"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from engine_helpers import module_state
from PIL import Image
from refusals import ui_refusal
from webui_reference import engine_reference

SOURCE = "a knight in red armour standing"
MAIN = "a knight in red armour"
WALK = ["a knight in red armour, walking, left foot forward", "a knight in red armour, walking, feet together",
        "a knight in red armour, walking, right foot forward", "a knight in red armour, kneeling",
        "a knight in red armour, jumping", "a knight in red armour, sitting"]


def masactrl(**values):
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, "source_prompt": SOURCE, "start_step": 1, "start_layer": 0, "layout": "one source",
               **values}
    return {"MasaCtrl": [changed.get(field.name, field.default) for field in FIELDS]}


def generate(host, batch_size=4, n_iter=1, seed=11, **values):
    return host.txt2img(MAIN, steps=4, width=64, height=64, batch_size=batch_size, n_iter=n_iter, seed=seed,
                        negative_prompt="blurry", script_args=masactrl(**values))


def test_one_source_and_three_targets_on_its_seed_read_its_keys_and_values(host, sd15):
    from lib_masactrl import MasaCtrlSettings

    before = module_state(sd15)
    processed = generate(host, sampler_name="Euler")
    first = processed.index_of_first_image
    assert processed.all_prompts == [SOURCE, MAIN, MAIN, MAIN] and processed.all_seeds == [11] * 4
    assert processed.all_subseeds == [processed.all_subseeds[0]] * 4
    reference = engine_reference((None, 0, 0, 0), [SOURCE, MAIN, MAIN, MAIN], [11] * 4,
                                 MasaCtrlSettings(start_step=1, start_layer=0), negative_prompt="blurry")
    assert torch.equal(processed.standin_latents, reference)
    assert "MasaCtrl layout: one source" in processed.infotexts[first]
    assert module_state(sd15) == before


def test_batch_count_continues_the_sequence_with_the_same_source_shown_once(host):
    processed = generate(host, n_iter=2, target_prompts="\n".join(WALK), animation="none")
    first = processed.index_of_first_image
    assert processed.all_prompts == [SOURCE, *WALK]
    assert processed.all_seeds == [11] * 7
    assert [text.split("\n")[0] for text in processed.infotexts[first:]] == [SOURCE, *WALK]
    assert len(processed.images) - first == 7 and processed.standin_latents.shape[0] == 7
    every = generate(host, n_iter=2, target_prompts="\n".join(WALK), animation="none", show_every_source=True)
    assert len(every.images) - every.index_of_first_image == 8 and every.all_prompts[4] == SOURCE
    latents = every.standin_latents
    assert torch.equal(latents[4], latents[0])  # the same source, batch after batch
    assert torch.equal(latents[[1, 2, 3, 5, 6, 7]], processed.standin_latents[1:])


def test_target_prompts_reach_their_rows_and_the_negative_prompt_the_uncond_rows(host):
    from modules import script_callbacks, shared

    conds = []

    def record(params):
        conds.append((params.text_cond, params.text_uncond))

    script_callbacks.on_cfg_denoiser(record, name="test_conds")
    try:
        generate(host, target_prompts="\n".join(WALK[:3]))
    finally:
        script_callbacks.remove_callbacks_for_function(record)
    text_cond, text_uncond = conds[0]
    for row, prompt in enumerate([SOURCE, *WALK[:3]]):
        torch.testing.assert_close(text_cond[row], shared.sd_model.get_learned_conditioning([prompt])[0])
    negative = shared.sd_model.get_learned_conditioning(["blurry"])[0]
    assert all(torch.equal(text_uncond[row], negative) for row in range(4))


@pytest.mark.parametrize("lines, message", [
    (WALK[:2], "2 target prompts were given for the 3 targets of this generation"),
    (WALK[:4], "4 target prompts were given for the 3 targets"),
])
def test_a_wrong_number_of_target_prompts_stops_with_the_counts(host, sd15, lines, message):
    before = module_state(sd15)
    assert message in ui_refusal(generate(host, target_prompts="\n".join(lines)))
    assert module_state(sd15) == before


def test_one_line_goes_to_every_target_and_pairs_take_target_prompts_too(host):
    processed = generate(host, target_prompts="a knight in red armour, running")
    assert processed.all_prompts == [SOURCE] + ["a knight in red armour, running"] * 3
    pairs = generate(host, layout="pairs", target_prompts=f"{WALK[0]}\n{WALK[1]}")
    assert pairs.all_prompts == [SOURCE, SOURCE, WALK[0], WALK[1]]
    assert pairs.all_seeds == [11, 12, 11, 12]


def frames_of(animation):
    frames = []
    for index in range(animation.n_frames):
        animation.seek(index)
        frames.append(np.asarray(animation.convert("RGB")).copy())
    return frames


def encoded(image, fmt):
    """What a save of ``image`` in ``fmt`` writes (the WebUI's saving, the gallery's cache, the API)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_the_animation_has_the_targets_pixels_in_order_and_is_saved(host):
    from modules import images

    processed = generate(host, n_iter=2, target_prompts="\n".join(WALK), fps=4)
    first = processed.index_of_first_image
    animation = processed.images[-1]
    assert isinstance(animation, Image.Image)
    targets = [np.asarray(image.convert("RGB")) for image in processed.images[first + 1:first + 7]]
    for fmt in ("WEBP", "PNG"):
        with encoded(animation, fmt) as saved:
            assert saved.n_frames == 6
            assert all(np.array_equal(frame, target) for frame, target in zip(frames_of(saved), targets))
    assert processed.infotexts[-1].startswith(processed.infotexts[first + 1])
    [(image, info, where)] = [entry for entry in images.saved_images if entry[2]["suffix"] == "-masactrl-animation"]
    assert image is animation and info == processed.infotexts[-1] and where["seed"] == 11
    gif = generate(host, animation="gif", fps=4, target_prompts="\n".join(WALK[:3]))
    with encoded(gif.images[-1], "GIF") as saved:
        assert saved.format == "GIF" and saved.n_frames == 3 and saved.info["duration"] == 250


def test_the_api_returns_the_animation_as_its_last_image(host):
    from lib_masactrl.fields import FIELDS

    values = {"enabled": True, "source_prompt": SOURCE, "layout": "one source", "start_step": 1,
              "target_prompts": "\n".join(WALK[:2])}
    status, body = host.api_txt2img({
        "prompt": MAIN, "steps": 4, "width": 64, "height": 64, "batch_size": 3, "seed": 5,
        "alwayson_scripts": {"MasaCtrl": {"args": [values.get(field.name, field.default) for field in FIELDS]}},
    })
    assert status == 200, body
    assert len(body["images"]) == 4
    with Image.open(io.BytesIO(base64.b64decode(body["images"][-1]))) as animation:
        assert animation.format == "PNG" and animation.n_frames == 2  # the API encodes images as (animated) PNG
        targets = [np.asarray(Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")) for image in body["images"][1:3]]
        assert all(np.array_equal(frame, target) for frame, target in zip(frames_of(animation), targets))
    assert len(json.loads(body["info"])["infotexts"]) == 4


def test_pasting_a_targets_parameters_restores_its_prompt_and_the_sequence(host):
    processed = generate(host, target_prompts="\n".join(WALK[:3]), source_prompt="", animation="none")
    first = processed.index_of_first_image
    target_info = processed.infotexts[first + 2]
    updates = host.paste_infotext(target_info)
    prompts = [update["value"] for component, update in updates
               if getattr(component, "elem_id", "") == "txt2img_prompt" and isinstance(update, dict)]
    assert prompts == [WALK[1]]
    from lib_masactrl.fields import FIELD_NAMES

    values = host.script_values_from_infotext(target_info, "MasaCtrl")
    assert values[FIELD_NAMES.index("target_prompts")] == "\n".join(WALK[:3])
    assert values[FIELD_NAMES.index("layout")] == "one source"
    # the source prompt was empty (the main prompt): the infotext holds it as used
    assert values[FIELD_NAMES.index("source_prompt")] == MAIN


@pytest.mark.parametrize("values", [{"mode": "union"}, {"mask_mode": "subject words", "mask_words": "knight"}],
                         ids=["union", "word masks"])
def test_union_and_masks_work_with_several_targets_per_source(host, values):
    processed = generate(host, **values, animation="none")
    assert "MasaCtrl: " not in processed.comments
    assert torch.isfinite(processed.standin_latents).all()
