"""What one denoising step costs with MasaCtrl, against the same step without it, for every way of
using it: the numbers a user of a GPU asks for.

A step is one U-Net call over the CFG stack (cond and uncond rows of every image, as the WebUI
calls it with "batch cond/uncond" on). Each setting is timed against plain sampling of the same
batch (median of several calls, plain and controlled interleaved so that drift hits both alike)
and its peak memory measured the same way; the table gives the absolute plain figures and the
controlled/plain ratios. Settings, all with the model's default start layer:

- mutual, union, word masks (two subject tokens per image), strength 0.5: one pair (4 rows);
- one source + 7 targets: a sequence of 8 images (16 rows), against a plain batch of 8.

    python benchmarks/step_cost.py            # CUDA: SD1.5 at 512 px and SDXL at 1024 px, float16
    python benchmarks/step_cost.py --quick    # CPU or any device: the tiny test U-Net, small latents

The full run builds both full-size U-Nets with random weights (about 2 minutes on a modern GPU
machine, most of it SDXL's weights) and needs about 20 GB of GPU memory.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import measure  # noqa: E402
import torch  # noqa: E402
from engine_overhead import sdp_attention  # noqa: E402
from unet_shapes import build, inputs  # noqa: E402

import ldm.modules.attention as ldm_attention  # noqa: E402
from lib_masactrl import MasaCtrlSettings, MaskGuide, StepLayout, attach  # noqa: E402
from lib_masactrl.pairing import one_source  # noqa: E402


@dataclass(frozen=True)
class Setting:
    label: str
    images: int
    """Images of the batch; the step has twice as many rows (cond and uncond)."""
    attach: Callable[[torch.nn.Module], object]
    layout: Tuple[int | None, ...]


def _pair(**options) -> Callable[[torch.nn.Module], object]:
    return lambda unet: attach(unet, MasaCtrlSettings(start_step=0, **options))


def _masks(unet: torch.nn.Module) -> object:
    guide = MaskGuide(token_positions={0: ((5, 6),), 1: ((5, 6),)})
    return attach(unet, MasaCtrlSettings(start_step=0, mask_words="subject"), masks=guide)


SETTINGS = (
    Setting("mutual", 2, _pair(), (None, 0)),
    Setting("union", 2, _pair(mode="union"), (None, 0)),
    Setting("word masks", 2, _masks, (None, 0)),
    Setting("strength 0.5", 2, _pair(strength=0.5), (None, 0)),
    Setting("1 source + 7 targets", 8, _pair(), tuple(one_source(8))),
)

MODELS = {
    "full": (("SD1.5, 512 px", "sd15", 64), ("SDXL, 1024 px", "sdxl", 128)),
    "quick": (("tiny SD1.x, 256 px", "tiny", 32), ("tiny SDXL, 256 px", "tiny-sdxl", 32)),
}


def _step(unet, layout: StepLayout, tensors, attachment=None, step: int = 10) -> Callable[[], object]:
    x, t, context = tensors

    def call() -> object:
        if attachment is not None:
            attachment.controller.begin_step(step, layout)
        with torch.no_grad():
            return unet(x, t, context=context)

    return call


def measure_setting(unet, context_dim: int, latent: int, setting: Setting, repeats: int, device: str,
                    dtype: str) -> Dict[str, float]:
    layout = StepLayout.cfg(setting.layout)
    tensors = inputs(len(layout), latent, device, dtype, context_dim)
    plain = _step(unet, layout, tensors)
    with setting.attach(unet) as attachment:
        controlled = _step(unet, layout, tensors, attachment)
        for _ in range(2):  # warm-up; the second call also has the first one's maps for word masks
            plain()
            controlled()
        plain_times: List[float] = []
        controlled_times: List[float] = []
        for _ in range(repeats):
            plain_times.append(measure.seconds(plain, device))
            controlled_times.append(measure.seconds(controlled, device))
        controlled_memory = measure.peak_memory(controlled, device)
    plain_memory = measure.peak_memory(plain, device)
    return {
        "plain s": statistics.median(plain_times),
        "time": statistics.median(controlled_times) / statistics.median(plain_times),
        "plain MiB": plain_memory / 2**20,
        "memory": controlled_memory / plain_memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny test U-Nets at small latents (for CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    quick = args.quick or not args.device.startswith("cuda")
    dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    ldm_attention.CrossAttention.forward = sdp_attention
    torch.manual_seed(0)

    print(f"one denoising step (a U-Net call over the CFG rows), device {args.device}, {dtype}, "
          f"median of {args.repeats}; ratios are controlled / plain of the same batch, measured together")
    print(f"{'model':<20} {'setting':<22} {'plain ms':>9} {'time':>7} {'plain MiB':>10} {'memory':>7}")
    for name, kind, latent in MODELS["quick" if quick else "full"]:
        unet, context_dim = build(kind, args.device, dtype)
        for setting in SETTINGS:
            result = measure_setting(unet, context_dim, latent, setting, args.repeats, args.device, dtype)
            print(f"{name:<20} {setting.label:<22} {result['plain s'] * 1000:>9.1f} {result['time']:>6.3f}x "
                  f"{result['plain MiB']:>10.1f} {result['memory']:>6.3f}x", flush=True)
        build.cache_clear()
        del unet
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
