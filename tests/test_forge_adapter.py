"""The Forge adapter (``lib_masactrl/forge``) on the Forge stand-in (``tests/forge``): MasaCtrl on a
clone of the pass's U-Net patcher, driven by Forge's own chunked U-Net calls.

Properties, not "it runs": the pass's patcher is never changed; sources are bit-identical to the
same batch without control (same call shapes), in every chunk split and at CFG 1; targets equal an
independent mutual self-attention made with a replace patch written here; strength 0, steps before
the start step and a detached clone are exactly plain; every one of SDXL's 70 layers is reached by
its own key; ControlNet residuals leave the sources' rows when units are narrowed to the targets.
"""

from __future__ import annotations

import ast
import copy
import os
import pathlib
import sys
from types import SimpleNamespace

import pytest
import torch

FORGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge")
if FORGE_DIR not in sys.path:
    sys.path.insert(0, FORGE_DIR)

from backend import attention as forge_attention  # noqa: E402
from backend.sampling import sampling_function  # noqa: E402
from forge_unets import denoise, standin_patcher, text_context  # noqa: E402

from lib_masactrl.fields import ControlNetScope, ScriptArgs  # noqa: E402
from lib_masactrl.forge import model as forge_model  # noqa: E402
from lib_masactrl.forge import sampling as forge_sampling  # noqa: E402
from lib_masactrl.forge import unet as forge_unet  # noqa: E402
from lib_masactrl.layers import LayerMap  # noqa: E402
from lib_masactrl.session import GenerationSession  # noqa: E402
from lib_masactrl.steps import PassSteps  # noqa: E402

LEVELS = (14.6, 7.0, 3.0, 1.0)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_p(patcher, **fields):
    """The parts of a Forge ``p`` the pass hookup reads: the model's ``forge_objects``."""
    return SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher)), **fields)


def controlled_pass(patcher, narrow=False, batch=2, **args):
    """A session with one controlled pass installed the way the adapter installs it; returns the
    fake ``p`` (whose ``forge_objects.unet`` is now the clone) and the session."""
    network = patcher.model.diffusion_model
    settings = {"enabled": True, "start_step": 0, "start_layer": 0, **args}
    session = GenerationSession(ScriptArgs(**settings), batch, network)
    p = fake_p(patcher)
    session.start_pass(network, True, PassSteps.from_levels(LEVELS), masks=None,
                       attacher=forge_sampling.attacher_for(p, session, narrow), rows_needed=narrow)
    return p, session


def inputs(kind="sd15", batch=2, size=16, seed=3):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=generator) * LEVELS[0]
    cond = text_context(kind, batch, seed=seed + 1)
    uncond = text_context(kind, batch, seed=seed + 2)
    return x, cond, uncond


def run(patcher, x, cond, uncond, scale=5.0, level=LEVELS[0]):
    return denoise(patcher, x, level, cond, uncond, scale)


def option_snapshot(patcher):
    return repr(patcher.model_options)


@pytest.fixture
def one_chunk_per_call(monkeypatch):
    monkeypatch.setattr(sampling_function, "MAX_CHUNKS_PER_CALL", 1)


class SwapKeysAndValues:
    """An independent mutual self-attention: in every layer, target row ``i`` of each chunk attends
    with its own queries to the keys and values of the chunk's source row ``reads_from[i]``."""

    def __init__(self, reads_from):
        self.reads_from = reads_from

    def __deepcopy__(self, memo):
        return self

    def __call__(self, q, k, v, extra_options):
        images = len(self.reads_from)
        rows = [row - row % images + (self.reads_from[row % images] if self.reads_from[row % images] is not None
                                      else row % images) for row in range(q.shape[0])]
        return forge_attention.attention_function(q, k[rows], v[rows], extra_options["n_heads"])


def reference_patcher(patcher, reads_from):
    reference = patcher.clone()
    reference.set_model_replace_all(SwapKeysAndValues(reads_from), "attn1")
    return reference


# --- installation --------------------------------------------------------------------------


def test_the_pass_patcher_is_never_changed_and_the_clone_carries_every_patch():
    patcher = standin_patcher()
    before = option_snapshot(patcher)
    p, session = controlled_pass(patcher)
    clone = p.sd_model.forge_objects.unet
    assert clone is not patcher and option_snapshot(patcher) == before
    replaced = clone.model_options["transformer_options"]["patches_replace"]["attn1"]
    assert len(replaced) == 16 and all(isinstance(patch, forge_unet._SelfAttention) for patch in replaced.values())
    assert isinstance(clone.model_options["model_function_wrapper"], forge_unet._CallWrapper)
    again = clone.clone()  # ControlNet and others clone the patcher again: one controller, not a copy
    patch = next(iter(again.model_options["transformer_options"]["patches_replace"]["attn1"].values()))
    assert patch.controller is session.attachment.controller
    session.close()
    assert all(patch.controller is None for patch in replaced.values())


