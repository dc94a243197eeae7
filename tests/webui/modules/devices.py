"""Mirrors modules/devices.py: device/dtype globals and autocast helpers, for a CPU-only host.

Simplified: float32 everywhere, autocast contexts are null contexts (the real ``autocast`` is also a
null context when dtype is float32), torch_gc is a no-op."""

import contextlib

import torch

cpu = torch.device("cpu")
device = device_interrogate = device_gfpgan = device_esrgan = device_codeformer = cpu
dtype = torch.float32
dtype_vae = torch.float32
dtype_unet = torch.float32
dtype_inference = torch.float32
unet_needs_upcast = False
fp8 = False
nv_rng = None


class NansException(Exception):
    pass


def torch_gc():
    pass


def get_optimal_device():
    return cpu


def get_device_for(task):
    return cpu


def cond_cast_unet(input):
    # mirrors devices.cond_cast_unet: casts to the U-Net dtype only when it needs upcasting
    return input.to(dtype_unet) if unet_needs_upcast else input


def cond_cast_float(input):
    return input.float() if unet_needs_upcast else input


def autocast(disable=False):
    # mirrors devices.autocast: a null context for float32 (what the real one returns then)
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


def test_for_nans(x, where):
    # mirrors devices.test_for_nans: raises only if every value is NaN (checks the first element)
    if not torch.isnan(x[(0,) * len(x.shape)]):
        return
    if where == "unet":
        message = "A tensor with all NaNs was produced in Unet."
    elif where == "vae":
        message = "A tensor with all NaNs was produced in VAE."
    else:
        message = "A tensor with all NaNs was produced."
    raise NansException(message)


def first_time_calculation():
    pass


def torch_npu_set_device():
    pass


# assigned by modules/rng.py, as in the real host
randn = randn_local = randn_like = randn_without_seed = manual_seed = None
