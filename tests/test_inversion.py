"""Inversion for real-image editing, checked against k-diffusion's own Euler sampler and an
independent DDIM-inversion formula, on the real ldm U-Net (tiny, seeded weights) wrapped as the
WebUI wraps SD models: an eps-model inside ``k_diffusion.external.CompVisDenoiser``."""

from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import pytest
import torch
from k_diffusion.external import CompVisDenoiser
from k_diffusion.sampling import sample_euler
from tiny_unets import to_double

from lib_masactrl.inversion import InversionInterrupted, InversionLevel, Trajectory, classifier_free, invert
from lib_masactrl.inversion_cache import InversionCache, InversionKey, invert_cached, tensor_digest


class LatentDiffusionStandIn:
    """What ``CompVisDenoiser`` reads of an ldm ``LatentDiffusion``: SD1's ``alphas_cumprod``
    (linear-in-sqrt betas, 1000 steps) and ``apply_model(x, t, cond)`` returning eps."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype) -> None:
        self.unet = unet
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).to(dtype)

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps=t, context=cond)


def model_wrap(unet: torch.nn.Module, dtype: torch.dtype) -> CompVisDenoiser:
    return CompVisDenoiser(LatentDiffusionStandIn(unet, dtype))


def denoiser(wrap: CompVisDenoiser, context: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The callable a host builds: the sampler's model wrapper closed over the conditioning."""
    return lambda x, sigma: wrap(x, sigma, cond=context)