def test_every_sdxl_layer_is_reached_by_its_own_key():
    patcher = standin_patcher("sdxl")
    network = patcher.model.diffusion_model
    keys = [forge_unet.block_key(layer.name) for layer in LayerMap.from_unet(network)]
    assert len(keys) == len(set(keys)) == 70
    seen = []

    def probe(q, k, v, extra_options):
        seen.append((*extra_options["block"], extra_options["block_index"]))
        return forge_attention.attention_function(q, k, v, extra_options["n_heads"])

    probing = patcher.clone()
    probing.set_model_replace_all(probe, "attn1")
    x, cond, uncond = inputs("sdxl", size=16)
    run(probing, x, cond, uncond)
    assert sorted(set(seen)) == sorted(keys)


def test_a_replace_patch_that_was_there_before_does_the_attention():
    patcher = standin_patcher()
    calls = []

    class Earlier:
        def __deepcopy__(self, memo):
            return self

        def __call__(self, q, k, v, extra_options):
            calls.append(q.shape[0])
            return forge_attention.attention_function(q, k, v, extra_options["n_heads"])

    patcher.set_model_replace_all(Earlier(), "attn1")
    p, session = controlled_pass(patcher)
    x, cond, uncond = inputs()
    run(p.sd_model.forge_objects.unet, x, cond, uncond)
    assert calls and session.attachment.controller.stats.controlled_calls > 0
    session.close()


# --- what the images get ---------------------------------------------------------------------


@pytest.mark.parametrize("scale", [5.0, 1.0])
@pytest.mark.parametrize("split", [False, True])
def test_sources_are_bit_identical_and_targets_match_an_independent_mutual_attention(scale, split, monkeypatch):
    if split:
        monkeypatch.setattr(sampling_function, "MAX_CHUNKS_PER_CALL", 1)
    patcher = standin_patcher()
    x, cond, uncond = inputs()
    plain = run(patcher, x, cond, uncond, scale)
    p, session = controlled_pass(patcher)
    controlled = run(p.sd_model.forge_objects.unet, x, cond, uncond, scale)
    stats = session.attachment.controller.stats
    assert stats.unet_calls == (2 if split and scale != 1.0 else 1) and stats.controlled_calls == 16 * stats.unet_calls
    assert torch.equal(controlled[0], plain[0])
    expected = run(reference_patcher(patcher, session.pairing.reads_from), x, cond, uncond, scale)
    torch.testing.assert_close(controlled[1], expected[1], rtol=1e-4, atol=1e-4)
    assert (controlled[1] - plain[1]).abs().mean() > 10 * (controlled[1] - expected[1]).abs().mean()
    session.close()


def test_one_source_sequences_read_the_one_source():
    patcher = standin_patcher()
    x, cond, uncond = inputs(batch=3)
    plain = run(patcher, x, cond, uncond)
    p, session = controlled_pass(patcher, batch=3, layout="one source")
    assert tuple(session.pairing.reads_from) == (None, 0, 0)
    controlled = run(p.sd_model.forge_objects.unet, x, cond, uncond)
    expected = run(reference_patcher(patcher, session.pairing.reads_from), x, cond, uncond)
    assert torch.equal(controlled[0], plain[0])
    torch.testing.assert_close(controlled[1:], expected[1:], rtol=1e-4, atol=1e-4)
    session.close()


def test_and_prompts_give_one_cond_chunk_each(one_chunk_per_call):
    patcher = standin_patcher()
    x, cond, uncond = inputs()
    second = text_context("sd15", 2, seed=11)
    conds = [{"crossattn": cond}, {"crossattn": second, "strength": 0.5}]
    plain = denoise(patcher, x, LEVELS[0], conds, uncond, 5.0)
    p, session = controlled_pass(patcher)
    controlled = denoise(p.sd_model.forge_objects.unet, x, LEVELS[0], conds, uncond, 5.0)
    expected = denoise(reference_patcher(patcher, session.pairing.reads_from), x, LEVELS[0], conds, uncond, 5.0)
    assert torch.equal(controlled[0], plain[0])
    torch.testing.assert_close(controlled[1], expected[1], rtol=1e-4, atol=1e-4)
    session.close()


def test_strength_zero_steps_before_the_start_and_a_detached_clone_are_plain():
    patcher = standin_patcher()
    x, cond, uncond = inputs()
    plain = run(patcher, x, cond, uncond)
    p, session = controlled_pass(patcher, strength=0.0)
    assert torch.equal(run(p.sd_model.forge_objects.unet, x, cond, uncond), plain)
    session.close()
    p, session = controlled_pass(patcher, start_step=2)
    clone = p.sd_model.forge_objects.unet
    assert torch.equal(run(clone, x, cond, uncond, level=LEVELS[1]), run(patcher, x, cond, uncond, level=LEVELS[1]))
    assert not torch.equal(run(clone, x, cond, uncond, level=LEVELS[2]), run(patcher, x, cond, uncond, level=LEVELS[2]))
    session.close()
    assert torch.equal(run(clone, x, cond, uncond), plain)


