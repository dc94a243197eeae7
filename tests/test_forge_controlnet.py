"""ControlNet units assigned one by one ('per unit') and per-target control maps in WebUI Forge, on
the Forge stand-in's chain of units (tests/forge/backend/patcher/controlnet.py), whose residual is a
constant per unit scaled by each row's hint: the sum a row receives tells which units and hints
acted on it.

Properties: each unit acts on exactly the rows its assignment names, in every chunk of a call and in
the inversion (whose rows are sources); a unit's own per-frame weights are kept, multiplied in and
put back when the pass ends; each target gets its own map and the sources the unit's image; the
assignment list must match the enabled units, and units that do not join the chain are refused
rather than shifting every unit's place.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

FORGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge")
if FORGE_DIR not in sys.path:
    sys.path.insert(0, FORGE_DIR)

from backend.patcher.controlnet import ControlNet  # noqa: E402
from forge_unets import denoise, standin_patcher, text_context  # noqa: E402

from lib_masactrl.controlnet_rows import Assignment  # noqa: E402
from lib_masactrl.fields import ControlNetScope, ScriptArgs  # noqa: E402
from lib_masactrl.forge import sampling as forge_sampling  # noqa: E402
from lib_masactrl.session import GenerationSession  # noqa: E402
from lib_masactrl.settings import SettingsError  # noqa: E402
from lib_masactrl.steps import PassSteps  # noqa: E402

LEVELS = (14.6, 7.0, 3.0, 1.0)
VALUES = (1.0, 10.0, 100.0)


def with_units(patcher, values=VALUES):
    """``patcher`` with one unit per value, applied in order as the built-in ControlNet does."""
    units = [ControlNet(value) for value in values]
    for unit in units:
        patcher.add_patched_controlnet(unit)
    return units


def per_unit_pass(patcher, assignments, batch=2):
    network = patcher.model.diffusion_model
    args = ScriptArgs(enabled=True, start_step=0, start_layer=0, controlnet=ControlNetScope.PER_UNIT.value,
                      controlnet_units=", ".join(assignments))
    session = GenerationSession(args, batch, network)
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher)))
    parsed = forge_sampling.unit_assignments(args, len(assignments))
    session.start_pass(network, True, PassSteps.from_levels(LEVELS), rows_needed=True,
                       attacher=forge_sampling.attacher_for(p, session, False, parsed))
    return p.sd_model.forge_objects.unet, session


def recording(patcher):
    """A clone of ``patcher`` whose U-Net calls record, per call, each row's summed residual."""
    seen = []
    clone = patcher.clone()
    previous = clone.model_options.get("model_function_wrapper")

    def wrapper(apply_model, call):
        residual = call["c"].get("control", {}).get("output", [None])[0]
        seen.append(None if residual is None else residual.flatten().tolist())
        if previous is not None:
            return previous(apply_model, call)
        return apply_model(call["input"], call["timestep"], **call["c"])

    clone.set_model_unet_function_wrapper(wrapper)
    return clone, seen


def compiled_with(units_head, context):
    return [{"crossattn": context, "control": units_head}]


def test_each_unit_acts_on_the_rows_its_assignment_names():
    patcher = standin_patcher()
    units = with_units(patcher)
    clone, session = per_unit_pass(patcher, ["source", "target", "both"])
    watched, seen = recording(clone)
    x = torch.randn(2, 4, 16, 16) * LEVELS[0]
    head = patcher.controlnet_linked_list
    denoise(watched, x, LEVELS[0], compiled_with(head, text_context("sd15", 2, seed=1)),
            compiled_with(head, text_context("sd15", 2, seed=2)), 5.0)
    # one call: the uncond chunk, then the cond chunk, each [source, target]
    assert seen == [[101.0, 110.0, 101.0, 110.0]]
    assert session.attachment.controller.stats.controlled_calls > 0
    session.close()
    assert all(unit.advanced_frame_weighting is None for unit in units)  # put back