def euler(wrap: CompVisDenoiser, x: torch.Tensor, sigmas: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    return sample_euler(wrap, x, sigmas, extra_args={"cond": context}, disable=True)


def img2img_schedule(sigmas: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
    """``sigma_sched`` as the WebUI cuts it (``img2img_fix_steps`` off):
    ``sd_samplers_common.setup_img2img_steps`` and ``KDiffusionSampler.sample_img2img``."""
    t_enc = int(min(strength, 0.999) * steps)
    return sigmas[steps - t_enc - 1 :]


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return ((x - reference).norm() / reference.norm()).item()


def randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """A few hundred small U-Net calls: on a shared two-core machine, two threads per call are
    several times slower than one (measured 0.05 s against 0.26-0.38 s per call under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wrap32(sd15) -> CompVisDenoiser:
    return model_wrap(sd15, torch.float32)


@pytest.fixture(scope="module")
def wrap64(sd15) -> CompVisDenoiser:
    return model_wrap(to_double(sd15), torch.float64)


@pytest.fixture(scope="module")
def latent() -> Tuple[torch.Tensor, torch.Tensor]:
    """A latent the size of a 64x64 image and a short text context."""
    return randn(1, 4, 8, 8, seed=3), randn(1, 4, 768, seed=4)


@pytest.fixture(scope="module")
def reconstructions(wrap32, latent) -> dict:
    """Full-strength inversion then Euler denoising along the same schedule, per step count."""
    x0, context = latent
    results = {}
    for steps in (10, 20, 50):
        sigmas = wrap32.get_sigmas(steps)
        start = invert(x0, sigmas, denoiser(wrap32, context), float(wrap32.sigmas[0])).start
        results[steps] = euler(wrap32, start, sigmas, context)
    return results


# --- reconstruction ----------------------------------------------------------------------------


def test_inversion_then_euler_reconstructs_the_latent_better_with_more_steps(reconstructions, latent):
    x0, _ = latent
    errors = {steps: relative_error(result, x0) for steps, result in reconstructions.items()}
    assert errors[10] > errors[20] > errors[50]
    # First order in the step size, like the Euler step itself: measured 0.245, 0.118, 0.046.
    assert errors[50] < errors[10] / 4
    # Measured 0.0464 at 50 steps (relative L2 error); the bound leaves about 40% margin. The
    # untrained U-Net's eps varies far more with x than a trained model's, so on SD the
    # reconstruction is tighter than this.
    assert errors[50] < 0.065


def test_inversion_is_far_closer_than_img2img_from_random_noise(reconstructions, wrap32, latent):
    x0, context = latent
    sigmas = wrap32.get_sigmas(20)
    from_noise = euler(wrap32, x0 + randn(*x0.shape, seed=5) * sigmas[0], sigmas, context)
    # Measured: 0.118 after inversion against 17.3 from random noise (the untrained model's
    # denoised output is far from any latent); a factor of 20 is a conservative floor.
    assert relative_error(reconstructions[20], x0) * 20 < relative_error(from_noise, x0)


# --- the DDIM formula --------------------------------------------------------------------------


def ddim_inversion_reference(
    eps_model: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """DDIM inversion (eta 0) in alphas_cumprod form, walking ``timesteps`` upwards, returned in
    k-diffusion's scale ``x_k = x_ddim / sqrt(a)``.

    Each step reads eps at the current timestep t:
    ``x_next = sqrt(a_next) * (x - sqrt(1 - a) * eps) / sqrt(a) + sqrt(1 - a_next) * eps``.
    The clean latent is the k-diffusion sampler's end point, sigma 0, i.e. ``a = 1``; its eps is
    read at timestep 0, where the model sees it as a timestep-0 latent, ``sqrt(a_0) * x0``."""
    a = torch.tensor(1.0, dtype=x0.dtype)
    x = x0
    eps = eps_model(alphas_cumprod[0].sqrt() * x0, 0)
    for i, t_next in enumerate(timesteps):
        if i > 0:
            eps = eps_model(x, timesteps[i - 1])
        a_next = alphas_cumprod[t_next]
        x = a_next.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a_next).sqrt() * eps
        a = a_next
    return x / a.sqrt()


def ddim_next_step_reference(
    eps_model: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """DDIM inversion as the official MasaCtrl code and null-text inversion write it: each step
    reads eps on the current latent at the *next* timestep,
    ``x_next = sqrt(a_next) * (x - sqrt(1 - a) * eps) / sqrt(a) + sqrt(1 - a_next) * eps`` with
    ``eps = eps_model(x, t_next)``, starting from the clean latent (``a = 1``). Returned in
    k-diffusion's scale."""
    a = torch.tensor(1.0, dtype=x0.dtype)
    x = x0
    for t_next in timesteps:
        eps = eps_model(x, t_next)
        a_next = alphas_cumprod[t_next]
        x = a_next.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a_next).sqrt() * eps
        a = a_next
    return x / a.sqrt()


def test_next_level_inversion_equals_ddim_inversions_next_step(wrap64, latent):
    x0, context = (t.double() for t in latent)
    timesteps, sigmas = ddim_schedule(wrap64, 10)
    trajectory = invert(x0, sigmas, denoiser(wrap64, context), float(wrap64.sigmas[0]), reads=InversionLevel.NEXT)
    reference = ddim_next_step_reference(
        unet_eps(wrap64.inner_model.unet, context), x0, timesteps, wrap64.inner_model.alphas_cumprod
    )
    torch.testing.assert_close(trajectory.start, reference, rtol=0, atol=1e-10)
    # the trajectory: the clean latent at level 0, then one latent per level of the schedule
    assert trajectory.levels == tuple(sigmas.flip(0).tolist()) and trajectory.latents.shape == (11, 1, 4, 8, 8)
    assert torch.equal(trajectory.clean, x0) and torch.equal(trajectory.latents[-1], trajectory.start)


def test_a_trajectory_between_its_levels_is_the_walks_straight_line():
    latents = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 1, 4, 2, 2).clone()
    trajectory = Trajectory((0.0, 1.0, 3.0), latents)
    assert torch.equal(trajectory.at(1.0), latents[1]) and torch.equal(trajectory.at(1.0 + 1e-7), latents[1])
    torch.testing.assert_close(trajectory.at(2.0), torch.full((1, 4, 2, 2), 1.5))
    torch.testing.assert_close(trajectory.at(0.25), torch.full((1, 4, 2, 2), 0.25))
    assert torch.equal(trajectory.at(5.0), latents[-1]) and torch.equal(trajectory.at(0.0), latents[0])