def test_strength_blends_toward_plain():
    patcher = standin_patcher()
    x, cond, uncond = inputs()
    plain = run(patcher, x, cond, uncond)
    full = {}
    for strength in (1.0, 0.5):
        p, session = controlled_pass(patcher, strength=strength)
        full[strength] = run(p.sd_model.forge_objects.unet, x, cond, uncond)
        session.close()
    assert torch.equal(full[0.5][0], plain[0])
    half, whole = (full[0.5][1] - plain[1]).abs().mean(), (full[1.0][1] - plain[1]).abs().mean()
    assert 0 < half < whole


def test_a_call_that_does_not_fit_the_batch_is_noted_and_runs_plain():
    patcher = standin_patcher()
    p, session = controlled_pass(patcher, batch=4)
    x, cond, uncond = inputs(batch=2)
    assert torch.equal(run(p.sd_model.forge_objects.unet, x, cond, uncond), run(patcher, x, cond, uncond))
    session.close()
    assert any("a U-Net call held 4 rows where MasaCtrl expected 8" in note for note in session.notes)


# --- ControlNet ------------------------------------------------------------------------------


def test_control_residuals_leave_the_sources_rows_when_narrowed_to_targets():
    patcher = standin_patcher()
    p, session = controlled_pass(patcher, narrow=True)
    wrapper = p.sd_model.forge_objects.unet.model_options["model_function_wrapper"]
    residual = torch.ones(4, 3, 2, 2)
    control = {"input": [residual], "middle": [None], "output": [residual * 2]}
    seen = {}

    def apply_model(x, t, **c):
        seen.update(c["control"])
        return x

    x = torch.zeros(4, 4, 8, 8)
    wrapper(apply_model, {"input": x, "timestep": torch.full((4,), LEVELS[0]), "c": {"control": control},
                          "cond_or_uncond": [1, 0]})
    rows = seen["input"][0].flatten(1).mean(1).tolist()
    assert rows == [0.0, 1.0, 0.0, 1.0]  # uncond chunk, then cond chunk: source, target each
    assert seen["output"][0].flatten(1).mean(1).tolist() == [0.0, 2.0, 0.0, 2.0] and seen["middle"] == [None]
    assert control["input"][0] is residual and residual.min() == 1  # ControlNet's own lists are untouched
    session.close()


def test_units_narrow_to_the_targets_by_default_and_per_unit_goes_unit_by_unit():
    assert forge_sampling.narrows_control(ScriptArgs(enabled=True), 2)
    assert not forge_sampling.narrows_control(ScriptArgs(enabled=True), 0)
    assert not forge_sampling.narrows_control(ScriptArgs(enabled=True, controlnet=ControlNetScope.BOTH.value), 2)
    per_unit = ScriptArgs(enabled=True, controlnet=ControlNetScope.PER_UNIT.value, controlnet_units="source, both")
    assert not forge_sampling.narrows_control(per_unit, 2)  # test_forge_controlnet.py: each unit its own rows


# --- models and the host ---------------------------------------------------------------------


def test_a_model_without_a_unet_is_not_taken_for_one():
    patcher = standin_patcher()
    sd = SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher))
    assert forge_model.unet_or_none(sd) is patcher.model.diffusion_model

    class Flux(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.double_blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    flux = SimpleNamespace(forge_objects=SimpleNamespace(unet=SimpleNamespace(model=SimpleNamespace(diffusion_model=Flux()))))
    assert forge_model.unet_or_none(flux) is None
    assert forge_model.unet_or_none(SimpleNamespace()) is None


def test_timestep_samplers_levels_become_the_predictors_sigmas():
    sigmas = torch.linspace(0.03, 14.6, 1000)
    patcher = SimpleNamespace(model=SimpleNamespace(predictor=SimpleNamespace(sigmas=sigmas)))
    p = fake_p(patcher, sampler=SimpleNamespace(get_timesteps=lambda p, steps: None))
    levels = forge_sampling.levels_of(p, PassSteps.from_levels([999.0, 749.0, 499.0, 249.0]))
    assert levels.levels == tuple(float(sigmas[t]) for t in (999, 749, 499, 249))
    k_sampler = fake_p(patcher, sampler=SimpleNamespace(get_sigmas=lambda p, steps: None))
    steps = PassSteps.from_levels(LEVELS)
    assert forge_sampling.levels_of(k_sampler, steps) is steps


def test_the_forge_adapter_imports_only_forges_backend_from_the_host():
    for path in sorted((ROOT / "lib_masactrl" / "forge").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in {"torch", "backend"}, f"{path.name}: {name}"


def test_deep_copies_share_the_installed_objects():
    patcher = standin_patcher()
    p, session = controlled_pass(patcher)
    options = p.sd_model.forge_objects.unet.model_options
    copied = copy.deepcopy(options)
    assert copied["model_function_wrapper"] is options["model_function_wrapper"]
    session.close()
