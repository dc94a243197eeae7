"""Cost of MasaCtrl against plain generation, measured in the same run on the same U-Net.

For each U-Net size, latent size and row count it times one U-Net call (median of several,
plain and controlled calls interleaved so that drift hits both alike) and measures the peak
memory the call adds, then prints controlled/plain ratios. The host attention is PyTorch's
scaled_dot_product_attention, which is what the WebUI installs by default on torch 2.

Peak memory is the high-water mark of tensor memory allocated during the call: on CPU replayed
from the allocations and frees torch's profiler records, on CUDA torch's own peak counter.

    python benchmarks/engine_overhead.py            # the tiny and the small U-Net, CPU
    python benchmarks/engine_overhead.py --quick    # tiny U-Net only
    python benchmarks/engine_overhead.py --unet sd15 --device cuda --dtype float16   # SD1.5's full size
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import measure  # noqa: E402
import torch  # noqa: E402
from unet_shapes import add_arguments, build  # noqa: E402
from unet_shapes import inputs as unet_inputs  # noqa: E402

import ldm.modules.attention as ldm_attention  # noqa: E402
from lib_masactrl import MasaCtrlSettings, MaskGuide, StepLayout, attach  # noqa: E402

UNETS = {"tiny (32 ch)": "tiny", "small (128 ch)": "small"}
LATENTS = (32, 64)
ROWS = (2, 4)
MODES = (
    ("mutual, layers 10-15", "mutual", 10),
    ("mutual, all layers", "mutual", 0),
    ("union, layers 10-15", "union", 10),
    ("word masks, layers 10-15", "masked", 10),
)
# Subject-word masks: the maps of two tokens of each image's prompt, collected at the latent/4
# layers while the masks of the previous denoiser call steer the controlled layers.
MASK_TOKENS = {0: ((5, 6),), 1: ((5, 6),)}


def attach_mode(unet, mode: str, start_layer: int):
    if mode == "masked":
        settings = MasaCtrlSettings(mode="mutual", start_step=0, start_layer=start_layer, mask_words="subject")
        return attach(unet, settings, masks=MaskGuide(token_positions=MASK_TOKENS))
    return attach(unet, MasaCtrlSettings(mode=mode, start_step=0, start_layer=start_layer))


def sdp_attention(self, x, context=None, mask=None, **kwargs):
    """The WebUI's default attention on torch 2 (modules/sd_hijack_optimizations.py, sdp)."""
    context = x if context is None else context
    q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).flatten(2))


def inputs(rows: int, latent: int, device: str, dtype: str, context_dim: int):
    x, t, context = unet_inputs(rows, latent, device, dtype, context_dim)
    return x, t, context, StepLayout.cfg((None, 0), uncond=rows == 4)


def time_call(unet, attachment, layout, x, t, context, device: str) -> float:
    if attachment is not None:
        attachment.controller.begin_step(10, layout)
    with torch.no_grad():
        return measure.seconds(lambda: unet(x, t, context=context), device)


def measure_times(kind: str, latent: int, rows: int, repeats: int, device: str, dtype: str) -> dict:
    unet, context_dim = build(kind, device, dtype)
    x, t, context, layout = inputs(rows, latent, device, dtype, context_dim)
    results = {}
    for label, mode, start_layer in MODES:
        attachment = attach_mode(unet, mode, start_layer)
        plain, controlled = [], []
        try:
            for _ in range(2):
                time_call(unet, attachment, layout, x, t, context, device)
            for _ in range(repeats):
                attachment.controller.begin_step(None, None)
                plain.append(time_call(unet, None, layout, x, t, context, device))
                controlled.append(time_call(unet, attachment, layout, x, t, context, device))
        finally:
            attachment.detach()
        results[label] = statistics.median(controlled) / statistics.median(plain)
        results["plain seconds"] = statistics.median(plain)
    return results


def peak_memory(kind: str, latent: int, rows: int, mode: str, start_layer: int, device: str, dtype: str) -> float:
    """Extra peak memory of one U-Net call in bytes (mode "plain" for no control)."""
    unet, context_dim = build(kind, device, dtype)
    x, t, context, layout = inputs(rows, latent, device, dtype, context_dim)
    if mode == "plain":
        with torch.no_grad():
            return measure.peak_memory(lambda: unet(x, t, context=context), device)
    with attach_mode(unet, mode, start_layer) as attachment, torch.no_grad():
        attachment.controller.begin_step(10, layout)
        unet(x, t, context=context)  # a previous call, whose maps the measured call's masks use
        attachment.controller.begin_step(11, layout)
        return measure.peak_memory(lambda: unet(x, t, context=context), device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny U-Net only")
    parser.add_argument("--repeats", type=int, default=7)
    add_arguments(parser)
    args = parser.parse_args()
    ldm_attention.CrossAttention.forward = sdp_attention
    torch.manual_seed(0)

    if args.unet != "tiny":
        unets = {args.unet: args.unet}
    else:
        unets = {"tiny (32 ch)": "tiny"} if args.quick else UNETS
    header = f"{'U-Net':<15} {'latent':>6} {'rows':>4} {'plain s/call':>12} " + " ".join(f"{label:>22}" for label, _, _ in MODES)
    print(f"time per U-Net call, controlled / plain (median of {args.repeats}, device {args.device})")
    print(header)
    for name, kind in unets.items():
        for latent in LATENTS:
            for rows in ROWS:
                result = measure_times(kind, latent, rows, args.repeats, args.device, args.dtype)
                ratios = " ".join(f"{result[label]:>21.3f}x" for label, _, _ in MODES)
                print(f"{name:<15} {latent:>4}^2 {rows:>4} {result['plain seconds']:>12.4f} {ratios}")

    print()
    print("peak memory added by one U-Net call, controlled / plain")
    print(header.replace("plain s/call", "plain MiB".rjust(12)))
    for name, kind in unets.items():
        for latent in LATENTS:
            for rows in ROWS:
                plain = peak_memory(kind, latent, rows, "plain", 0, args.device, args.dtype)
                ratios = " ".join(
                    f"{peak_memory(kind, latent, rows, mode, start, args.device, args.dtype) / plain:>21.3f}x"
                    for _, mode, start in MODES
                )
                print(f"{name:<15} {latent:>4}^2 {rows:>4} {plain / 2**20:>12.1f} {ratios}")


if __name__ == "__main__":
    main()
