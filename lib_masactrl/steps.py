"""Which sampling step a model call belongs to, read from the noise level the sampler calls at.

A step, for MasaCtrl's start and end step, is a level of the pass's noise schedule: step ``i`` is
where the sampler evaluates the model at the ``i``-th level, counted from the noisiest. A model call
at noise level ``s`` belongs to the first step whose level is at or below ``s``, which is the number
of levels above ``s``. That is:

- exactly the sampler's step for the samplers that evaluate once per step at the schedule's level
  (Euler, Euler a, LMS, DPM++ 2M, the SDE samplers, DDIM, LCM), and the step their progress bar
  counts;
- for a sampler that evaluates twice per step (Heun, DPM2, DPM++ 2S a, DPM++ SDE), the first
  evaluation belongs to its step and the second, made on the way to the next level (or at it),
  to the next step: control starts and ends at the same noise level whatever the sampler's order;
- for samplers that do not walk the schedule step by step, each call by its noise level: DPM fast
  and DPM adaptive choose their own levels between the schedule's first and last, and Restart
  walks back up to a higher level and down again, so its re-noised calls are controlled exactly
  when their noise level is in the controlled range.

Counting calls cannot give this: Restart, DPM fast and DPM adaptive make other numbers of calls
than the step count, and PLMS an extra one, whereas every sampler tells the model its noise level.
Levels may be sigmas (k-diffusion) or timesteps (DDIM, PLMS, UniPC): anything that decreases as
sampling proceeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch

_TOLERANCE = 1e-5
"""Relative: a level recomputed in another precision still counts as that level."""


@dataclass(frozen=True)
class PassSteps:
    """The noise levels of one sampling pass, one per step, noisiest first."""

    levels: Tuple[float, ...]

    @classmethod
    def from_levels(cls, levels: torch.Tensor | Sequence[float]) -> "PassSteps":
        values = tuple(float(v) for v in (levels.flatten().tolist() if isinstance(levels, torch.Tensor) else levels))
        if not values:
            raise ValueError("a sampling pass needs at least one step")
        rising = next((step for step, (upper, lower) in enumerate(zip(values, values[1:])) if upper <= lower), None)
        if rising is not None:
            raise ValueError(
                f"the sampler's noise levels do not decrease at step {rising + 1} of {len(values)} "
                f"({values[rising]:.4g}, then {values[rising + 1]:.4g})"
            )
        return cls(values)

    def __len__(self) -> int:
        return len(self.levels)

    def step_at(self, level: float) -> int:
        """The step a model call at noise level ``level`` belongs to: the number of the pass's
        levels above it, at most the last step."""
        above = sum(1 for value in self.levels if value > level * (1 + _TOLERANCE))
        return min(above, len(self.levels) - 1)
