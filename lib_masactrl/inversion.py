"""Deterministic inversion of a clean latent: the start latent from which the host's Euler
sampler, run along the same sigma schedule, comes back to that latent, and the latents the walk
passes through on the way (its :class:`Trajectory`).

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
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import torch

from .settings import Choice

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


class InversionLevel(Choice):
    """Where each inversion step reads the model."""

    CURRENT = "current level"
    """At the level the step starts from, on the latent there: both the latent and the level
    differ from what the sampler's step back down will show the model. The default: on the test
    U-Net it reconstructs as well as :attr:`NEXT` or slightly better (README)."""

    NEXT = "next level"
    """At the level the step climbs to, on the latent it starts from, as DDIM inversion does
    (the official MasaCtrl code, null-text inversion's ``next_step``): only the latent the model
    sees differs from what the sampler's step back down will show it."""

    @classmethod
    def noun(cls) -> str:
        return "inversion level"


@dataclass(frozen=True)
class Trajectory:
    """The latents an inversion passed through, one per level of the schedule it walked:
    ``latents[k]`` (all rows) at noise level ``levels[k]``, from the clean latent at level 0 up to
    the start latent at the top. Between two levels the walk is a straight line in the latent
    (each step is a straight line), which :meth:`at` follows."""

    levels: Tuple[float, ...]
    """Increasing, from 0."""
    latents: torch.Tensor
    """``(len(levels), rows, channels, height, width)``."""

    @property
    def start(self) -> torch.Tensor:
        """The latent at the top level, where sampling starts."""
        return self.latents[-1]

    @property
    def clean(self) -> torch.Tensor:
        """The latent at level 0: the inverted latent itself."""
        return self.latents[0]

    def at(self, level: float) -> torch.Tensor:
        """All rows at noise level ``level``: the stored latent at one of the levels (exactly,
        up to a relative 1e-5 in the level), else the walk's straight line between the two
        levels around it; outside the levels, the nearest end."""
        levels = self.levels
        for index, value in enumerate(levels):
            if abs(value - level) <= 1e-5 * max(abs(value), abs(level)):
                return self.latents[index]
        if level <= levels[0]:
            return self.latents[0]
        if level >= levels[-1]:
            return self.latents[-1]
        upper = next(index for index, value in enumerate(levels) if value > level)
        weight = (level - levels[upper - 1]) / (levels[upper] - levels[upper - 1])
        return torch.lerp(self.latents[upper - 1], self.latents[upper], weight)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Trajectory":
        return Trajectory(self.levels, self.latents.to(device=device, dtype=dtype))

    @property
    def nbytes(self) -> int:
        return self.latents.numel() * self.latents.element_size()


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
    reads: InversionLevel = InversionLevel.CURRENT,
    progress: Progress | None = None,
    interrupted: InterruptCheck | None = None,
) -> Trajectory:
    """Walk ``x0`` (all rows together) up the schedule ``sigmas`` to ``sigmas[0]``.

    ``sigmas`` is the schedule the sampler will denoise along (decreasing, ending at 0); the
    trajectory's latents are in ``x0``'s dtype promoted to at least float32 (the sampler's latent
    is float32 even when the VAE's is not), on ``x0``'s device. There are ``len(sigmas) - 1``
    steps, one ``denoise`` call each.

    Each step runs from a level ``lower`` to the next higher ``upper`` as
    ``x <- x + (upper - lower) * eps``, the mirror image of the sampler's step from ``upper``
    down to ``lower``, which reads eps at ``upper`` on the latent there. That latent is what this
    step computes, so it cannot be read; ``reads`` says what is read instead:

    - :attr:`InversionLevel.CURRENT`: eps where the walk is, at ``lower``. On the first step,
      ``lower = 0``, eps cannot be read there: k-diffusion's wrappers scale the model's output by
      ``-sigma`` (0/0 at sigma 0) and a discrete model has no timestep below 0. It is read at
      ``sigma_min`` instead, the model's smallest trained level (``model_wrap.sigmas[0]`` in the
      WebUI, about 0.029 for SD), capped at ``upper`` so that eps is never read above the level
      the step climbs to. The step length stays ``upper - 0``, because the sampler's last step
      lands on sigma 0 exactly.
    - :attr:`InversionLevel.NEXT`: eps at ``upper`` on the latent at ``lower``, as the
      variance-preserving model sees that latent: the WebUI's models are given
      ``x / sqrt(1 + sigma^2)`` (k-diffusion's ``c_in``), so the latent goes in scaled by
      ``sqrt((1 + upper^2) / (1 + lower^2))``, which hands the model at ``upper`` exactly the input
      it had at ``lower``. This is DDIM inversion's step, ``eps(x_t, t + 1)``.

    Either way the reconstruction error is first order in the step size: it halves when the
    steps double. The README has the two conventions' measured errors.
    """
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be positive (the model's smallest sigma), got {sigma_min}")
    reads = InversionLevel.parse(reads)
    path = schedule_levels(sigmas)[::-1]
    total = len(path) - 1
    x = x0.detach().to(torch.promote_types(x0.dtype, torch.float32), copy=True)
    latents = [x]
    logger.debug("inverting %d row(s) over %d steps up to sigma %.4g", x.shape[0], total, path[-1])
    with torch.no_grad():
        for step, (lower, upper) in enumerate(zip(path, path[1:])):
            if interrupted is not None and interrupted():
                raise InversionInterrupted(step, total)
            if reads is InversionLevel.NEXT:
                at, seen = upper, x * ((1 + upper**2) / (1 + lower**2)) ** 0.5
            else:
                at, seen = (lower if lower > 0 else min(sigma_min, upper)), x
            eps = (seen - denoise(seen, x.new_full((x.shape[0],), at))) / at
            x = x + eps * (upper - lower)
            latents.append(x)
            if progress is not None:
                progress(step + 1, total)
    return Trajectory(tuple(path), torch.stack(latents))
