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
  ``compute_controlnet_weighting``), never its predecessors';
- the hint of a call (``cond_hint``) is kept while its size is the call's latent size times 8 and
  its rows the call's rows; otherwise it is made again from the unit's image
  (``cond_hint_original``), resized, and a one-row hint serves every row.

A unit here is not a network: its residual is one ``(rows, 1, 1, 1)`` tensor, its ``value`` times the
mean of each row's hint, under ``"output"``, which the stand-in U-Net adds to a skip connection, so the
sum a row received tells which units, and which hints, acted on it. Left out: strength, timestep
ranges, the other advanced weightings, models, centre cropping.
"""

from __future__ import annotations

import torch


class ControlNet:
    """Mirrors one link of the chain (``ControlBase`` / ``ControlNet``)."""

    def __init__(self, value: float = 1.0, hint=None):
        self.value = value
        self.previous_controlnet = None
        self.transformer_options = {}
        self.advanced_frame_weighting = None
        self.cond_hint_original = torch.ones(1, 3, 8, 8) if hint is None else hint
        self.cond_hint = None

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
        hint = self._hint(x)
        strength = hint.float().mean(dim=(1, 2, 3), keepdim=True).expand(x.shape[0], 1, 1, 1)
        own = self._weighted((strength * float(self.value)).to(x.dtype))
        total = own if earlier is None else earlier["output"][0] + own
        return {"input": [], "middle": [], "output": [total]}

    def _hint(self, x):
        size = (x.shape[2] * 8, x.shape[3] * 8)
        if self.cond_hint is None or tuple(self.cond_hint.shape[2:]) != size:
            self.cond_hint = torch.nn.functional.interpolate(self.cond_hint_original, size=size, mode="nearest-exact")
        return self.cond_hint

    def _weighted(self, residual):
        weights = self.advanced_frame_weighting
        if weights is None:
            return residual
        chunks = len(self.transformer_options["cond_or_uncond"])
        per_row = torch.tensor(list(weights) * chunks, dtype=residual.dtype)
        if per_row.shape[0] != residual.shape[0]:
            raise AssertionError("Frame weighting list length is different from batch size!")
        return residual * per_row[:, None, None, None]
