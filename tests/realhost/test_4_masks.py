"""Masks from subject words and from uploaded mask images: the target's subject reads from the
source's subject only, which changes the target against mutual mode and leaves the source alone;
a word missing from its prompt is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from realhost.webui_api import (
    CONTROLLED,
    SOURCE_PROMPT,
    Generation,
    WebUI,
    assert_close,
    assert_different,
    encode_png,
    infotext_values,
    is_sdxl,
    masactrl_args,
    masactrl_keyed,
    masactrl_settings,
    payload,
    plain_sources_payload,
)

SDXL_SIZE = {"width": 128, "height": 128}
"""SDXL attends at 1/8, 1/16 and 1/32 of the image, so at 64 pixels its word maps are 4x4 and 2x2
cells: too coarse to part a subject from its background. At 128 pixels they are 8x8 and 4x4."""


@pytest.fixture(scope="module")
def size(plain_before: Generation) -> dict:
    """The scenario's image size: the session's, or for SDXL :data:`SDXL_SIZE`."""
    return dict(SDXL_SIZE) if is_sdxl(plain_before) else {}


@pytest.fixture(scope="module")
def masked(webui: WebUI, size: dict) -> Generation:
    """Sent in the API's keyed form, with the masks shown."""
    return webui.generate(payload(masactrl=masactrl_keyed(
        source_prompt=SOURCE_PROMPT, mask_mode="subject words", mask_words="corgi", show_masks=True, **CONTROLLED),
        **size))


@pytest.fixture(scope="module")
def plain_at_size(webui: WebUI, size: dict, plain_before: Generation) -> Generation:
    return webui.generate({**plain_sources_payload(), **size}) if size else plain_before


@pytest.fixture(scope="module")
def mutual_at_size(webui: WebUI, size: dict, mutual_pairs: Generation) -> Generation:
    if not size:
        return mutual_pairs
    return webui.generate(payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED), **size))


def test_the_source_is_unchanged(masked: Generation, plain_at_size: Generation) -> None:
    """Equal up to rounding: masked attention runs the targets in calls of their own."""
    assert_close(masked.rgb(0), plain_at_size.rgb(0), "source with word masks vs the plain run")


def test_the_target_differs_from_mutual_mode(masked: Generation, mutual_at_size: Generation) -> None:
    assert_different(masked.rgb(1), mutual_at_size.rgb(1), "target with word masks vs mutual mode")


def test_the_masks_used_come_after_the_images(masked: Generation) -> None:
    """Show masks adds one greyscale mask per image, each labelled in its infotext."""
    assert len(masked.images) == 4
    assert [image.mode for image in masked.images[2:]] == ["L", "L"]
    labels = [infotext_values(text).get("MasaCtrl mask", "") for text in masked.infotexts[2:4]]
    assert [label.split(",")[0] for label in labels] == ["source 1", "target 2"], labels
    assert masactrl_settings(masked.infotexts[1])["mask_words"] == "corgi"


def test_a_missing_word_is_refused_naming_it(serving: WebUI) -> None:
    reply = serving.refusal(payload(masactrl=masactrl_keyed(
        source_prompt=SOURCE_PROMPT, mask_mode="subject words", mask_words="giraffe", **CONTROLLED)))
    assert "giraffe" in reply.message and SOURCE_PROMPT in reply.message, reply.message


def half(left: bool, size: int) -> str:
    """A mask image, white on one half: the source's subject on the left, the target's on the right."""
    mask = np.zeros((size, size, 3), np.uint8)
    mask[:, slice(0, size // 2) if left else slice(size // 2, size)] = 255
    return encode_png(mask)


@pytest.fixture(scope="module")
def uploaded(webui: WebUI, size: dict) -> Generation:
    side = size.get("width", 64)
    return webui.generate(payload(masactrl=masactrl_keyed(
        source_prompt=SOURCE_PROMPT, mask_mode="uploaded masks", source_mask=half(True, side),
        target_mask=half(False, side), show_masks=True, **CONTROLLED), **size))


def test_uploaded_masks_steer_the_target_and_are_shown_as_given(uploaded: Generation, plain_at_size: Generation,
                                                                mutual_at_size: Generation) -> None:
    assert_close(uploaded.rgb(0), plain_at_size.rgb(0), "source with uploaded masks vs the plain run")
    assert_different(uploaded.rgb(1), mutual_at_size.rgb(1), "target with uploaded masks vs mutual mode")
    source_mask, target_mask = (np.asarray(image.convert("L")) for image in uploaded.images[2:4])
    middle = source_mask.shape[1] // 2
    assert source_mask[:, :middle].min() == 255 and source_mask[:, middle:].max() == 0
    assert target_mask[:, :middle].max() == 0 and target_mask[:, middle:].min() == 255
