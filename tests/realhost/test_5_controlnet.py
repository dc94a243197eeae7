"""ControlNet units narrowed by MasaCtrl: to the targets (the paper's setting), to every image, or
unit by unit; and one control map per target of a one-source sequence.

The lab's random canny ControlNet acts mostly through its latent path: its hint path's output is
~1/500 of the latent path's, so what a map holds moves an image by 1e-4 to 1e-3 levels on average
(a square against a cross: 2 of 12288 values change by one level; black against white: 8), while
the unit as a whole moves it by ~5. So the scenarios tell which images a unit acted on by comparing
with runs without it, and a map reaching its own target shows only as targets that are no longer
bit-identical (with the same map twice they are, on the lab's CPU).
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest
from PIL import ImageSequence

from realhost.webui_api import (
    CONTROLLED,
    SOURCE_PROMPT,
    Generation,
    WebUI,
    assert_close,
    assert_different,
    controlnet_unit,
    encode_png,
    frame_count,
    infotext_values,
    masactrl_args,
    masactrl_keyed,
    payload,
    pixels,
)


def square() -> np.ndarray:
    """An edge map such as the canny preprocessor gives: a square's outline."""
    edges = np.zeros((64, 64, 3), np.uint8)
    edges[12:52, [12, 51]] = 255
    edges[[12, 51], 12:52] = 255
    return edges


@pytest.fixture(scope="module")
def unit(controlnet_model: str, no_preprocessor: str) -> Dict[str, object]:
    """One canny unit with the square, without a preprocessor: the map is already an edge map."""
    return controlnet_unit(controlnet_model, encode_png(square()), module=no_preprocessor)


@pytest.fixture(scope="module")
def scopes(webui: WebUI, unit: Dict[str, object]) -> Dict[str, Generation]:
    """One pair per scope; "both" in the keyed form."""
    settings = {"source_prompt": SOURCE_PROMPT, **CONTROLLED}
    made = {
        "targets": webui.generate(payload(masactrl=masactrl_args(controlnet="targets", **settings), controlnet=[unit])),
        "both": webui.generate(payload(masactrl=masactrl_keyed(controlnet="both", **settings), controlnet=[unit])),
    }
    made["source"] = webui.generate(payload(
        masactrl=masactrl_args(controlnet="per unit", controlnet_units="source", **settings), controlnet=[unit]))
    return made


def test_targets_only_leaves_the_source_as_without_controlnet(scopes: Dict[str, Generation],
                                                              mutual_pairs: Generation) -> None:
    assert_close(scopes["targets"].rgb(0), mutual_pairs.rgb(0), "source, unit on the targets vs no unit")
    assert_different(scopes["targets"].rgb(1), mutual_pairs.rgb(1), "target, unit on the targets vs no unit")


def test_both_acts_on_the_source_too(scopes: Dict[str, Generation], mutual_pairs: Generation) -> None:
    assert_different(scopes["both"].rgb(0), mutual_pairs.rgb(0), "source, unit on both vs no unit")


def test_a_unit_given_to_the_source_acts_there_only(scopes: Dict[str, Generation]) -> None:
    """The source is controlled as with "both"; the target is not, though it reads from that source."""
    assert_close(scopes["source"].rgb(0), scopes["both"].rgb(0), "source, unit on the source vs on both")
    assert_different(scopes["source"].rgb(1), scopes["both"].rgb(1), "target, unit on the source vs on both")


def test_controlnet_returns_its_map_after_the_pair(scopes: Dict[str, Generation]) -> None:
    """The pair stays first, so an API client finds the source and target where MasaCtrl says."""
    for generation in scopes.values():
        assert len(generation.images) == 3


@pytest.fixture(scope="module")
def mapped(webui: WebUI, unit: Dict[str, object]) -> Generation:
    """A source and two targets of the main prompt, one map each (the two farthest apart: black and
    white), and a spare map (noted)."""
    black, white = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)
    maps: List[str] = [encode_png(black), encode_png(white), encode_png(square())]
    args = masactrl_args(source_prompt=SOURCE_PROMPT, layout="one source", control_maps=maps, animation="webp",
                         **CONTROLLED)
    return webui.generate(payload(batch_size=3, masactrl=args, controlnet=[unit]))


def test_maps_act_on_the_targets_only(mapped: Generation, sequence: Generation) -> None:
    """Against the sequence without ControlNet: same source, and target 1 (the same prompt there)
    changed by its map's unit."""
    assert_close(mapped.rgb(0), sequence.rgb(0), "source with maps vs without ControlNet")
    assert_different(mapped.rgb(1), sequence.rgb(1), "target 1 with its map vs without ControlNet")


def test_each_target_gets_its_own_map(mapped: Generation) -> None:
    """Same prompt, seed and source: only their maps tell the two targets apart (see the module's
    docstring for why by so little)."""
    assert np.any(mapped.rgb(1) != mapped.rgb(2)), "both targets came out bit-identical: the maps did not reach them"


def test_a_spare_map_is_noted(mapped: Generation) -> None:
    notes = infotext_values(mapped.infotexts[1]).get("MasaCtrl notes", "")
    assert "3 control maps were given for 2 targets" in notes, notes


def test_the_animation_holds_the_targets_exactly(mapped: Generation) -> None:
    """A lossless animation (the API's PNG encoding, or the WebP asked for): frame k is target k,
    level for level. It comes after the images; ControlNet's map comes before it in A1111 and after
    it in Forge, whose ControlNet adds its maps once every script is done."""
    [animation] = [image for image in mapped.images[3:] if frame_count(image) > 1]
    assert animation.format in ("PNG", "WEBP") and frame_count(animation) == 2
    frames = [pixels(frame.copy()) for frame in ImageSequence.Iterator(animation)]
    for number, frame in enumerate(frames, 1):
        assert_close(frame, mapped.rgb(number), f"animation frame {number} vs target {number}")
