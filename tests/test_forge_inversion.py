"""Real-image editing and refiners in WebUI Forge (lib_masactrl/forge/inversion.py, the session's
per-image denoiser call) on the Forge stand-in (tests/forge).

Properties: the inversion's denoiser is the model's own evaluation of the sources' prompt; inside a
controlled pass its calls are never controlled and ControlNet narrowed to the targets stays off
them; image conditioning goes in only where it fits the latent; the ControlNet chain is asked on
every call and prepared and cleaned up around the inversion; a whole edit, Forge's way (the
denoiser callback's per-image ``x``, then the chunked U-Net calls), keeps the source on its
trajectory, ends it at the inverted latent and edits the target; and after a refiner switch the
new model's patcher carries MasaCtrl while the first model's patches are inert.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch

FORGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge")
if FORGE_DIR not in sys.path:
    sys.path.insert(0, FORGE_DIR)

from backend.sampling import sampling_function  # noqa: E402
from forge_unets import denoise, standin_patcher, text_context  # noqa: E402

from lib_masactrl.fields import ScriptArgs  # noqa: E402
from lib_masactrl.forge import inversion as forge_inversion  # noqa: E402
from lib_masactrl.forge import sampling as forge_sampling  # noqa: E402
from lib_masactrl.inversion import invert  # noqa: E402
from lib_masactrl.session import GenerationSession  # noqa: E402
from lib_masactrl.steps import PassSteps  # noqa: E402

LEVELS = (14.6, 7.0, 3.0, 1.0)
SIGMA_MIN = 0.0292


def edit_session(patcher, batch=2, narrow=False, **args):
    """A session whose controlled pass is installed on a clone of ``patcher`` the adapter's way;
    returns the clone and the session."""
    network = patcher.model.diffusion_model
    session = GenerationSession(ScriptArgs(**{"enabled": True, "start_step": 0, "start_layer": 0, **args}), batch,
                                network)
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=patcher)))
    session.start_pass(network, True, PassSteps.from_levels(LEVELS), attacher=forge_sampling.attacher_for(
        p, session, narrow), rows_needed=narrow)
    return p.sd_model.forge_objects.unet, session


def levels(rows, level):
    return torch.full((rows,), float(level))


def latent(rows=1, seed=4, size=16):
    return torch.randn(rows, 4, size, size, generator=torch.Generator().manual_seed(seed))


class Chain:
    """A ControlNet chain that adds nothing: records its calls, answers empty residual lists."""

    previous_controlnet = None

    def __init__(self):
        self.calls = []

    def get_control(self, x, timesteps, c, chunks):
        self.calls.append(x.shape[0])
        return {"input": [], "middle": [], "output": []}

    def pre_run(self, model):
        self.calls.append("pre_run")

    def cleanup(self):
        self.calls.append("cleanup")


def test_the_inversion_denoiser_is_the_models_own_evaluation_of_the_prompt():
    patcher = standin_patcher()
    cond = text_context("sd15", 1, seed=8)
    x = latent() * 3.0
    own = forge_inversion.denoiser(patcher, cond, None)(x, levels(1, 3.0))
    assert torch.equal(own, denoise(patcher, x, 3.0, cond, None, 1.0))


def test_inversion_calls_in_a_controlled_pass_are_never_controlled():
    patcher = standin_patcher()
    clone, session = edit_session(patcher)
    controller = session.attachment.controller
    cond = text_context("sd15", 1, seed=8)
    x = latent() * 7.0
    inverted = session.inversion_call(forge_inversion.denoiser(clone, cond, None))(x, levels(1, LEVELS[1]))
    assert torch.equal(inverted, forge_inversion.denoiser(patcher, cond, None)(x, levels(1, LEVELS[1])))
    assert controller.stats.controlled_calls == 0 and not session.inverting
    assert not session.notes  # not taken for a step of the pass whose rows did not fit
    pair = torch.cat([x, latent(seed=5) * 7.0])
    denoise(clone, pair, LEVELS[1], text_context("sd15", 2, seed=9), None, 1.0)
    assert controller.stats.controlled_calls > 0  # the pass's own steps are controlled again
    session.close()


@pytest.mark.parametrize("narrow", [True, False])
def test_controlnet_narrowed_to_the_targets_stays_off_the_inversion(narrow):
    clone, session = edit_session(standin_patcher(), narrow=narrow)
    wrapper = clone.model_options["model_function_wrapper"]
    residual = torch.ones(2, 3, 2, 2)
    seen = {}

    def apply_model(x, t, **c):
        seen.update(c["control"])
        return x

    def call(x, sigma):  # two source rows: as many rows as the batch has images
        return wrapper(apply_model, {"input": x, "timestep": sigma, "c": {"control": {"input": [residual]}},
                                     "cond_or_uncond": [0]})

    session.inversion_call(call)(torch.zeros(2, 4, 8, 8), levels(2, LEVELS[0]))
    expected = [0.0, 0.0] if narrow else [1.0, 1.0]
    assert seen["input"][0].flatten(1).mean(1).tolist() == expected
    session.close()


@pytest.mark.parametrize("spatial, fits", [((16, 16), True), ((1, 1), False)])
def test_image_conditioning_goes_in_only_where_it_fits_the_latent(spatial, fits):
    patcher = standin_patcher()
    recording = patcher.clone()
    seen = []

    def wrapper(apply_model, call):
        c = dict(call["c"])
        concat = c.pop("c_concat", None)
        seen.append(None if concat is None else tuple(concat.shape))
        return apply_model(call["input"], call["timestep"], **c)

    recording.set_model_unet_function_wrapper(wrapper)
    image = torch.zeros(1, 5, *spatial)
    forge_inversion.denoiser(recording, text_context("sd15", 1), image)(latent(), levels(1, 3.0))
    assert seen == [(1, 5, 16, 16) if fits else None]


def test_the_control_chain_is_asked_on_every_call_and_prepared_around_the_inversion(monkeypatch):
    monkeypatch.setattr(sampling_function, "EVENTS", [])
    patcher = standin_patcher()
    chain = Chain()
    patcher.controlnet_linked_list = chain
    denoise_source = forge_inversion.denoiser(patcher, text_context("sd15", 1), None)
    with forge_inversion.sampling_ready(patcher, latent()):
        denoise_source(latent(), levels(1, 3.0))
        denoise_source(latent(), levels(1, 1.0))
    assert chain.calls == ["pre_run", 1, 1, "cleanup"]
    with pytest.raises(RuntimeError), forge_inversion.sampling_ready(patcher, latent()):
        raise RuntimeError("the inversion failed")
    assert [event for event, _ in sampling_function.EVENTS] == ["prepare", "cleanup", "prepare", "cleanup"]


def test_the_per_image_denoiser_call_puts_the_sources_on_their_trajectory():
    clone, session = edit_session(standin_patcher(), batch=4)
    source = forge_inversion.denoiser(clone, text_context("sd15", 2, seed=8), None)
    sigmas = torch.tensor([*LEVELS, 0.0])
    x0 = latent(2)
    trajectory = invert(x0, sigmas, session.inversion_call(source), SIGMA_MIN)
    x = latent(4, seed=6)
    network = clone.model.diffusion_model
    assert session.images_call(network, LEVELS[2], x) is x  # no trajectory to follow yet
    session.follow_trajectory(trajectory, {0: 0, 1: 1})
    anchored = session.images_call(network, LEVELS[2], x)
    assert torch.equal(anchored[:2], trajectory.at(LEVELS[2])) and torch.equal(anchored[2:], x[2:])
    assert session.images_call(network, LEVELS[2], x[:3]) is not None
    assert any("held 3 images" in note for note in session.notes)
    session.close()


def sample_an_edit(patcher, x, cond, uncond, before=lambda level, x: x, scale=5.0):
    """Euler along LEVELS to 0 the way Forge's CFG denoiser runs each step: the denoiser callback on
    the per-image ``x`` (``before``), then the chunked U-Net calls, then the step."""
    for level, lower in zip(LEVELS, (*LEVELS[1:], 0.0)):
        denoised = denoise(patcher, before(level, x), level, cond, uncond, scale)
        x = x + (x - denoised) / level * (lower - level)
    return x


def test_an_edit_keeps_the_source_on_its_trajectory_and_ends_it_at_the_init_latent():
    patcher = standin_patcher()
    clone, session = edit_session(patcher)
    source_prompt, uncond = text_context("sd15", 1, seed=8), text_context("sd15", 2, seed=10)
    x0 = latent()
    trajectory = invert(x0, torch.tensor([*LEVELS, 0.0]),
                        session.inversion_call(forge_inversion.denoiser(clone, source_prompt, None)), SIGMA_MIN)
    session.follow_trajectory(trajectory, {0: 0})
    start = trajectory.start.expand(2, -1, -1, -1).clone()
    cond = torch.cat([source_prompt, text_context("sd15", 1, seed=11)])
    network = clone.model.diffusion_model
    edited = session.finished_latents(sample_an_edit(
        clone, start, cond, uncond, lambda level, x: session.images_call(network, level, x)))
    assert torch.equal(edited[0], x0[0])
    plain = sample_an_edit(patcher, start, cond, uncond)  # the pass's own patcher: no MasaCtrl
    assert session.attachment.controller.stats.controlled_calls > 0
    assert (edited[1] - plain[1]).abs().mean() > 1e-2  # the target read its source
    session.close()


def test_sdxl_conditioning_brings_its_pooled_output_as_y():
    patcher = standin_patcher("sdxl")
    recording = patcher.clone()
    seen = {}

    def wrapper(apply_model, call):
        seen.update(call["c"])
        return apply_model(call["input"], call["timestep"], **call["c"])

    recording.set_model_unet_function_wrapper(wrapper)
    context, pooled = text_context("sdxl", 1, seed=3), torch.randn(1, 2816)
    forge_inversion.denoiser(recording, {"crossattn": context, "vector": pooled}, None)(latent(), levels(1, 3.0))
    assert torch.equal(seen["c_crossattn"], context) and torch.equal(seen["y"], pooled)


def test_after_a_refiner_switch_the_new_models_patcher_carries_masactrl():
    first, refiner = standin_patcher(seed=0), standin_patcher(seed=1)
    network = first.model.diffusion_model
    session = GenerationSession(ScriptArgs(enabled=True, start_step=0, start_layer=0), 2, network)
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=first)))
    session.start_pass(network, True, PassSteps.from_levels(LEVELS), attacher=forge_sampling.attacher_for(p, session, False))
    replaced = p.sd_model.forge_objects.unet
    p.sd_model = SimpleNamespace(forge_objects=SimpleNamespace(unet=refiner))  # what apply_refiner loads
    x = latent(2) * LEVELS[1]
    assert session.images_call(refiner.model.diffusion_model, LEVELS[1], x) is x
    followed = p.sd_model.forge_objects.unet
    assert followed is not refiner and "model_function_wrapper" not in refiner.model_options
    assert replaced.model_options["model_function_wrapper"].listener is None  # the first model's patches are inert
    assert any("refiner" in note for note in session.notes)
    denoise(followed, x, LEVELS[1], text_context("sd15", 2, seed=9), None, 1.0)
    assert session.attachment.unet is refiner.model.diffusion_model
    assert session.attachment.controller.stats.controlled_calls > 0
    session.close()
