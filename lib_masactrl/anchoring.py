"""Real-image editing that keeps the photo: the sources follow their inversion's trajectory.

Denoising an inverted latent freely does not retrace the inversion: every step's error (the
inversion is first order, and a sampler's step is not the exact mirror of an inversion step)
moves the source off the photo's path, so the keys and values the targets read in the controlled
layers describe a slightly different picture than the photo. Here every model call gets each
source image's rows at the latent the inversion passed through at that call's noise level (cond
and uncond rows alike), so the targets read the photo's own trajectory; and the source images'
sampled latents are replaced at the end by the inverted latent itself, so the reconstruction is
the photo as the VAE round trip gives it, whatever the steps, sampler or inversion guidance.

This is what the official MasaCtrl code's ``ref_intermediate_latents`` does for its DDIM sampler,
for any sampler: the level of each call, not the step count, picks the latent (between two
levels, the inversion's straight step between them; see :meth:`Trajectory.at`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch

from .inversion import Trajectory
from .layout import StepLayout


@dataclass
class SourceAnchor:
    """The trajectory the source images follow during one pass."""

    trajectory: Trajectory
    rows: Dict[int, int]
    """Per source image of the batch, its row in the trajectory."""
    _placed: Dict[Tuple[torch.device, torch.dtype], Trajectory] = field(default_factory=dict, repr=False)

    def _on(self, like: torch.Tensor) -> Trajectory:
        """The trajectory on the device and in the dtype of the sampler's latents (moved once)."""
        key = (like.device, like.dtype)
        if key not in self._placed:
            self._placed[key] = self.trajectory.to(like.device, like.dtype)
        return self._placed[key]

    def inputs(self, x: torch.Tensor, level: float, layout: StepLayout) -> torch.Tensor:
        """The stacked model input ``x`` of one denoiser call at noise ``level``, whose rows
        ``layout`` describes, with every source image's rows at its trajectory latent."""
        latents = self._on(x).at(level)
        stack_rows = [i for i, row in enumerate(layout.rows) if row.image in self.rows]
        if not stack_rows:
            return x
        sources = [self.rows[layout.rows[i].image] for i in stack_rows]
        anchored = x.clone()
        anchored[stack_rows] = latents[sources]
        return anchored

    def images(self, x: torch.Tensor, level: float) -> torch.Tensor:
        """The batch's latents ``x`` at noise ``level``, one row per image (what a host's denoiser
        callback sees when it stacks the U-Net's rows only later, as WebUI Forge does), with every
        source image at its trajectory latent."""
        return self._with_sources(x, self._on(x).at(level))

    def outputs(self, samples: torch.Tensor) -> torch.Tensor:
        """The sampled latents of the batch (one row per image) with every source image's at the
        inverted latent."""
        return self._with_sources(samples, self._on(samples).clean)

    def _with_sources(self, batch: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``batch`` (one row per image) with each source image's row taken from ``latents``
        (one row per trajectory row)."""
        images = sorted(self.rows)
        placed = batch.clone()
        placed[images] = latents[[self.rows[image] for image in images]]
        return placed
