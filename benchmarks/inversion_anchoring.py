"""Real-image editing with and without "Source follows the inversion", measured in one run in the
stand-in WebUI (tests/webui) with the real k-diffusion samplers and the tiny ldm U-Net:

1. the reconstruction error of a latent inverted and then denoised freely, for both places an
   inversion step can read the model ("next level", DDIM inversion; "current level"): first on
   the bare U-Net under k-diffusion's own samplers (a random text context), then of the source in
   the stand-in WebUI (its text encoder, an empty source prompt);
2. time and peak tensor memory of an edit (inversion from the cache, then sampling), following the
   inversion or not, and the reconstruction error both ways.

The error is the relative L2 distance of the source's final latent to the init latent. The U-Net
has random weights, so its eps varies with the latent far more than a trained model's: the errors
are larger than on a real checkpoint, and what counts is how they compare.

    python benchmarks/inversion_anchoring.py
"""

from __future__ import annotations

import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "webui")]

import measure  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from k_diffusion.external import CompVisDenoiser  # noqa: E402
from k_diffusion.sampling import sample_dpmpp_2m, sample_euler, sample_heun  # noqa: E402
from PIL import Image  # noqa: E402
from tiny_unets import sd15_unet  # noqa: E402

from lib_masactrl.inversion import invert  # noqa: E402

SAMPLERS = ("Euler", "Heun", "DPM++ 2M")
STEPS = (4, 10, 30)
REPEATS = 5


class LatentDiffusion:
    """What ``CompVisDenoiser`` reads of an ldm model: SD1's schedule and ``apply_model``."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, timesteps=t, context=cond)


def engine_errors() -> None:
    wrap = CompVisDenoiser(LatentDiffusion(sd15_unet(0)))
    generator = torch.Generator().manual_seed(3)
    x0, context = torch.randn(1, 4, 8, 8, generator=generator), torch.randn(1, 4, 768, generator=generator)
    samplers = {"Euler": sample_euler, "Heun": sample_heun, "DPM++ 2M": sample_dpmpp_2m}
    print("the bare U-Net: reconstruction error of an inverted latent denoised freely (relative L2)")
    print(f"{'sampler':<10} {'steps':>5} {'next level':>11} {'current level':>14}")
    for name, sample in samplers.items():
        for steps in STEPS:
            sigmas = wrap.get_sigmas(steps)
            errors = []
            for reads in ("next level", "current level"):
                start = invert(x0, sigmas, lambda x, s: wrap(x, s, cond=context), float(wrap.sigmas[0]), reads=reads).start
                out = sample(wrap, start, sigmas, extra_args={"cond": context}, disable=True)
                errors.append(float((out - x0).norm() / x0.norm()))
            print(f"{name:<10} {steps:>5} {errors[0]:>11.4f} {errors[1]:>14.4f}")
    print()


def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(np.kron(rng.uniform(40, 215, size=(4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8))


def script_args(follow: bool) -> dict:
    from lib_masactrl.fields import FIELDS

    values = {"enabled": True, "start_step": 1, "follow_inversion": follow}
    return {"MasaCtrl": [values.get(field.name, field.default) for field in FIELDS]}


class InitLatent:
    """The init latent of the last generation, read where the denoiser sees it."""

    def __init__(self) -> None:
        from modules import script_callbacks

        self.latent = None
        script_callbacks.on_cfg_denoiser(self.record, name="benchmark_init_latent")

    def record(self, params) -> None:
        self.latent = params.denoiser.p.init_latent[0].detach().clone()


def edit(host, sampler: str, steps: int, follow: bool):
    return host.img2img(photo(), "a photo of a corgi running", steps=steps, sampler_name=sampler, denoising_strength=1.0,
                        batch_size=2, seed=5, script_args=script_args(follow))


def error(host, init: InitLatent, sampler: str, steps: int, follow: bool) -> float:
    source = edit(host, sampler, steps, follow).standin_latents[0]
    return float((source - init.latent).norm() / init.latent.norm())


def peak_memory(host, sampler: str, steps: int, follow: bool) -> float:
    """High-water mark of tensor memory allocated during one edit."""
    return measure.peak_memory(lambda: edit(host, sampler, steps, follow), "cpu")


def main() -> None:
    from host import WebUIHost

    torch.set_num_threads(1)
    engine_errors()
    host = WebUIHost(sd15_unet(0), extension_dir=str(ROOT))
    try:
        init = InitLatent()
        print("the stand-in WebUI: reconstruction error of the source denoised freely (relative L2 to the init latent)")
        print(f"{'sampler':<10} {'steps':>5} {'next level':>11} {'current level':>14}")
        for sampler in SAMPLERS:
            for steps in STEPS:
                errors = []
                for reads in ("next level", "current level"):
                    host.set_setting("masactrl_inversion_reads", reads)
                    errors.append(error(host, init, sampler, steps, follow=False))
                print(f"{sampler:<10} {steps:>5} {errors[0]:>11.4f} {errors[1]:>14.4f}")
        host.set_setting("masactrl_inversion_reads", "next level")

        print()
        print(f"one edit, following the inversion / not (median of {REPEATS}; the inversion comes from the cache)")
        print(f"{'sampler':<10} {'steps':>5} {'time':>7} {'peak memory':>12} {'error on':>9} {'error off':>10}")
        for sampler in SAMPLERS:
            for steps in (10, 30):
                edit(host, sampler, steps, True)  # fill the cache
                times = {True: [], False: []}
                for _ in range(REPEATS):
                    for follow in (True, False):
                        start = time.perf_counter()
                        edit(host, sampler, steps, follow)
                        times[follow].append(time.perf_counter() - start)
                ratio = statistics.median(times[True]) / statistics.median(times[False])
                memory = peak_memory(host, sampler, steps, True) / peak_memory(host, sampler, steps, False)
                on, off = (error(host, init, sampler, steps, follow) for follow in (True, False))
                print(f"{sampler:<10} {steps:>5} {ratio:>6.3f}x {memory:>11.3f}x {on:>9.1e} {off:>10.4f}")
    finally:
        host.teardown()


if __name__ == "__main__":
    main()
