"""One source, many targets: each target follows its own prompt line and reads from the one
source, and the sequence comes back as an animation after the images."""

from __future__ import annotations

import numpy as np
from PIL import ImageSequence

from realhost.webui_api import (
    SEED,
    SEQUENCE_LINES,
    SOURCE_PROMPT,
    Generation,
    assert_close,
    assert_different,
    frame_count,
    infotext_prompt,
    infotext_values,
    mean_difference,
    pixels,
)


def test_the_source_is_the_plain_image_of_its_prompt_and_seed(sequence: Generation, plain_before: Generation) -> None:
    """A batch of three against a plain batch of two: equal up to rounding, not bit for bit."""
    assert_close(sequence.rgb(0), plain_before.rgb(0), "sequence source vs the plain run")


def test_every_target_has_its_own_line_and_the_sources_seed(sequence: Generation) -> None:
    """Target k gets line k; all share the source's seed, so the lines alone tell them apart."""
    prompts = [infotext_prompt(text) for text in sequence.infotexts[:3]]
    assert prompts == [SOURCE_PROMPT, *SEQUENCE_LINES]
    assert [infotext_values(text)["Seed"] for text in sequence.infotexts[:3]] == [str(SEED)] * 3
    assert_different(sequence.rgb(1), sequence.rgb(2), "target 1 vs target 2")


def test_the_first_target_is_the_target_of_a_pair(sequence: Generation, mutual_pairs: Generation) -> None:
    """Target 1 has the pair's target prompt, seed and source: one source saves rows, it must not
    change what a target reads."""
    assert SEQUENCE_LINES[0] == infotext_prompt(mutual_pairs.infotexts[1])
    assert_close(sequence.rgb(1), mutual_pairs.rgb(1), "sequence target 1 vs the pair's target")


def test_the_animation_comes_last_with_one_frame_per_target(sequence: Generation) -> None:
    """The animation is the response's last image, encoded as the API encodes every image (an
    animated PNG with the default samples format; saved to disk it is the GIF asked for); its
    frames are matched to the target each is nearest to, which also holds for a palette GIF."""
    assert len(sequence.images) == 4, "source, two targets and the animation"
    animation = sequence.images[-1]
    assert animation.format in ("PNG", "GIF") and frame_count(animation) == 2
    frames = [pixels(frame.copy()) for frame in ImageSequence.Iterator(animation)]
    targets = [sequence.rgb(1), sequence.rgb(2)]
    for number, frame in enumerate(frames):
        distances = [mean_difference(frame, target) for target in targets]
        assert int(np.argmin(distances)) == number, f"frame {number + 1} is nearest to target {np.argmin(distances) + 1}"
