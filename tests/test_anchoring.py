"""The engine's anchoring (lib_masactrl/anchoring.py): which rows of a CFG stack follow the
trajectory, at which latent, and what the sampled latents end at."""

from __future__ import annotations

import torch

from lib_masactrl import StepLayout
from lib_masactrl.anchoring import SourceAnchor
from lib_masactrl.inversion import Trajectory


def trajectory(rows=2):
    levels = (0.0, 1.0, 3.0)
    latents = torch.stack([torch.full((rows, 4, 2, 2), float(k)) + torch.arange(rows).view(rows, 1, 1, 1) * 10
                           for k in range(3)])
    return Trajectory(levels, latents)


def test_every_row_of_every_source_image_takes_its_trajectory_latent():
    # images 0 and 1 are sources (trajectory rows 1 and 0), 2 and 3 their targets; AND prompts give
    # image 0 two cond rows
    layout = StepLayout.cfg((None, None, 0, 1), cond_repeats=(2, 1, 1, 1))
    x = torch.randn(len(layout), 4, 2, 2)
    anchor = SourceAnchor(trajectory(), {0: 1, 1: 0})
    anchored = anchor.inputs(x, 3.0, layout)
    for stack_row, row in enumerate(layout.rows):
        if row.image == 0:
            assert torch.equal(anchored[stack_row], torch.full((4, 2, 2), 12.0))
        elif row.image == 1:
            assert torch.equal(anchored[stack_row], torch.full((4, 2, 2), 2.0))
        else:
            assert torch.equal(anchored[stack_row], x[stack_row])
    between = anchor.inputs(x, 2.0, layout)  # halfway between levels 1 and 3
    assert torch.equal(between[0], torch.full((4, 2, 2), 11.5))


def test_the_sampled_sources_end_at_the_inverted_latent_and_targets_are_untouched():
    samples = torch.randn(4, 4, 2, 2, dtype=torch.float64)
    finished = SourceAnchor(trajectory(), {0: 1, 1: 0}).outputs(samples)
    assert finished.dtype == torch.float64
    assert torch.equal(finished[0], torch.full((4, 2, 2), 10.0, dtype=torch.float64))
    assert torch.equal(finished[1], torch.zeros(4, 2, 2, dtype=torch.float64))
    assert torch.equal(finished[2:], samples[2:]) and not torch.equal(samples[0], finished[0])
