"""Strength: how much of the source a target takes. At 1 the engine does exactly what it did
before strength existed, at 0 the targets are plain, and in between every target row is the
float64 reference's blend of controlled and own self-attention, in every mode and layout; the
sources never change."""

from __future__ import annotations

from typing import List

import pytest
import torch
from test_engine_attention import layout_case, reference, run_calls, run_step, stack_inputs
from test_masks import user_guide
from tiny_unets import sd15_unet, to_double

from lib_masactrl import LayerMap, MasaCtrlSettings, StepLayout, attach


@pytest.fixture(scope="module")
def sd15_double():
    return to_double(sd15_unet(seed=0))


class CountedAttention:
    """Counts the rows of every call of the host's attn1 forward (the class method that
    MasaCtrl's per-instance forward hands calls to), restored on exit."""

    def __init__(self, unet) -> None:
        self.attn_class = type(LayerMap.from_unet(unet)[0].attn1)
        self.rows: List[int] = []

    def __enter__(self) -> "CountedAttention":
        self.original = self.attn_class.__dict__["forward"]
        original = self.original

        def forward(module, x, *args, **kwargs):
            self.rows.append(x.shape[0])
            return original(module, x, *args, **kwargs)

        self.attn_class.forward = forward
        return self

    def __exit__(self, *exc_info) -> None:
        self.attn_class.forward = self.original


@pytest.mark.parametrize("mode", ["mutual", "union"])
def test_strength_one_is_the_control_as_before_with_no_extra_call(sd15, mode):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 16, 16)
    outputs, calls = {}, {}
    for strength in (None, 1.0):
        settings = MasaCtrlSettings(mode=mode, start_step=0, start_layer=4)
        if strength is not None:
            settings = MasaCtrlSettings(mode=mode, start_step=0, start_layer=4, strength=strength)
        with attach(sd15, settings) as attachment, CountedAttention(sd15) as counted:
            outputs[strength] = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 4)])
        calls[strength] = counted.rows
    assert torch.equal(outputs[1.0], outputs[None])
    assert calls[1.0] == calls[None]


@pytest.mark.parametrize("mode", ["mutual", "union", "masks"])
def test_strength_zero_is_a_plain_run_bit_for_bit(sd15, mode):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 16, 16)
    plain = run_calls(sd15, x, t, context, [(0, 4)])
    masks = user_guide(size=(16, 16)) if mode == "masks" else None
    settings = MasaCtrlSettings(mode="mutual" if mode == "masks" else mode, start_step=0, start_layer=0, strength=0)
    with attach(sd15, settings, masks=masks) as attachment:
        zero = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 4)])
        assert attachment.controller.stats.controlled_calls > 0  # the pass counts as controlled: no false note
    assert torch.equal(zero, plain)


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.8])
@pytest.mark.parametrize("mode", ["mutual", "union"])
@pytest.mark.parametrize("case", ["one call", "cond and uncond split", "AND prompts, different token lengths",
                                  "one source, several targets", "two pairs, uneven chunks"])
def test_targets_equal_the_float64_blend_in_every_layout(sd15_double, case, mode, strength):
    layout, (x, t, context), calls = layout_case(case)
    expected = reference(sd15_double, layout, x, t, context, range(6, 16), mode == "union", strength)
    settings = MasaCtrlSettings(mode=mode, start_step=0, start_layer=6, strength=strength)
    with attach(sd15_double, settings) as attachment:
        controlled = run_step(sd15_double, attachment, 2, layout, x, t, context, calls)
        assert attachment.controller.notes == []
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)


def test_strength_moves_targets_between_plain_and_full_control(sd15_double):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 16, 16, dtype=torch.float64)
    plain = run_calls(sd15_double, x, t, context, [(0, 4)])
    distances = []
    for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
        with attach(sd15_double, MasaCtrlSettings(start_step=0, start_layer=0, strength=strength)) as attachment:
            out = run_step(sd15_double, attachment, 0, layout, x, t, context, [(0, 4)])
        assert torch.equal(out[[0, 2]], plain[[0, 2]])  # sources: the whole-batch call, untouched
        distances.append(float((out[[1, 3]] - plain[[1, 3]]).abs().mean()))
    assert distances[0] == 0
    assert distances == sorted(distances) and distances[-1] > 0


@pytest.mark.parametrize("mode", ["mutual", "union"])
def test_strength_below_one_costs_one_call_over_the_target_rows(sd15, mode):
    layout = StepLayout.cfg((None, None, 0, 1))
    x, t, context = stack_inputs(layout, 16, 16)
    layers = 16 - 10
    rows = {}
    for strength in (1.0, 0.5):
        settings = MasaCtrlSettings(mode=mode, start_step=0, start_layer=10, strength=strength)
        with attach(sd15, settings) as attachment, CountedAttention(sd15) as counted:
            run_step(sd15, attachment, 0, layout, x, t, context, [(0, 8)])
        rows[strength] = counted.rows
    extra = list(rows[0.5])
    for count in rows[1.0]:
        extra.remove(count)
    assert extra == [4] * layers  # the 2 target images' cond and uncond rows, once per controlled layer


def test_strength_is_validated():
    for bad in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            MasaCtrlSettings(strength=bad)
