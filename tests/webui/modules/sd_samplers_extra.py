"""Stand-in for the WebUI's modules/sd_samplers_extra.py: the "Restart" sampler (Xu et al., "Restart
Sampling for Improving Generative Processes", 2023), which sd_samplers_kdiffusion lists with the
sampling function itself in place of a k-diffusion function name.

Restart integrates the probability-flow ODE with Heun steps, and at chosen noise levels jumps back up
(adding fresh noise) to re-run a stretch of the schedule, which contracts accumulated errors."""

from __future__ import annotations

from typing import Iterator

import k_diffusion.sampling
import torch


def _automatic_restarts(sigmas: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The WebUI's choice when no restart list is given: below 20 steps none (plain Heun). From 20 steps
    on, the restart stretches take their steps from the main schedule, which becomes a shorter Karras
    schedule over the same range: one stretch of 9 steps, from 36 steps on two of steps // 4 each, each
    going back up from sigma ~0.1 to sigma ~2."""
    steps = len(sigmas) - 1
    if steps < 20:
        return sigmas, {}
    stretch, repeats = (steps // 4, 2) if steps >= 36 else (9, 1)
    main = k_diffusion.sampling.get_sigmas_karras(
        steps - stretch * repeats, sigmas[-2].item(), sigmas[0].item(), device=sigmas.device
    )
    return main, {0.1: [stretch + 1, repeats, 2]}


def _nearest_index(sigmas: torch.Tensor, level: float) -> int:
    return int(torch.argmin((sigmas - level).abs(), dim=0))


def _segments(sigmas: torch.Tensor, restart_list: dict) -> Iterator[tuple]:
    """The (from, to) noise-level pairs to integrate, in order: the main schedule, with each restart
    stretch inserted after the step that reaches its low level. A stretch runs ``n_levels`` Karras
    levels from the schedule level nearest ``high`` down to the low level, ``repeats`` times."""
    restart_at = {_nearest_index(sigmas, low): spec for low, spec in restart_list.items()}
    for index in range(len(sigmas) - 1):
        yield sigmas[index], sigmas[index + 1]
        if index + 1 not in restart_at:
            continue
        n_levels, repeats, high = restart_at[index + 1]
        top = _nearest_index(sigmas, high)
        if top >= index + 1:  # the high level is not above the low one: nothing to restart
            continue
        ladder = k_diffusion.sampling.get_sigmas_karras(
            n_levels, sigmas[index + 1].item(), sigmas[top].item(), device=sigmas.device
        )[:-1]  # without the trailing 0
        for _ in range(repeats):
            yield from zip(ladder[:-1], ladder[1:])


@torch.no_grad()
def restart_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, restart_list=None):
    """sd_samplers_extra.restart_sampler. ``restart_list`` maps a low noise level to [levels in the
    stretch, repeats, high noise level]; None lets the sampler choose (see _automatic_restarts). Each
    pair of levels is one Heun step (Euler into sigma 0), reported to ``callback`` with a running index.
    Going back up from level a to level b adds noise of standard deviation s_noise * sqrt(b^2 - a^2),
    drawn through k_diffusion.sampling.torch (the WebUI's TorchHijack, i.e. p.rng)."""
    extra_args = extra_args or {}
    if restart_list is None:
        sigmas, restart_list = _automatic_restarts(sigmas)
    ones = x.new_ones([x.shape[0]])

    def slope(latent, sigma):
        return k_diffusion.sampling.to_d(latent, sigma, model(latent, sigma * ones, **extra_args))

    reached = None
    for index, (sigma_from, sigma_to) in enumerate(_segments(sigmas, restart_list)):
        if reached is not None and reached < sigma_from:
            x = x + k_diffusion.sampling.torch.randn_like(x) * s_noise * (sigma_from**2 - reached**2) ** 0.5
        denoised = model(x, sigma_from * ones, **extra_args)
        d = k_diffusion.sampling.to_d(x, sigma_from, denoised)
        if callback is not None:
            callback({"x": x, "i": index, "sigma": sigma_to, "sigma_hat": sigma_from, "denoised": denoised})
        dt = sigma_to - sigma_from
        euler = x + d * dt
        x = euler if sigma_to == 0 else x + (d + slope(euler, sigma_to)) / 2 * dt
        reached = sigma_to
    return x
