"""Shared fixtures. The repository root and tests/ are on sys.path (see pyproject.toml)."""

from __future__ import annotations

import pathlib
import sys

import pytest
import torch
from tiny_unets import sd15_unet, sdxl_unet

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The stand-in WebUI (tests/webui/README.md): its ``modules`` package is what the script imports.
sys.path.insert(0, str(ROOT / "tests" / "webui"))


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


@pytest.fixture
def host(sd15):
    """The stand-in WebUI with this extension installed and the tiny SD1.5 U-Net loaded."""
    from host import WebUIHost

    host = WebUIHost(sd15, extension_dir=str(ROOT))
    try:
        yield host
    finally:
        host.teardown()
