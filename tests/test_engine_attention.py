"""What the engine computes, on real ldm U-Nets: control off is plain generation bit for bit,
sources are untouched, and targets equal an independent einsum implementation of the method in
every way the WebUI can call the U-Net."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import pytest
import torch
from engine_helpers import ReferenceUNet, reference_attention
from tiny_unets import sd15_unet, to_double

from lib_masactrl import LayerMap, MasaCtrlSettings, StepLayout, attach

Calls = Sequence[Tuple[int, int]]


def stack_inputs(layout: StepLayout, height: int, width: int, dim: int = 768, seed: int = 3, dtype=torch.float32):
    """Per-row inputs of a CFG stack: each image has its own latent; each row its own text."""
    generator = torch.Generator().manual_seed(seed)
    images = max(row.image for row in layout.rows) + 1
    latents = torch.randn(images, 4, height, width, generator=generator, dtype=dtype)
    x = torch.stack([latents[row.image] for row in layout.rows])
    context = torch.randn(len(layout), 77, dim, generator=generator, dtype=dtype)
    t = torch.full((len(layout),), 600, dtype=torch.long)
    return x, t, context


def run_calls(unet, x, t, context, calls: Calls) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([unet(x[a:b], t[a:b], context=context[a:b]) for a, b in calls])


def run_step(unet, attachment, step: int | None, layout: StepLayout, x, t, context, calls: Calls) -> torch.Tensor:
    attachment.controller.begin_step(step, layout)
    return run_calls(unet, x, t, context, calls)


def reference(unet, layout: StepLayout, x, t, context, layers, union=False, strength=1.0) -> torch.Tensor:
    layer_map = LayerMap.from_unet(unet)
    with ReferenceUNet([layer_map[i].attn1 for i in layers], layout.sources, union, strength):
        return run_calls(unet, x, t, context, [(0, len(layout))])


@pytest.fixture(scope="module")
def sd15_double():
    return to_double(sd15_unet(seed=0))


# --- control off --------------------------------------------------------------------------


def test_steps_before_the_start_step_are_bit_identical(sd15):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 16, 16)
    plain = run_calls(sd15, x, t, context, [(0, 4)])
    with attach(sd15, MasaCtrlSettings(start_step=4), total_steps=10) as attachment:
        for step in range(4):
            assert torch.equal(run_step(sd15, attachment, step, layout, x, t, context, [(0, 4)]), plain)
        assert not torch.equal(run_step(sd15, attachment, 4, layout, x, t, context, [(0, 4)]), plain)


def test_layouts_without_targets_or_without_a_step_are_bit_identical(sd15):
    layout = StepLayout.cfg((None, None))
    x, t, context = stack_inputs(layout, 16, 16)
    plain = run_calls(sd15, x, t, context, [(0, 4)])
    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=0)) as attachment:
        assert torch.equal(run_step(sd15, attachment, 5, layout, x, t, context, [(0, 4)]), plain)
        assert torch.equal(run_step(sd15, attachment, None, StepLayout.cfg((None, 0)), x, t, context, [(0, 4)]), plain)
        assert torch.equal(run_step(sd15, attachment, 5, None, x, t, context, [(0, 4)]), plain)


def test_layers_outside_the_range_are_bit_identical(sd15):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 16, 16)
    layer_map = LayerMap.from_unet(sd15)

    def attn1_outputs(attachment=None):
        outputs: List[torch.Tensor] = []
        handles = [layer.attn1.register_forward_hook(lambda m, a, out: outputs.append(out)) for layer in layer_map]
        try:
            if attachment is None:
                run_calls(sd15, x, t, context, [(0, 4)])
            else:
                run_step(sd15, attachment, 0, layout, x, t, context, [(0, 4)])
        finally:
            for handle in handles:
                handle.remove()
        return outputs

    plain = attn1_outputs()
    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=12)) as attachment:
        controlled = attn1_outputs(attachment)
    for index in range(12):
        assert torch.equal(controlled[index], plain[index])
    assert not torch.equal(controlled[12][1], plain[12][1])
    assert torch.equal(controlled[12][0], plain[12][0])


# --- sources and targets --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["mutual", "union"])
def test_source_rows_are_unchanged_by_control(sd15, mode):
    layout = StepLayout.cfg((None, None, 0, 1))
    x, t, context = stack_inputs(layout, 16, 16)
    plain = run_calls(sd15, x, t, context, [(0, 8)])
    with attach(sd15, MasaCtrlSettings(mode=mode, start_step=0, start_layer=0)) as attachment:
        controlled = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 8)])
    sources = [0, 1, 4, 5]
    torch.testing.assert_close(controlled[sources], plain[sources], rtol=0, atol=1e-5)
    if mode == "mutual":
        assert torch.equal(controlled[sources], plain[sources])
    assert (controlled[[2, 3, 6, 7]] - plain[[2, 3, 6, 7]]).abs().max() > 1e-4


# Each case: image sources, AND repeats, uncond rows present, latent size, and the U-Net calls the
# WebUI makes for that stack (sd_samplers_cfg_denoiser.py, CFGDenoiser.forward).
LAYOUT_CASES = {
    "one call": ((None, 0), None, True, (16, 16), [(0, 4)]),
    "cond and uncond split": ((None, 0), None, True, (16, 16), [(0, 2), (2, 4)]),
    "uncond skipped": ((None, 0), None, False, (16, 16), [(0, 2)]),
    "AND prompts in chunks": ((None, 0), (2, 2), True, (16, 16), [(0, 2), (2, 4), (4, 6)]),
    "AND prompts, different token lengths": ((None, 0), (2, 1), True, (16, 16), [(0, 3), (3, 5)]),
    "one source, several targets": ((None, 0, 0), None, True, (16, 16), [(0, 6)]),
    "two pairs, uneven chunks": ((None, None, 0, 1), None, True, (16, 16), [(0, 3), (3, 4), (4, 8)]),
    "non-square latent": ((None, 0), None, True, (40, 24), [(0, 2), (2, 4)]),
}


def layout_case(case: str):
    """One of :data:`LAYOUT_CASES` in float64: its layout, the stack's inputs and the U-Net calls."""
    image_sources, repeats, uncond, (height, width), calls = LAYOUT_CASES[case]
    layout = StepLayout.cfg(image_sources, cond_repeats=repeats, uncond=uncond)
    return layout, stack_inputs(layout, height, width, dtype=torch.float64), calls


