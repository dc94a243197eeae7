"""Half precision, as the WebUI runs fp16 checkpoints (modules/devices.py: ``autocast``): control
works in float16 and bfloat16 autocast, sources stay bit-identical to plain, masks included."""

from __future__ import annotations

import pytest
import torch
from tiny_unets import make_inputs

from lib_masactrl import MasaCtrlSettings, MaskGuide, StepLayout, attach


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True], ids=["mutual", "word masks"])
def test_control_under_half_precision_autocast(sd15, dtype, masked):
    x, t, context = make_inputs(sd15, 4, 32, 32)
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
    assert torch.equal(out[0], plain[0]) and torch.equal(out[2], plain[2])
    assert not torch.equal(out[1], plain[1])
    assert stats.controlled_calls == 2 * 16  # every layer of both calls
    if masked:
        assert stats.masked_calls >= 1
