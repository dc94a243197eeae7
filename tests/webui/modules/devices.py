"""Stand-in for modules/devices.py on a CPU-only machine: the device and dtypes the WebUI computes with.

Everything runs on the CPU in float32, which is the case where the real autocast helpers do nothing,
and there is no accelerator cache to empty. The real module's noise functions (``randn`` and friends)
are left out: the stand-in's modules/rng.py draws its noise itself."""

import contextlib

import torch

cpu = torch.device("cpu")
device = cpu
dtype = dtype_vae = dtype_unet = torch.float32
unet_needs_upcast = False
"""True in the real host when the U-Net runs in half precision but attention must be float32."""
fp8 = False
"""True in the real host when weights are stored in fp8 (the "FP8 weight" setting)."""


class NansException(Exception):
    """devices.py NansException: what test_for_nans raises."""


def torch_gc():
    """devices.py torch_gc: empty the accelerator's memory cache (nothing to do on the CPU)."""


def autocast(disable=False):
    """devices.py autocast: a null context when computing in float32, as here."""
    return contextlib.nullcontext()


def without_autocast(disable=False):
    """devices.py without_autocast: leave an autocast region (none is ever entered here)."""
    return contextlib.nullcontext()


def cond_cast_unet(input):
    """devices.py cond_cast_unet: to the U-Net's dtype, only when attention is upcast."""
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    """devices.py cond_cast_float: to float32, only when attention is upcast."""
    return input.float() if unet_needs_upcast else input


def test_for_nans(x, where):
    """devices.py test_for_nans: raise NansException when the tensor's first element is NaN (the real
    check's cheap stand-in for "the whole output is NaN"); ``where`` ("unet", "vae") names the culprit.
    The real message's hints about precision flags are left out."""
    if not torch.isnan(x[(0,) * x.dim()]):
        return
    culprit = {"unet": " in Unet", "vae": " in VAE"}.get(where, "")
    raise NansException(f"A tensor with NaNs was produced{culprit}. Use --disable-nan-check to disable this check.")