@pytest.mark.parametrize("mode", ["mutual", "union"])
@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_targets_equal_the_reference_in_every_layout(sd15_double, case, mode):
    layout, (x, t, context), calls = layout_case(case)
    layers = range(6, 16)
    expected = reference(sd15_double, layout, x, t, context, layers, union=mode == "union")
    with attach(sd15_double, MasaCtrlSettings(mode=mode, start_step=0, start_layer=6)) as attachment:
        controlled = run_step(sd15_double, attachment, 2, layout, x, t, context, calls)
        assert attachment.controller.notes == []
        assert attachment.controller.stats.fallback_rows == 0
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)


def test_sdxl_targets_equal_the_reference_and_sources_are_unchanged(sdxl):
    sdxl_double = to_double(sdxl)
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 8, 8, dim=2048, dtype=torch.float64)
    plain = run_calls(sdxl_double, x, t, context, [(0, 4)])
    expected = reference(sdxl_double, layout, x, t, context, range(44, 70))
    with attach(sdxl_double, MasaCtrlSettings(start_step=0, start_layer=44)) as attachment:
        assert len(attachment.layer_map) == 70
        controlled = run_step(sdxl_double, attachment, 0, layout, x, t, context, [(0, 4)])
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)
    assert torch.equal(controlled[[0, 2]], plain[[0, 2]])


# --- unusual callers ----------------------------------------------------------------------------


class BlockForwardPatch:
    """Replaces ``BasicTransformerBlock._forward`` per instance, as ControlNet and token merging
    do, with a version that changes what attn1 receives; removed on exit."""

    def __init__(self, blocks, attn1_call):
        self.blocks = list(blocks)
        self.attn1_call = attn1_call

    def __enter__(self):
        for block in self.blocks:
            def _forward(x, context=None, _block=block):
                x = self.attn1_call(_block, _block.norm1(x)) + x
                x = _block.attn2(_block.norm2(x), context=context) + x
                return _block.ff(_block.norm3(x)) + x
            block._forward = _forward
        return self

    def __exit__(self, *exc_info):
        for block in self.blocks:
            del block._forward


def reference_only_attn1(block, hidden):
    """ControlNet reference-only style: attn1 reads an explicit context that appends extra tokens."""
    extra = torch.roll(hidden, shifts=1, dims=1)[:, :7] * 0.5
    return block.attn1(hidden, context=torch.cat([hidden, extra], dim=1))


def token_merging_attn1(block, hidden):
    """Token-merging style: attn1 sees half the tokens, so N != H*W."""
    merged = (hidden[:, 0::2] + hidden[:, 1::2]) / 2
    return block.attn1(merged).repeat_interleave(2, dim=1)


@pytest.mark.parametrize("attn1_call", [reference_only_attn1, token_merging_attn1])
@pytest.mark.parametrize("mode", ["mutual", "union"])
def test_unusual_callers_equal_the_reference(sd15_double, attn1_call, mode):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 16, 16, dtype=torch.float64)
    blocks = [layer.block for layer in LayerMap.from_unet(sd15_double)]
    with BlockForwardPatch(blocks, attn1_call):
        expected = reference(sd15_double, layout, x, t, context, range(16), union=mode == "union")
        with attach(sd15_double, MasaCtrlSettings(mode=mode, start_step=0, start_layer=0)) as attachment:
            controlled = run_step(sd15_double, attachment, 0, layout, x, t, context, [(0, 2), (2, 4)])
            assert attachment.controller.notes == []
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)


