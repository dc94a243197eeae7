"""Shared fixtures. The repository root and tests/ are on sys.path (see pyproject.toml)."""

from __future__ import annotations

import pytest
import torch
from tiny_unets import sd15_unet, sdxl_unet


@pytest.fixture(scope="session", autouse=True)
def _deterministic_torch():
    torch.set_num_threads(1)  # tiny tensors: threads cost more than they give, and CI shares cores
    torch.use_deterministic_algorithms(True)
    yield


@pytest.fixture(scope="module")
def sd15():
    return sd15_unet(seed=0)


@pytest.fixture(scope="module")
def sdxl():
    return sdxl_unet(seed=0)
