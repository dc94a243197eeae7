"""The equations for hosts that project queries, keys and values themselves and hand them over
(WebUI Forge's attention replace patches): the same results as the reference, in every mode,
layout and with masks and strength, and the same as the ldm path up to rounding."""

from __future__ import annotations

from typing import List

import pytest
import torch
from test_engine_attention import LAYOUT_CASES, layout_case, reference, run_calls, stack_inputs
from test_masks import SOURCE_BLOCKS, TARGET_BLOCKS, MaskedReferenceUNet, user_guide
from test_masks import stack_inputs as masked_inputs
from tiny_unets import sd15_unet, to_double

from lib_masactrl import LayerMap, MasaCtrlController, MasaCtrlSettings, StepLayout, attach


@pytest.fixture(scope="module")
def sd15_double():
    return to_double(sd15_unet(seed=0))


def sdpa(heads: int):
    """The host's kernel over (rows, tokens, heads * channels) queries, keys and values."""

    def attend(q, k, v):
        split = [t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v)]
        return torch.nn.functional.scaled_dot_product_attention(*split).transpose(1, 2).flatten(2)

    return attend


class QKVHost:
    """Runs a U-Net as a host that hands MasaCtrl projected q, k and v: every self-attention
    projects them with the layer's own weights and calls :meth:`MasaCtrlController.attention_qkv`
    with its kernel, then its output projection; a pre-hook reports each U-Net call's rows."""

    def __init__(self, unet, settings: MasaCtrlSettings, masks=None) -> None:
        self.unet = unet
        self.layers = LayerMap.from_unet(unet)
        self.controller = MasaCtrlController(settings, settings.schedule(len(self.layers)), masks)
        self.handles: List = []

    def __enter__(self) -> "QKVHost":
        for layer in self.layers:
            attn = layer.attn1

            def forward(x, context=None, mask=None, _attn=attn, _index=layer.index, **kwargs):
                source = x if context is None else context
                q, k, v = _attn.to_q(x), _attn.to_k(source), _attn.to_v(source)
                out = self.controller.attention_qkv(_index, sdpa(_attn.heads), q, k, v)
                return _attn.to_out(out)

            attn.forward = forward
        self.handles.append(self.unet.register_forward_pre_hook(
            lambda module, args: self.controller.begin_unet_call(args[0].shape[0], tuple(args[0].shape[-2:]))))
        return self

    def __exit__(self, *exc_info) -> None:
        for layer in self.layers:
            del layer.attn1.forward
        for handle in self.handles:
            handle.remove()

    def step(self, step, layout, x, t, context, calls):
        self.controller.begin_step(step, layout)
        return run_calls(self.unet, x, t, context, calls)


@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("mode", ["mutual", "union"])
@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_handed_over_qkv_equal_the_reference_in_every_layout(sd15_double, case, mode, strength):
    layout, (x, t, context), calls = layout_case(case)
    expected = reference(sd15_double, layout, x, t, context, range(6, 16), mode == "union", strength)
    settings = MasaCtrlSettings(mode=mode, start_step=0, start_layer=6, strength=strength)
    with QKVHost(sd15_double, settings) as host:
        controlled = host.step(2, layout, x, t, context, calls)
        assert host.controller.notes == [] and host.controller.stats.fallback_rows == 0
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)


def test_handed_over_qkv_with_masks_equal_the_masked_reference(sd15_double):
    layout = StepLayout.cfg((None, 0))
    x, t, context = masked_inputs(layout, dtype=torch.float64)
    layer_map = LayerMap.from_unet(sd15_double)
    with MaskedReferenceUNet([layer_map[i].attn1 for i in range(6, 16)], layout, {0: SOURCE_BLOCKS, 1: TARGET_BLOCKS}):
        expected = run_calls(sd15_double, x, t, context, [(0, 4)])
    from lib_masactrl.masks import MaskState

    with QKVHost(sd15_double, MasaCtrlSettings(start_step=0, start_layer=6)) as host:
        host.controller.masks = MaskState(user_guide())
        controlled = host.step(2, layout, x, t, context, [(0, 2), (2, 4)])
        assert host.controller.stats.masked_calls > 0
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)


def test_the_qkv_path_and_the_context_path_give_the_same_images(sd15):
    """In float32 the two paths differ only by the kernels' rounding; sources stay the plain ones."""
    layout = StepLayout.cfg((None, 0, 0))
    x, t, context = stack_inputs(layout, 16, 16)
    settings = MasaCtrlSettings(mode="union", start_step=0, start_layer=4, strength=0.7)
    with attach(sd15, settings) as attachment:
        attachment.controller.begin_step(1, layout)
        by_context = run_calls(sd15, x, t, context, [(0, 3), (3, 6)])
    with QKVHost(sd15, settings) as host:
        by_qkv = host.step(1, layout, x, t, context, [(0, 3), (3, 6)])
    torch.testing.assert_close(by_qkv, by_context, rtol=1e-4, atol=1e-4)


def test_handed_over_qkv_of_an_unexpected_shape_run_plain_with_one_note(sd15):
    layout = StepLayout.cfg((None, 0))
    controller = MasaCtrlController(MasaCtrlSettings(start_step=0, start_layer=0), MasaCtrlSettings(
        start_step=0, start_layer=0).schedule(16))
    controller.begin_step(0, layout)
    controller.begin_unet_call(4, (8, 8))
    q = torch.randn(3, 64, 16)  # 3 rows where the call has 4
    plain = sdpa(2)(q, q, q)
    for layer in (0, 1):
        assert torch.equal(controller.attention_qkv(layer, sdpa(2), q, q, q), plain)
    assert len(controller.notes) == 1 and "layers 0-1 self-attention received queries" in controller.notes[0]
