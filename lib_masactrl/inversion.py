"""Deterministic inversion of a clean latent: the start latent from which the host's Euler
sampler, run along the same sigma schedule, comes back to that latent.

Real-image editing (MasaCtrl's section on real images) inverts the source image with DDIM at
guidance 1 and then denoises ``[source, target]`` from the inverted latent. The WebUI samples
with k-diffusion in the variance-exploding parametrisation ``x = x0 + sigma * eps``, where
k-diffusion's Euler step is ``x <- x + (sigma_next - sigma) * eps(x, sigma)`` with
``eps = (x - denoised) / sigma``. Writing ``x_k = x_ddim / sqrt(alphas_cumprod)`` and
``sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod)`` turns DDIM (eta 0) into exactly this
step, so DDIM inversion is the same step walked up the schedule:
``x <- x + (sigma_upper - sigma_lower) * eps(x, sigma_lower)``. Only ``denoised`` is needed, so
the engine serves eps-, v- and flow-parametrised models alike, through whatever denoiser the
host's sampler calls.

The engine never sees conditioning (the WebUI's SDXL conds are dicts): the host passes a
:data:`Denoiser` closed over its conds, and :func:`classifier_free` when inversion uses CFG.
"""

from __future__ import annotations

import logging
from typing import Callable, List, Sequence

import torch

logger = logging.getLogger("masactrl")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoise(x, sigma) -> denoised``: ``x`` is ``(N, C, H, W)``, ``sigma`` holds one noise level
per row, ``(N,)``, as k-diffusion's samplers call their model."""

Progress = Callable[[int, int], None]
"""``progress(step, total)``, called after each completed step; ``step`` counts from 1."""

InterruptCheck = Callable[[], bool]
"""Polled before each step; returning ``True`` stops the inversion."""


class InversionInterrupted(Exception):
    """The host asked the inversion to stop. Nothing it computed is returned or cached."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"MasaCtrl inversion interrupted after {step} of {total} steps")
        self.step = step
        self.total = total


def schedule_levels(sigmas: torch.Tensor | Sequence[float]) -> List[float]:
    """The sampler's schedule as floats, checked: strictly decreasing and ending at 0, as
    ``sigma_sched`` in the WebUI's ``sample_img2img`` is. Anything else could not be walked back."""
    levels = [float(s) for s in (sigmas.flatten().tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    if len(levels) < 2:
        raise ValueError(f"an inversion schedule needs at least two sigmas, got {levels}")
    if levels[-1] != 0.0:
        raise ValueError(f"an inversion schedule must end at sigma 0, as the sampler's does; it ends at {levels[-1]}")
    if any(upper <= lower for upper, lower in zip(levels, levels[1:])):
        raise ValueError(f"an inversion schedule must be strictly decreasing, got {levels}")
    return levels


def classifier_free(denoise_cond: Denoiser, denoise_uncond: Denoiser, scale: float) -> Denoiser:
    """Classifier-free guidance for inversion: ``uncond + scale * (cond - uncond)``. Combining
    ``denoised`` equals combining eps, since ``eps = (x - denoised) / sigma`` is affine in
    ``denoised`` with the same ``x`` on both sides. Two calls rather than one stacked call, because
    cond and uncond may have different token lengths (the WebUI then calls them apart too)."""

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond = denoise_cond(x, sigma)
        uncond = denoise_uncond(x, sigma)
        return uncond + (cond - uncond) * scale

    return denoise


def invert(
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    denoise: Denoiser,
    sigma_min: float,
    *,
    progress: Progress | None = None,
    interrupted: InterruptCheck | None = None,
) -> torch.Tensor:
    """Walk ``x0`` (all rows together) up the schedule ``sigmas`` to ``sigmas[0]``.

    ``sigmas`` is the schedule the sampler will denoise along (decreasing, ending at 0); the
    result is the latent at ``sigmas[0]``, in ``x0``'s dtype promoted to at least float32 (the
    sampler's latent is float32 even when the VAE's is not), on ``x0``'s device. There are
    ``len(sigmas) - 1`` steps, one ``denoise`` call each.

    Each step runs from a level ``lower`` to the next higher ``upper`` as
    ``x <- x + (upper - lower) * eps(x, at)``, the mirror image of the sampler's step from
    ``upper`` down to ``lower``, which reads eps at ``upper`` on the latent there. That latent is
    what this step computes, so it cannot be read; DDIM inversion reads eps where the walk is, at
    the current, lower level (``at = lower``), and the mismatch shrinks with the step size (the
    reconstruction error is first order: it halves when the steps double).

    On the first step, ``lower = 0``, eps cannot be read where the walk is: k-diffusion's wrappers
    scale the model's output by ``-sigma`` (so eps would be 0/0 at sigma 0) and a discrete model
    has no timestep below 0. It is read at ``sigma_min`` instead, the model's smallest trained
    level (timestep 0; ``model_wrap.sigmas[0]`` in the WebUI, about 0.029 for SD): the valid level
    nearest to the clean latent, as DDIM inversion's "current timestep" asks. It is capped at
    ``upper`` so that eps is never read above the level the step climbs to. The step length stays
    ``upper - 0``, because the sampler's last step lands on sigma 0 exactly: walking from
    ``sigma_min`` instead would leave an offset of ``sigma_min * eps`` that no step count removes.
    """
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be positive (the model's smallest sigma), got {sigma_min}")
    path = schedule_levels(sigmas)[::-1]
    total = len(path) - 1
    x = x0.detach().to(torch.promote_types(x0.dtype, torch.float32), copy=True)
    logger.debug("inverting %d row(s) over %d steps up to sigma %.4g", x.shape[0], total, path[-1])
    with torch.no_grad():
        for step, (lower, upper) in enumerate(zip(path, path[1:])):
            if interrupted is not None and interrupted():
                raise InversionInterrupted(step, total)
            at = lower if lower > 0 else min(sigma_min, upper)
            eps = (x - denoise(x, x.new_full((x.shape[0],), at))) / at
            x = x + eps * (upper - lower)
            if progress is not None:
                progress(step + 1, total)
    return x
