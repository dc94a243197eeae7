"""Half precision, as the WebUI runs fp16 checkpoints (modules/devices.py: ``autocast``): control
works in float16 and bfloat16 autocast and leaves the sources as plain generation makes them: bit
for bit in mutual mode, where they run in the call that holds the whole batch, and up to the
rounding of a smaller call with masks, which compute the masked targets apart."""

from __future__ import annotations

import pytest
import torch
from tiny_unets import make_inputs

from lib_masactrl import MasaCtrlSettings, MaskGuide, StepLayout, attach


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True], ids=["mutual", "word masks"])
def test_control_under_half_precision_autocast(sd15, dtype, masked):
    x, t, context = make_inputs(sd15, 4, 24, 24)
    layout = StepLayout.cfg((None, 0))
    settings = MasaCtrlSettings(start_step=0, start_layer=0, mask_words="subject" if masked else "")
    guide = MaskGuide(token_positions={0: ((3, 4),), 1: ((3, 4),)}) if masked else None
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        plain = sd15(x, t, context=context)
        with attach(sd15, settings, masks=guide) as attachment:
            for step in range(2):  # masks use the maps of the previous call
                attachment.controller.begin_step(step, layout)
                out = sd15(x, t, context=context)
            stats = attachment.controller.stats
    assert out.dtype == dtype and torch.isfinite(out).all()
    sources = out[[0, 2]].float()
    if masked:
        # a few units in the last place of the half-precision type, at the output's magnitude
        rounding = 8 * torch.finfo(dtype).eps * plain.float().abs().max().item()
        torch.testing.assert_close(sources, plain[[0, 2]].float(), rtol=0, atol=rounding)
        # on this tiny U-Net the masked target moves by about that much: that it was controlled
        # is read from the engine's counts below, its values are checked in float64 in test_masks
    else:
        assert torch.equal(sources, plain[[0, 2]].float())
        assert not torch.equal(out[1], plain[1])
    assert stats.controlled_calls == 2 * 16  # every layer of both calls
    if masked:
        assert stats.masked_calls >= 1
