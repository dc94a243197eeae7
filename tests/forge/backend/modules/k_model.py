"""Stand-in for Forge's ``backend/modules/k_model.py`` (``KModel``).

``KModel`` wraps the U-Net (``.diffusion_model``) and turns it into a k-diffusion denoiser: given noisy
latents and sigmas it returns the predicted clean latents. The stand-in is always an eps-predictor with
sigma_data = 1 (SD1.x/SDXL); Forge takes the parametrisation from the checkpoint's scheduler config.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The timestep handed to the U-Net: log(sigma) mapped linearly onto [0, 999] between SD's smallest and
# largest sigmas, clamped. Forge looks up the nearest entry of the scheduler's sigma table instead; any
# monotone map serves the tiny U-Net, and this one is continuous.
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """Stand-in for the predictor's ``timestep(sigma)`` (``backend/modules/k_prediction.py``)."""
    low, high = math.log(SIGMA_MIN), math.log(SIGMA_MAX)
    return ((sigma.float().log() - low) / (high - low) * 999.0).clamp(0.0, 999.0)


class KModel(nn.Module):
    """Mirrors ``KModel`` in ``backend/modules/k_model.py``. ``apply_model`` scales the input by
    1/sqrt(sigma^2 + 1), appends ``c_concat`` channels when given, runs the U-Net with ``c_crossattn``
    as context and the options untouched (the U-Net writes into them), and returns
    ``x - eps * sigma``. Simplified: no dtype casting policy beyond the U-Net's own, no LoRA loader,
    no memory estimate."""

    def __init__(self, diffusion_model: nn.Module):
        super().__init__()
        self.diffusion_model = diffusion_model

    @property
    def computation_dtype(self) -> torch.dtype:
        return next(self.diffusion_model.parameters()).dtype

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        per_image = t.reshape(-1, *([1] * (x.dim() - 1)))
        scaled = x / (per_image * per_image + 1.0).sqrt()
        if c_concat is not None:
            scaled = torch.cat([scaled, c_concat], dim=1)
        dtype = self.computation_dtype
        context = None if c_crossattn is None else c_crossattn.to(dtype)
        eps = self.diffusion_model(scaled.to(dtype), sigma_to_timestep(t), context=context, control=control,
                                   transformer_options=transformer_options, **kwargs).float()
        return x - eps * per_image