def unet_eps(unet: torch.nn.Module, context: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
    return lambda x, t: unet(x, timesteps=torch.full((x.shape[0],), float(t), dtype=x.dtype), context=context)


def ddim_schedule(wrap: CompVisDenoiser, steps: int) -> Tuple[List[int], torch.Tensor]:
    """The WebUI DDIM sampler's timesteps (``sd_samplers_timesteps.get_timesteps``: 1, 101, ...)
    and the matching k-diffusion schedule, descending and ending at 0."""
    timesteps = [t + 1 for t in range(0, 1000, 1000 // steps)]
    sigmas = torch.cat([wrap.sigmas[timesteps].flip(0), wrap.sigmas.new_zeros(1)])
    return timesteps, sigmas


def test_inversion_equals_the_ddim_inversion_formula(wrap64, latent):
    x0, context = (t.double() for t in latent)
    timesteps, sigmas = ddim_schedule(wrap64, 10)
    engine = invert(x0, sigmas, denoiser(wrap64, context), float(wrap64.sigmas[0]), reads=InversionLevel.CURRENT).start
    reference = ddim_inversion_reference(
        unet_eps(wrap64.inner_model.unet, context), x0, timesteps, wrap64.inner_model.alphas_cumprod
    )
    torch.testing.assert_close(engine, reference, rtol=0, atol=1e-10)


def test_classifier_free_inversion_equals_the_formula(wrap64, latent):
    x0, context = (t.double() for t in latent)
    uncond = randn(1, 4, 768, seed=6, dtype=torch.float64)
    scale = 3.5
    timesteps, sigmas = ddim_schedule(wrap64, 6)
    guided = classifier_free(denoiser(wrap64, context), denoiser(wrap64, uncond), scale)
    engine = invert(x0, sigmas, guided, float(wrap64.sigmas[0]), reads=InversionLevel.CURRENT).start

    cond_eps, uncond_eps = unet_eps(wrap64.inner_model.unet, context), unet_eps(wrap64.inner_model.unet, uncond)

    def guided_eps(x: torch.Tensor, t: int) -> torch.Tensor:
        e_uncond = uncond_eps(x, t)
        return e_uncond + scale * (cond_eps(x, t) - e_uncond)

    reference = ddim_inversion_reference(guided_eps, x0, timesteps, wrap64.inner_model.alphas_cumprod)
    torch.testing.assert_close(engine, reference, rtol=0, atol=1e-10)


def test_rows_are_inverted_together_as_if_alone(wrap64):
    x0 = randn(2, 4, 8, 8, seed=7, dtype=torch.float64)
    context = randn(2, 4, 768, seed=8, dtype=torch.float64)
    sigmas = wrap64.get_sigmas(4).double()
    sigma_min = float(wrap64.sigmas[0])
    rows_per_call = []

    def both_rows(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        rows_per_call.append(x.shape[0])
        return wrap64(x, sigma, cond=context)

    together = invert(x0, sigmas, both_rows, sigma_min).latents
    assert rows_per_call == [2] * 4
    for row in range(2):
        alone = invert(x0[row : row + 1], sigmas, denoiser(wrap64, context[row : row + 1]), sigma_min).latents
        torch.testing.assert_close(together[:, row : row + 1], alone, rtol=0, atol=1e-10)


# --- partial strength --------------------------------------------------------------------------


def test_partial_strength_inverts_only_up_to_the_first_sigma_of_its_schedule(wrap32, latent):
    x0, context = latent
    steps = 10
    sigmas = wrap32.get_sigmas(steps)
    sigma_sched = img2img_schedule(sigmas, steps, strength=0.5)
    assert len(sigma_sched) == 7 and sigma_sched[0] < sigmas[0]
    sigma_min = float(wrap32.sigmas[0])
    seen: List[Tuple[torch.Tensor, float]] = []

    def recorded(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append((x.clone(), sigma[0].item()))
        return wrap32(x, sigma, cond=context)

    start = invert(x0, sigma_sched, recorded, sigma_min, reads=InversionLevel.CURRENT).start
    partial_sigmas = [sigma for _, sigma in seen]
    # eps is read at each level below the top, never at sigma_sched[0] itself.
    assert partial_sigmas == pytest.approx([sigma_min] + sigma_sched[1:-1].flip(0).tolist(), rel=1e-6)
    assert max(partial_sigmas) < sigma_sched[0]

    # The full-strength walk passes through the same latent at sigma_sched[0].
    seen.clear()
    invert(x0, sigmas, recorded, sigma_min, reads=InversionLevel.CURRENT)
    at_top = [x for x, sigma in seen if sigma == pytest.approx(sigma_sched[0].item(), rel=1e-6)]
    assert len(at_top) == 1 and torch.equal(at_top[0], start)

    # Measured 0.022: the 6 lowest of 10 steps, where eps varies least; the bound leaves margin.
    assert relative_error(euler(wrap32, start, sigma_sched, context), x0) < 0.035


# --- host contract -----------------------------------------------------------------------------


class CountingDenoiser:
    """A cheap stand-in model for the bookkeeping tests: counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * 0.5 + sigma.view(-1, 1, 1, 1) * 0.01


SIGMAS = torch.tensor([14.6, 7.0, 3.0, 1.0, 0.3, 0.0])


COND = randn(1, 77, 8, seed=7)


def make_key(x0: torch.Tensor, sigmas: torch.Tensor = SIGMAS, sigma_min: float = 0.03, **overrides) -> InversionKey:
    parts = {"model": "abc123", "conditioning": [COND], "cfg_scale": 1.0, **overrides}
    return InversionKey.create(x0, sigmas, sigma_min, **parts)


def test_progress_is_reported_after_every_step():
    reports = []
    invert(randn(1, 4, 2, 2, seed=0), SIGMAS, CountingDenoiser(), 0.03, progress=lambda *report: reports.append(report))
    assert reports == [(step, 5) for step in range(1, 6)]


def test_first_step_reads_eps_at_sigma_min_never_above_the_next_level():
    read_at = []

    def recorded(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        read_at.append(sigma[0].item())
        return x * 0.5

    x0 = randn(1, 4, 2, 2, seed=0, dtype=torch.float64)
    invert(x0, SIGMAS.double(), recorded, 0.03, reads=InversionLevel.CURRENT)
    assert read_at == pytest.approx([0.03, 0.3, 1.0, 3.0, 7.0])
    read_at.clear()
    invert(x0, [1.0, 0.01, 0.0], recorded, 0.03, reads=InversionLevel.CURRENT)
    assert read_at == pytest.approx([0.01, 0.01])
    read_at.clear()
    invert(x0, SIGMAS.double(), recorded, 0.03, reads=InversionLevel.NEXT)
    assert read_at == pytest.approx([0.3, 1.0, 3.0, 7.0, 14.6])  # the next level: the one each step climbs to


def test_schedule_and_sigma_min_are_validated():
    x0 = randn(1, 4, 2, 2, seed=0)
    for sigmas in ([1.0, 0.5], [1.0, 1.0, 0.0], [0.5, 1.0, 0.0], [0.0]):
        with pytest.raises(ValueError):
            invert(x0, sigmas, CountingDenoiser(), 0.03)
    with pytest.raises(ValueError):
        invert(x0, SIGMAS, CountingDenoiser(), 0.0)


def test_half_precision_latent_is_inverted_in_float32():
    result = invert(randn(1, 4, 2, 2, seed=0, dtype=torch.float16), SIGMAS, CountingDenoiser(), 0.03)
    assert result.latents.dtype == torch.float32


def test_cache_hit_returns_the_same_latent_without_calling_the_model():
    x0 = randn(2, 4, 2, 2, seed=0)
    cache, model, key = InversionCache(4), CountingDenoiser(), make_key(x0)
    first = invert_cached(cache, key, x0, model)
    assert not first.cached and model.calls == 5
    second = invert_cached(cache, key, x0, model)
    assert second.cached and model.calls == 5
    assert torch.equal(first.trajectory.latents, second.trajectory.latents)
    assert second.trajectory.latents.device == x0.device and second.trajectory.levels == first.trajectory.levels
    second.trajectory.latents.zero_()
    assert torch.equal(invert_cached(cache, key, x0, model).trajectory.latents, first.trajectory.latents)
    assert cache.nbytes == first.trajectory.nbytes == 6 * 2 * 4 * 2 * 2 * 4  # levels x rows x latent x float32


def test_every_key_part_matters():
    x0 = randn(1, 4, 2, 2, seed=0)
    cache = InversionCache(16)
    base = make_key(x0)
    cache.put(base, Trajectory((0.0,), x0[None]))
    changed = [
        make_key(randn(1, 4, 2, 2, seed=1)),
        make_key(x0.reshape(1, 4, 4, 1)),
        make_key(x0, model="def456"),
        make_key(x0, sigmas=torch.tensor([14.6, 5.0, 2.0, 1.0, 0.3, 0.0])),
        make_key(x0, sigmas=SIGMAS[2:]),
        make_key(x0, sigma_min=0.02),
        make_key(x0, reads=InversionLevel.NEXT),
        make_key(x0, conditioning=[COND + 1e-6]),
        make_key(x0, conditioning=[COND, randn(1, 77, 8, seed=8)]),
        make_key(x0, conditioning=[{"crossattn": COND, "vector": randn(1, 4, seed=9)}]),
        make_key(x0, cfg_scale=2.0),
        make_key(x0, extra={"precision": "fp16"}),
    ]
    for key in changed:
        assert key != base and cache.get(key) is None
    assert make_key(x0, conditioning=[COND.clone()]) == base
    assert make_key(x0, content=tensor_digest(x0)) == base
    sdxl = {"vector": randn(1, 4, seed=9), "crossattn": COND}
    assert make_key(x0, conditioning=[sdxl]) == make_key(x0, conditioning=[dict(reversed(sdxl.items()))])


def test_tensor_digest_depends_on_values_shape_and_dtype():
    x = randn(2, 3, seed=0)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) != tensor_digest(x.reshape(3, 2))
    assert tensor_digest(x) != tensor_digest(x.double())
    y = x.clone()
    y[1, 2] += 1e-6
    assert tensor_digest(x) != tensor_digest(y)
    assert tensor_digest(x.to(torch.bfloat16)) != tensor_digest(x.to(torch.float16))


def stored(value: float, dtype: torch.dtype = torch.float32) -> Trajectory:
    return Trajectory((0.0,), torch.full((1, 1), value, dtype=dtype))


def test_least_recently_used_entry_is_evicted():
    cache = InversionCache(2)
    keys = [make_key(randn(1, 4, 2, 2, seed=seed)) for seed in range(3)]
    cache.put(keys[0], stored(0))
    cache.put(keys[1], stored(1))
    assert cache.get(keys[0]) is not None
    cache.put(keys[2], stored(1))
    assert len(cache) == 2 and keys[1] not in cache and keys[0] in cache and keys[2] in cache


def test_cache_size_changes_at_runtime():
    cache = InversionCache(3)
    keys = [make_key(randn(1, 4, 2, 2, seed=seed)) for seed in range(3)]
    for i, key in enumerate(keys):
        cache.put(key, stored(i, torch.float64))
    cache.max_entries = 1
    assert len(cache) == 1 and keys[2] in cache
    assert cache.get(keys[2]).latents.dtype == torch.float64
    cache.max_entries = 0
    cache.put(keys[0], stored(0))
    assert len(cache) == 0
    cache.max_entries = 2
    cache.put(keys[0], stored(0))
    assert keys[0] in cache
    with pytest.raises(ValueError):
        cache.max_entries = -1


def test_interruption_raises_and_caches_nothing():
    x0 = randn(1, 4, 2, 2, seed=0)
    cache, model, key = InversionCache(4), CountingDenoiser(), make_key(x0)
    reports = []
    with pytest.raises(InversionInterrupted) as raised:
        invert_cached(
            cache, key, x0, model,
            progress=lambda step, total: reports.append(step),
            interrupted=lambda: model.calls >= 2,
        )
    assert (raised.value.step, raised.value.total) == (2, 5)
    assert reports == [1, 2] and len(cache) == 0
    assert not invert_cached(cache, key, x0, model).cached and len(cache) == 1
