"""Stand-in for Forge's ``backend/patcher/controlnet.py``: the chain of ControlNet units the built-in
ControlNet puts on a U-Net patcher (``UnetPatcher.add_patched_controlnet``), one link per unit.

Kept from Forge, because MasaCtrl's per-unit assignment relies on it:

- each link points to the unit applied before it (``previous_controlnet``); the sampler hands every
  link the U-Net call's transformer options (``transformer_options``) and asks the newest link for
  the call's residuals (``get_control(x, timesteps, cond, chunks)``);
- ``get_control`` first runs every ``controlnet_conditioning_modifiers`` entry of those options with
  the link itself, then asks the link before it, then adds its own residuals to theirs;
- a link's own residuals are multiplied row by row by its per-frame weights
  (``advanced_frame_weighting``: one weight per row of a chunk, repeated over the call's chunks,
  ``compute_controlnet_weighting``), never its predecessors'.

A unit here is not a network: its residual is one ``(rows, 1, 1, 1)`` tensor of its ``value`` under
``"output"``, which the stand-in U-Net adds to a skip connection, so the sum a row received tells which
units acted on it. Left out: hints, strength, timestep ranges, the other advanced weightings, models.
"""

from __future__ import annotations

import torch


class ControlNet:
    """Mirrors one link of the chain (``ControlBase`` / ``ControlNet``)."""

    def __init__(self, value: float = 1.0):
        self.value = value
        self.previous_controlnet = None
        self.transformer_options = {}
        self.advanced_frame_weighting = None

    def set_previous_controlnet(self, link):
        self.previous_controlnet = link
        return self

    def pre_run(self, model):
        return None

    def cleanup(self):
        return None

    def get_control(self, x, timesteps, cond, chunks):
        for modifier in self.transformer_options.get("controlnet_conditioning_modifiers", []):
            x, timesteps, cond, chunks = modifier(self, x, timesteps, cond, chunks)
        earlier = None
        if self.previous_controlnet is not None:
            earlier = self.previous_controlnet.get_control(x, timesteps, cond, chunks)
        own = self._weighted(torch.full((x.shape[0], 1, 1, 1), float(self.value), dtype=x.dtype))
        total = own if earlier is None else earlier["output"][0] + own
        return {"input": [], "middle": [], "output": [total]}

    def _weighted(self, residual):
        weights = self.advanced_frame_weighting
        if weights is None:
            return residual
        chunks = len(self.transformer_options["cond_or_uncond"])
        per_row = torch.tensor(list(weights) * chunks, dtype=residual.dtype)
        if per_row.shape[0] != residual.shape[0]:
            raise AssertionError("Frame weighting list length is different from batch size!")
        return residual * per_row[:, None, None, None]
