"""Editing a real image: the source follows the inversion of the init image back to its latent,
the target is the edit.

With trained weights the source would be the photo as the VAE encodes and decodes it. The lab's
random VAE neither round-trips (decoding its encoding of a photo lands ~40 levels away on
average) nor encodes deterministically: the WebUI samples the encoder's posterior, whose spread
there is ~4x its mean, from torch's global generator, unseeded per request. So the photo cannot
be the reference. What can be shown is the promise behind it: the source ends at the init latent
whatever the edit's schedule. Two edits at different denoising strengths (4 and 3 sampled steps,
different inversions) must give the same source, which a freely denoised source would not. Each
edit follows the same small plain generation, which leaves the global generator in the same state
(seeded by its seed): that pins the encoding. (A refused request would pin it in A1111, but not in
Forge, where a refusal seeds nothing.) Another client generating in between would break the pin:
run the tier against a WebUI nobody else is generating with.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from realhost.webui_api import (
    CONTROLLED,
    SOURCE_PROMPT,
    TARGET_PROMPT,
    Generation,
    WebUI,
    assert_close,
    assert_different,
    encode_png,
    masactrl_args,
    masactrl_settings,
    payload,
)

STRENGTHS = (1.0, 0.5)


def photo() -> str:
    """A blocky test photo: large flat patches a 64x64 latent can hold."""
    rng = np.random.default_rng(7)
    return encode_png(np.kron(rng.integers(30, 225, size=(4, 4, 3)), np.ones((16, 16, 1))))


@pytest.fixture(scope="module")
def edits(webui: WebUI) -> Dict[float, Generation]:
    """One edit per denoising strength, each right after the same plain generation (see the
    module's docstring)."""
    made = {}
    for strength in STRENGTHS:
        webui.generate(payload(batch_size=1, steps=1))
        made[strength] = webui.generate(
            payload(TARGET_PROMPT, masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED),
                    init_images=[photo()], denoising_strength=strength),
            mode="img2img",
        )
    return made


def test_the_source_ends_at_the_init_latent_whatever_the_schedule(edits: Dict[float, Generation]) -> None:
    sources = [edits[strength].rgb(0) for strength in STRENGTHS]
    assert_close(sources[0], sources[1], f"sources of the edits at strengths {STRENGTHS}")


@pytest.mark.parametrize("strength", STRENGTHS)
def test_the_target_is_an_edit(edits: Dict[float, Generation], strength: float) -> None:
    edit = edits[strength]
    assert len(edit.images) == 2, "the reconstruction beside the edit"
    assert_different(edit.rgb(1), edit.rgb(0), "target vs its source")


def test_the_infotext_records_the_inversion(edits: Dict[float, Generation]) -> None:
    """Pasting an edit's parameters must invert again, with the source following."""
    for edit in edits.values():
        for text in edit.infotexts[:2]:
            settings = masactrl_settings(text)
            assert (settings["invert"], settings["follow_inversion"]) == ("True", "True")
