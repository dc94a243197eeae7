"""Batch layouts: which stack row each target reads from, for every way the WebUI stacks rows."""

import pytest

from lib_masactrl import COND, UNCOND, LayoutError, Row, StepLayout, pair_halves


def test_pair_halves_pairs_first_half_with_second():
    assert pair_halves(2) == (None, 0)
    assert pair_halves(6) == (None, None, None, 0, 1, 2)


@pytest.mark.parametrize("size", [0, 1, 3, 5])
def test_pair_halves_refuses_odd_or_single_batches(size):
    with pytest.raises(LayoutError, match=f"even batch size of at least 2 .*the batch size is {size}"):
        pair_halves(size)


def test_cfg_stack_is_cond_rows_then_uncond_rows():
    layout = StepLayout.cfg(pair_halves(4))
    assert layout.rows == (
        Row(0, COND), Row(1, COND), Row(2, COND), Row(3, COND),
        Row(0, UNCOND), Row(1, UNCOND), Row(2, UNCOND), Row(3, UNCOND),
    )
    assert layout.sources == (None, None, 0, 1, None, None, 4, 5)


def test_uncond_rows_can_be_absent():
    assert StepLayout.cfg((None, 0), uncond=False).sources == (None, 0)


def test_and_prompts_pair_sub_prompts_in_order_and_fall_back_to_the_last():
    layout = StepLayout.cfg((None, 0), cond_repeats=(2, 3))
    assert layout.rows[:5] == (Row(0, COND, 0), Row(0, COND, 1), Row(1, COND, 0), Row(1, COND, 1), Row(1, COND, 2))
    assert layout.sources == (None, None, 0, 1, 1, None, 5)


def test_one_source_many_targets():
    assert StepLayout.cfg((None, 0, 0)).sources == (None, 0, 0, None, 3, 3)


@pytest.mark.parametrize(
    "sources, message",
    [
        ((None, 5), "image 1 reads from image 5, which is not in the batch of 2"),
        ((0, None), "image 0 cannot be its own source"),
        ((None, 0, 1), "image 2 reads from image 1, which is itself a target"),
    ],
)
def test_impossible_pairings_are_refused(sources, message):
    with pytest.raises(LayoutError, match=message):
        StepLayout.cfg(sources)


def test_repeat_count_must_match_images():
    with pytest.raises(LayoutError, match="2 cond repeat counts given for 3 images"):
        StepLayout.cfg((None, 0, 0), cond_repeats=(1, 1))


def test_call_plans_slice_the_stack_and_keep_sources_read_later():
    layout = StepLayout.cfg((None, 0), cond_repeats=(2, 2))
    first = layout.plan(0, 2)
    assert first.sources == (None, None) and first.keep == (0, 1) and not first.has_targets
    second = layout.plan(2, 4)
    assert second.sources == (0, 1) and second.keep == () and second.has_targets
    uncond = layout.plan(4, 6)
    assert uncond.sources == (None, 4) and uncond.keep == ()
    assert layout.plan(0, 6).keep == ()


def test_plans_outside_the_stack_are_refused():
    with pytest.raises(LayoutError, match="rows 2..4 are not in this step's 4 rows"):
        StepLayout.cfg((None, 0)).plan(2, 5)


def test_chunked_calls_read_from_the_source_row_of_the_same_chunk():
    """WebUI Forge: each chunk holds every image; uncond first when they share a call."""
    layout = StepLayout.chunks(pair_halves(4), [UNCOND, COND])
    assert layout.rows == (
        Row(0, UNCOND), Row(1, UNCOND), Row(2, UNCOND), Row(3, UNCOND),
        Row(0, COND), Row(1, COND), Row(2, COND), Row(3, COND),
    )
    assert layout.sources == (None, None, 0, 1, None, None, 4, 5)
    and_prompts = StepLayout.chunks((None, 0, 0), [UNCOND, COND, COND])
    assert [row.sub for row in and_prompts.rows] == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert and_prompts.sources == (None, 0, 0, None, 3, 3, None, 6, 6)
    assert StepLayout.chunks((None, 0), [COND]).sources == (None, 0)


def test_chunked_layouts_check_their_sources_and_groups():
    with pytest.raises(LayoutError, match="is itself a target"):
        StepLayout.chunks((None, 0, 1), [COND])
    with pytest.raises(LayoutError, match="neither cond nor uncond"):
        StepLayout.chunks((None, 0), ["negative"])