def test_in_the_inversion_units_act_as_on_the_sources():
    patcher = standin_patcher()
    with_units(patcher)
    clone, session = per_unit_pass(patcher, ["source", "target", "both"])
    watched, seen = recording(clone)
    head = patcher.controlnet_linked_list
    run = session.inversion_call(lambda x, sigma: denoise(
        watched, x, sigma, compiled_with(head, text_context("sd15", 1, seed=1)), None, 1.0))
    run(torch.randn(1, 4, 16, 16) * LEVELS[1], torch.full((1,), LEVELS[1]))
    assert seen == [[101.0]]
    session.close()


def test_a_units_own_frame_weights_are_kept_and_put_back():
    patcher = standin_patcher()
    units = with_units(patcher, (1.0, 10.0))
    units[1].advanced_frame_weighting = [0.5, 2.0]
    clone, session = per_unit_pass(patcher, ["both", "target"])
    watched, seen = recording(clone)
    head = patcher.controlnet_linked_list
    denoise(watched, torch.randn(2, 4, 16, 16), LEVELS[2], compiled_with(head, text_context("sd15", 2)), None, 1.0)
    assert seen == [[1.0, 21.0]]  # the target gets unit 2 at its own weight 2; the source none of it
    session.close()
    assert units[1].advanced_frame_weighting == [0.5, 2.0] and units[0].advanced_frame_weighting is None


def test_the_assignment_list_must_match_the_enabled_units():
    args = ScriptArgs(enabled=True, controlnet=ControlNetScope.PER_UNIT.value, controlnet_units="source, target")
    assert forge_sampling.unit_assignments(args, 2) == (Assignment.SOURCE, Assignment.TARGET)
    with pytest.raises(SettingsError, match="2 ControlNet assignments .* for 3 enabled ControlNet units"):
        forge_sampling.unit_assignments(args, 3)
    assert forge_sampling.unit_assignments(ScriptArgs(enabled=True), 2) is None
    assert forge_sampling.unit_assignments(args, 0) is None


def test_units_that_do_not_join_the_chain_are_refused_per_unit():
    patcher = standin_patcher()
    with_units(patcher, (1.0, 10.0))
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher)))
    forge_sampling.check_units(p, 2, "'per unit'")
    with pytest.raises(SettingsError, match="'per unit' cannot .* applies 2 of the 3 enabled units"):
        forge_sampling.check_units(p, 3, "'per unit'")


def test_control_maps_give_each_target_its_own_hint_and_the_sources_the_units_image():
    patcher = standin_patcher()
    unit = ControlNet(10.0, hint=torch.full((1, 3, 64, 64), 0.5))
    patcher.add_patched_controlnet(unit)
    network = patcher.model.diffusion_model
    args = ScriptArgs(enabled=True, start_step=0, start_layer=0, layout="one source",
                      controlnet=ControlNetScope.BOTH.value)
    session = GenerationSession(args, 3, network)
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher)))
    black, white = np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)
    maps = forge_sampling.unit_maps(p, session.pairing, args, [black, white], 1)
    session.start_pass(network, True, PassSteps.from_levels(LEVELS), rows_needed=True,
                       attacher=forge_sampling.attacher_for(p, session, False, None, maps))
    watched, seen = recording(p.sd_model.forge_objects.unet)
    head = patcher.controlnet_linked_list
    denoise(watched, torch.randn(3, 4, 8, 8), LEVELS[0], compiled_with(head, text_context("sd15", 3, seed=1)),
            compiled_with(head, text_context("sd15", 3, seed=2)), 5.0)
    assert seen == [[5.0, 0.0, 10.0] * 2]  # the source: the unit's gray image; target 1 black, target 2 white
    invert = session.inversion_call(lambda x, sigma: denoise(
        watched, x, sigma, compiled_with(head, text_context("sd15", 1, seed=1)), None, 1.0))
    invert(torch.randn(1, 4, 8, 8), torch.full((1,), LEVELS[1]))
    assert seen[-1] == [5.0]  # the inversion's row is the source
    session.close()
    assert unit.cond_hint is None  # Forge makes it again from the unit's image


def test_maps_for_a_unit_that_is_not_enabled_are_refused():
    args = ScriptArgs(enabled=True, layout="one source", control_maps_unit=2)
    pairing_session = GenerationSession(args, 3, standin_patcher().model.diffusion_model)
    with pytest.raises(SettingsError, match="unit 2"):
        forge_sampling.unit_maps(SimpleNamespace(), pairing_session.pairing, args, [], 1)
