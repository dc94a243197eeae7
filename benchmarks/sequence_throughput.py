"""Time per target image of a sequence, one source against pairs, measured in one run.

For n targets, pairs need 2n images (n sources, n targets) and one source n + 1, so with
classifier-free guidance a denoising step runs 4n rows against 2(n + 1): a saving of
(n - 1) / (2n) of the rows. This times one controlled U-Net call with each layout, for 3 and 7
targets (median of several, the two layouts interleaved), and prints the time per target.

    python benchmarks/sequence_throughput.py                       # tiny U-Net, CPU
    python benchmarks/sequence_throughput.py --unet sd15 --device cuda --dtype float16 --latent 64
"""

from __future__ import annotations

import argparse
import statistics

import measure
import torch
from unet_shapes import add_arguments, build, inputs

from lib_masactrl import MasaCtrlSettings, StepLayout, attach
from lib_masactrl.pairing import one_source, pair_halves

TARGETS = (3, 7)


def timed_call(unet, attachment, layout, latent: int, context_dim: int, device: str, dtype: str) -> float:
    x, t, context = inputs(len(layout), latent, device, dtype, context_dim)
    attachment.controller.begin_step(10, layout)
    with torch.no_grad():
        return measure.seconds(lambda: unet(x, t, context=context), device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--latent", type=int, default=32, help="latent side (image side / 8)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    unet, context_dim = build(args.unet, args.device, args.dtype)
    layouts = {"pairs": pair_halves, "one source": one_source}
    print(f"time per target image (one controlled U-Net call with CFG, median of {args.repeats}; "
          f"{args.unet} U-Net, {args.latent}^2 latent, {args.device}, {args.dtype})")
    print(f"{'targets':>7} {'layout':>10} {'rows':>5} {'s/call':>8} {'s/target':>9} {'one source / pairs':>19}")
    with attach(unet, MasaCtrlSettings(start_step=0)) as attachment:
        for targets in TARGETS:
            stacks = {name: StepLayout.cfg(make(2 * targets if name == "pairs" else targets + 1))
                      for name, make in layouts.items()}
            times = {name: [] for name in layouts}
            for layout in stacks.values():
                timed_call(unet, attachment, layout, args.latent, context_dim, args.device, args.dtype)  # warm up
            for _ in range(args.repeats):
                for name, layout in stacks.items():
                    times[name].append(timed_call(unet, attachment, layout, args.latent, context_dim, args.device, args.dtype))
            medians = {name: statistics.median(values) for name, values in times.items()}
            for name, layout in stacks.items():
                ratio = f"{medians['one source'] / medians['pairs']:>18.3f}x" if name == "one source" else ""
                print(f"{targets:>7} {name:>10} {len(layout):>5} {medians[name]:>8.4f} "
                      f"{medians[name] / targets:>9.4f} {ratio}")


if __name__ == "__main__":
    main()
