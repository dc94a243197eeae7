"""The controlled U-Net call is ready for a GPU: after a pass's first step, nothing MasaCtrl does
inside a U-Net call makes a tensor from host data (each would be a host-to-device copy that waits
for the GPU's queue), in every mode, with split calls, masks and ControlNet units. On CPU this is
checked by counting the tensor factories called from the extension's code; with CUDA, a controlled
step also runs under ``torch.cuda.set_sync_debug_mode("error")``."""

from __future__ import annotations

import contextlib
import functools
import pathlib
import sys
from typing import Iterator, List

import pytest
import torch
from test_control_rows import controlnet, models, run, stack_inputs, units  # noqa: F401  (models is a fixture)
from test_masks import user_guide
from tiny_unets import sd15_unet

import lib_masactrl
from lib_masactrl import MasaCtrlSettings, MaskGuide, StepLayout, attach
from lib_masactrl.controlnet_rows import UnitMaps, restrict_units

ENGINE = str(pathlib.Path(lib_masactrl.__file__).resolve().parent)
FACTORIES = [(torch, "tensor"), (torch, "as_tensor"), (torch, "asarray"), (torch, "from_numpy"),
             (torch.Tensor, "new_tensor")]


class HostTensors:
    """Records every call of a tensor factory that takes host data, made from the extension's
    code (any frame of the call stack inside ``lib_masactrl``), while open."""

    def __init__(self) -> None:
        self.calls: List[str] = []
        self.counting = False

    def _wrap(self, owner, name):
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args, **kwargs):
            if self.counting:
                frame = sys._getframe(1)
                while frame is not None:
                    if frame.f_code.co_filename.startswith(ENGINE):
                        self.calls.append(f"{name} from {frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")
                        break
                    frame = frame.f_back
            return original(*args, **kwargs)

        return original, counted

    @contextlib.contextmanager
    def installed(self) -> Iterator["HostTensors"]:
        saved = []
        for owner, name in FACTORIES:
            original, counted = self._wrap(owner, name)
            saved.append((owner, name, original))
            setattr(owner, name, counted)
        try:
            yield self
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)


def steps_after_the_first(unet, attachment, layout, calls, inputs, network=None, steps=3, warm=1) -> List[str]:
    """Run ``steps`` denoiser calls; returns the host-data tensors made after the first ``warm``."""
    recorder = HostTensors()
    with recorder.installed():
        for step in range(steps):
            recorder.counting = step >= warm
            run(unet, layout, calls, inputs, network, attachment.controller, step=step)
    return recorder.calls


SETTINGS = {
    "mutual": dict(mode="mutual"),
    "union": dict(mode="union"),
    "strength 0.5": dict(mode="mutual", strength=0.5),
    "union, strength 0.3": dict(mode="union", strength=0.3),
}
CALLS = {
    "one call": ((None, 0), None, [(0, 4)]),
    "AND prompts in chunks, sources kept for later calls": ((None, 0), (2, 2), [(0, 2), (2, 4), (4, 6)]),
    "one source, three targets": ((None, 0, 0, 0), None, [(0, 3), (3, 8)]),
}


@pytest.mark.parametrize("calls", list(CALLS))
@pytest.mark.parametrize("settings", list(SETTINGS))
def test_controlled_calls_make_no_tensor_from_host_data_after_the_first_step(sd15, settings, calls):
    image_sources, repeats, slices = CALLS[calls]
    layout = StepLayout.cfg(image_sources, cond_repeats=repeats)
    inputs = stack_inputs(layout)
    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=4, **SETTINGS[settings])) as attachment:
        made = steps_after_the_first(sd15, attachment, layout, slices, inputs)
        assert attachment.controller.stats.controlled_calls > 0
    assert made == []


@pytest.mark.parametrize("masks", ["uploaded", "words"])
def test_masked_calls_make_no_tensor_from_host_data_after_the_first_step(sd15, masks):
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    guide = user_guide(size=(8, 8)) if masks == "uploaded" else MaskGuide(token_positions={0: ((3,),), 1: ((4, 5),)})
    settings = MasaCtrlSettings(start_step=0, start_layer=4, strength=0.7)
    # Word masks exist from the second step on (made from the maps of the step before), so the
    # masked row groups, and their indexes, first appear there.
    warm = 1 if masks == "uploaded" else 2
    with attach(sd15, settings, masks=guide) as attachment:
        made = steps_after_the_first(sd15, attachment, layout, [(0, 2), (2, 4)], inputs, steps=warm + 2, warm=warm)
        assert attachment.controller.stats.masked_calls > 0
    assert made == []


def test_controlnet_rows_and_maps_make_no_tensor_from_host_data_after_the_first_step(sd15, models):  # noqa: F811
    layout = StepLayout.cfg((None, 0, 0))
    inputs = stack_inputs(layout)
    params = units(models, [("cn", {}), ("cn2", {})])
    maps = UnitMaps(unit=1, images={1: 0, 2: 1},
                    hint=lambda number, size, like: torch.full((1, 3, *size), 0.2 * (number + 1), dtype=like.dtype))
    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=4)) as attachment:
        with controlnet(sd15, params) as network, restrict_units(network, attachment.controller, ["target", "both"], maps):
            made = steps_after_the_first(sd15, attachment, layout, [(0, 3), (3, 6)], inputs, network)
    assert made == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks that a controlled step never synchronises")
@pytest.mark.parametrize("settings", ["mutual", "union", "strength 0.5", "uploaded masks"])
def test_a_controlled_step_on_cuda_never_synchronises(settings):
    unet = sd15_unet(seed=0).cuda().half()
    layout = StepLayout.cfg((None, 0, 0))
    x, t, context = (tensor.cuda() for tensor in stack_inputs(layout))
    x, context = x.half(), context.half()
    chosen = dict(SETTINGS.get(settings, {}))
    masks = user_guide(size=(8, 8)) if settings == "uploaded masks" else None
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.no_grad():
            unet(x, t, context=context)
    except RuntimeError as error:
        pytest.skip(f"the plain U-Net already synchronises on this machine ({error})")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with attach(unet, MasaCtrlSettings(start_step=0, start_layer=4, **chosen), masks=masks) as attachment:
        for step in range(3):
            attachment.controller.begin_step(step, layout)
            mode = "error" if step > 0 else "default"
            torch.cuda.set_sync_debug_mode(mode)
            try:
                with torch.no_grad():
                    unet(x[:3], t[:3], context=context[:3])
                    unet(x[3:], t[3:], context=context[3:])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        assert attachment.controller.stats.controlled_calls > 0
