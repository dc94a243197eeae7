"""Masks from subject words: the target's subject reads from the source's subject only, which
changes the target against mutual mode and leaves the source alone; a word missing from its
prompt is refused by name."""

from __future__ import annotations

import pytest

from realhost.webui_api import (
    CONTROLLED,
    SOURCE_PROMPT,
    Generation,
    WebUI,
    assert_close,
    assert_different,
    infotext_values,
    masactrl_keyed,
    masactrl_settings,
    payload,
)


@pytest.fixture(scope="module")
def masked(webui: WebUI) -> Generation:
    """Sent in the API's keyed form, with the masks shown."""
    return webui.generate(payload(masactrl=masactrl_keyed(
        source_prompt=SOURCE_PROMPT, mask_mode="subject words", mask_words="corgi", show_masks=True, **CONTROLLED)))


def test_the_source_is_unchanged(masked: Generation, plain_before: Generation) -> None:
    """Equal up to rounding: masked attention runs the targets in calls of their own."""
    assert_close(masked.rgb(0), plain_before.rgb(0), "source with word masks vs the plain run")


def test_the_target_differs_from_mutual_mode(masked: Generation, mutual_pairs: Generation) -> None:
    assert_different(masked.rgb(1), mutual_pairs.rgb(1), "target with word masks vs mutual mode")


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
