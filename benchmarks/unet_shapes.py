"""U-Nets for the benchmarks, with random weights: the tests' tiny ones, or SD1.5's and SDXL's
full-size transformer layouts (860M and about 2.6B parameters) for measuring on a GPU.

    --unet tiny | tiny-sdxl | small | sd15 | sdxl     --device cpu | cuda | ...     --dtype float32 | float16 | bfloat16
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
from typing import Tuple

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tiny_unets import sd15_unet, sdxl_unet  # noqa: E402

from ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402


def _small() -> UNetModel:
    """SD1.x's layout at 128 channels and 64-channel heads: between the tiny U-Net and SD1.5."""
    return UNetModel(
        image_size=64, in_channels=4, out_channels=4, model_channels=128, attention_resolutions=[4, 2, 1],
        num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64, use_spatial_transformer=True,
        transformer_depth=1, context_dim=768, legacy=False,
    ).eval().requires_grad_(False)


KINDS = {
    "tiny": (lambda: sd15_unet(seed=0), 768),
    "small": (_small, 768),
    "sd15": (lambda: sd15_unet(seed=0, model_channels=320), 768),
    "sdxl": (lambda: sdxl_unet(seed=0, model_channels=320), 2048),
    "tiny-sdxl": (lambda: sdxl_unet(seed=0), 2048),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unet", choices=sorted(KINDS), default="tiny", help="U-Net shape (default: tiny)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")


@functools.lru_cache(maxsize=1)
def build(kind: str, device: str, dtype: str) -> Tuple[torch.nn.Module, int]:
    """The U-Net on ``device`` in ``dtype``, and the width of its text context (kept for the next
    call: a full-size U-Net takes a while to build)."""
    make, context_dim = KINDS[kind]
    return make().to(device=device, dtype=getattr(torch, dtype)), context_dim


def inputs(rows: int, latent: int, device: str, dtype: str, context_dim: int) -> Tuple[torch.Tensor, ...]:
    """Seeded random latents, timesteps and text context for ``rows`` rows of a U-Net call."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, latent, latent, generator=generator).to(device, getattr(torch, dtype))
    t = torch.full((rows,), 500, device=device)
    context = torch.randn(rows, 77, context_dim, generator=generator).to(device, getattr(torch, dtype))
    return x, t, context
