"""Cost of MasaCtrl in WebUI Forge's way of running a U-Net, against plain, measured in the same run.

MasaCtrl reaches Forge's U-Net through its patcher (attention replace patches and a model function
wrapper on a clone, ``lib_masactrl/forge``). This times one guided evaluation as Forge's sampler makes
it (``sampling_function_inner``: the uncond and cond chunks of one pair in one U-Net call) on the
Forge stand-in's U-Net (tests/forge, Forge's transformer layout, scaled-dot-product attention),
plain and with MasaCtrl installed the way the adapter installs it for a pass, calls interleaved, and
the peak tensor memory each call adds. ``benchmarks/host_generation.py`` times a real Forge.

    python benchmarks/forge_overhead.py                       # CPU, SD1.x and SDXL layouts, 32 channels
    python benchmarks/forge_overhead.py --device cuda --channels 320 --latents 64 128
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
from types import SimpleNamespace

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "forge")]

import measure  # noqa: E402
import torch  # noqa: E402
from backend.modules.k_model import KModel  # noqa: E402
from backend.nn.unet import IntegratedUNet2DConditionModel  # noqa: E402
from backend.patcher.unet import UnetPatcher  # noqa: E402
from backend.sampling.sampling_function import sampling_function_inner  # noqa: E402
from forge_unets import LAYOUTS, _seed_weights, compiled  # noqa: E402

from lib_masactrl.fields import ScriptArgs  # noqa: E402
from lib_masactrl.forge import sampling as forge_sampling  # noqa: E402
from lib_masactrl.session import GenerationSession  # noqa: E402
from lib_masactrl.steps import PassSteps  # noqa: E402

LEVELS = (14.6, 7.0, 3.0, 1.0)
MODES = {"mutual": {"mode": "mutual"}, "union": {"mode": "union"}, "strength 0.5": {"mode": "mutual", "strength": 0.5}}


def patcher(kind: str, channels: int, device: str, dtype: torch.dtype) -> UnetPatcher:
    network = IntegratedUNet2DConditionModel(model_channels=channels, num_heads=max(channels // 16, 1), **LAYOUTS[kind])
    _seed_weights(network, seed=0)
    return UnetPatcher(KModel(network.eval().requires_grad_(False).to(device=device, dtype=dtype)))


def controlled(base: UnetPatcher, settings: dict) -> UnetPatcher:
    """A clone of ``base`` with MasaCtrl installed for one pass, from the first step and layer."""
    network = base.model.diffusion_model
    session = GenerationSession(ScriptArgs(enabled=True, start_step=0, start_layer=0, **settings), 2, network)
    p = SimpleNamespace(sd_model=SimpleNamespace(forge_objects=SimpleNamespace(unet=base)))
    session.start_pass(network, True, PassSteps.from_levels(LEVELS), masks=None,
                       attacher=forge_sampling.attacher_for(p, session, False), rows_needed=False)
    return p.sd_model.forge_objects.unet


def evaluation(patcher: UnetPatcher, x: torch.Tensor, cond: list, uncond: list):
    sigmas = torch.full((x.shape[0],), LEVELS[0], device=x.device, dtype=x.dtype)

    def call() -> torch.Tensor:
        with torch.no_grad():
            return sampling_function_inner(patcher.model, x, sigmas, uncond, cond, 5.0, patcher.model_options)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["sd15", "sdxl"], choices=list(LAYOUTS))
    parser.add_argument("--channels", type=int, default=32, help="base channels of the U-Net (SD: 320)")
    parser.add_argument("--latents", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    print(f"one guided evaluation of one pair (4 rows), controlled / plain: median of {args.repeats} for time, "
          f"{args.channels} channels, {args.device} {args.dtype}")
    columns = ["layout", "latent", "plain s", *MODES, "plain MiB", *(f"{mode} memory" for mode in MODES)]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for kind in args.kinds:
        base = patcher(kind, args.channels, args.device, dtype)
        width = LAYOUTS[kind]["context_dim"]
        for latent in args.latents:
            generator = torch.Generator().manual_seed(latent)
            x = (torch.randn(2, 4, latent, latent, generator=generator) * LEVELS[0]).to(args.device, dtype)
            cond, uncond = (compiled(torch.randn(2, 77, width, generator=generator).to(args.device, dtype)) for _ in range(2))
            calls = {"plain": evaluation(base, x, cond, uncond)}
            calls.update({mode: evaluation(controlled(base, settings), x, cond, uncond) for mode, settings in MODES.items()})
            for call in calls.values():
                call()
            times = {name: [] for name in calls}
            for _ in range(args.repeats):
                for name, call in calls.items():
                    times[name].append(measure.seconds(call, args.device))
            plain = statistics.median(times["plain"])
            memory = {name: measure.peak_memory(call, args.device) for name, call in calls.items()}
            ratios = " | ".join(f"{statistics.median(times[mode]) / plain:.3f}x" for mode in MODES)
            memories = " | ".join(f"{memory[mode] / memory['plain']:.3f}x" for mode in MODES)
            print(f"| {kind} | {latent}² | {plain:.4f} | {ratios} | {memory['plain'] / 2**20:.1f} | {memories} |")


if __name__ == "__main__":
    main()