def test_a_batch_reshaped_by_another_extension_runs_plain_with_one_note(sd15):
    def whole_batch_as_one_row(block, hidden):
        rows = hidden.shape[0]
        out = block.attn1(hidden.reshape(1, -1, hidden.shape[-1]))
        return out.reshape(rows, -1, hidden.shape[-1])

    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 8, 8)
    blocks = [layer.block for layer in LayerMap.from_unet(sd15)]
    with BlockForwardPatch(blocks, whole_batch_as_one_row):
        plain = run_calls(sd15, x, t, context, [(0, 4)])
        with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=15)) as attachment:
            controlled = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 4)])
            run_step(sd15, attachment, 1, layout, x, t, context, [(0, 4)])
            notes = list(attachment.controller.notes)
    assert torch.equal(controlled, plain)
    assert notes == [
        "layer 15 self-attention saw 1 rows where the U-Net call had 4 (another extension reshapes the batch); "
        "that layer ran without MasaCtrl"
    ]


def test_a_problem_in_every_controlled_layer_is_noted_once_naming_the_layers(sd15):
    """ControlNet's StyleAlign reshapes the batch in every block: one note, not one per layer."""

    def whole_batch_as_one_row(block, hidden):
        rows = hidden.shape[0]
        return block.attn1(hidden.reshape(1, -1, hidden.shape[-1])).reshape(rows, -1, hidden.shape[-1])

    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 8, 8)
    blocks = [layer.block for layer in LayerMap.from_unet(sd15)]
    with BlockForwardPatch(blocks, whole_batch_as_one_row):
        with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=3, layers=(3, 10, 11, 12, 13, 14, 15))) as attachment:
            run_step(sd15, attachment, 0, layout, x, t, context, [(0, 2), (2, 4)])
            notes = list(attachment.controller.notes)
    assert notes == [
        "layers 3, 10-15 self-attention saw 1 rows where the U-Net call had 2 (another extension reshapes the batch); "
        "those layers ran without MasaCtrl"
    ]


def test_sgm_additional_tokens_run_plain_with_a_note(sdxl):
    layer = LayerMap.from_unet(sdxl)[50]
    hidden = torch.randn(2, 16, layer.attn1.to_q.in_features)
    tokens = torch.randn(2, 3, layer.attn1.to_q.in_features)
    with torch.no_grad():
        plain = layer.attn1(hidden, additional_tokens=tokens)
        with attach(sdxl, MasaCtrlSettings(start_step=0, start_layer=44)) as attachment:
            attachment.controller.begin_step(0, StepLayout.cfg((None, 0), uncond=False))
            attachment.controller.begin_unet_call(2)
            controlled = layer.attn1(hidden, additional_tokens=tokens, n_times_crossframe_attn_in_self=0)
            neutral = layer.attn1(hidden, additional_tokens=None, n_times_crossframe_attn_in_self=0)
            notes = list(attachment.controller.notes)
    assert torch.equal(controlled, plain)
    assert notes == ["layer 50 self-attention was called with extra inputs (additional_tokens); that layer ran without MasaCtrl"]
    torch.testing.assert_close(neutral, reference_attention(layer.attn1, hidden, None, [None, 0], union=False))


# --- pairs split across U-Net calls ------------------------------------------------------------


def test_sources_from_an_earlier_call_are_kept_for_the_step_and_then_dropped(sd15):
    layout = StepLayout.cfg((None, 0), cond_repeats=(2, 2))
    x, t, context = stack_inputs(layout, 8, 8)
    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=10)) as attachment:
        together = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 6)])
        assert attachment.controller._kept == {}
        chunked = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 2), (2, 4), (4, 6)])
        kept = attachment.controller._kept
        assert sorted(kept) == [(layer, row) for layer in range(10, 16) for row in (0, 1)]
        attachment.controller.begin_step(1, layout)
        assert attachment.controller._kept == {}
        assert attachment.controller.notes == []
    torch.testing.assert_close(chunked, together, rtol=0, atol=1e-5)


def test_a_source_that_comes_after_its_target_falls_back_to_plain_once(sd15):
    layout = StepLayout.cfg((1, None), uncond=False)
    x, t, context = stack_inputs(layout, 8, 8)
    plain = run_calls(sd15, x, t, context, [(0, 1), (1, 2)])
    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=14)) as attachment:
        controlled = run_step(sd15, attachment, 0, layout, x, t, context, [(0, 1), (1, 2)])
        run_step(sd15, attachment, 1, layout, x, t, context, [(0, 1), (1, 2)])
        notes = attachment.controller.notes
        assert attachment.controller.stats.fallback_rows == 4
    assert torch.equal(controlled, plain)
    assert notes == [
        "the source of row 0 had not been computed when the row ran at step 0, layer 14; "
        "it used plain self-attention there"
    ]


def test_a_call_that_does_not_fit_the_layout_runs_plain_with_a_note(sd15):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, 8, 8)
    plain = run_calls(sd15, x, t, context, [(0, 4)])
    with attach(sd15, MasaCtrlSettings(start_step=0)) as attachment:
        attachment.controller.begin_step(0, layout)
        run_calls(sd15, x, t, context, [(0, 4)])
        extra = run_calls(sd15, x, t, context, [(0, 4)])
        assert attachment.controller.notes == [
            "a U-Net call with 4 rows did not fit the 4 rows of step 0; that call ran without MasaCtrl"
        ]
    assert torch.equal(extra, plain)
