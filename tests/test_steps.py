"""A model call's step comes from the noise level the sampler calls it at (lib_masactrl/steps.py)."""

from __future__ import annotations

import pytest
import torch

from lib_masactrl import PassSteps

LEVELS = [14.6, 7.0, 3.0, 1.0, 0.3]


def test_a_call_at_a_steps_level_belongs_to_that_step():
    steps = PassSteps.from_levels(torch.tensor(LEVELS))
    assert len(steps) == 5
    assert [steps.step_at(level) for level in LEVELS] == [0, 1, 2, 3, 4]
    # the level recomputed in float32 or float64 is still that level
    assert [steps.step_at(float(torch.tensor(level, dtype=torch.float32))) for level in LEVELS] == [0, 1, 2, 3, 4]


def test_a_call_between_two_levels_belongs_to_the_later_step():
    steps = PassSteps.from_levels(LEVELS)
    assert steps.step_at(5.0) == 2 and steps.step_at(0.5) == 4
    assert steps.step_at(20.0) == 0  # above the first level (sigma churn, a re-noised Restart call)
    assert steps.step_at(0.1) == 4 and steps.step_at(0.0) == 4  # below the last: the last step


def test_timesteps_are_levels_too():
    steps = PassSteps.from_levels([951, 901, 851])
    assert [steps.step_at(t) for t in (999, 951, 930, 901, 851, 500)] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("levels", [[], [1.0, 1.0], [1.0, 2.0]])
def test_levels_must_decrease(levels):
    with pytest.raises(ValueError):
        PassSteps.from_levels(levels)
