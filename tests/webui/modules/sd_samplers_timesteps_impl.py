"""Stand-in for the WebUI's modules/sd_samplers_timesteps_impl.py: the samplers that step over model
timesteps (0..999) instead of sigmas: DDIM, DDIM CFG++, PLMS and UniPC.

``model`` is the CFGDenoiserTimesteps of sd_samplers_timesteps: called with a timestep per image, it
returns the guided noise prediction eps. ``timesteps`` is increasing; the samplers walk it from the top
and never evaluate the model at its first entry (UniPC: at its own continuous times over the range).
alpha below is the model's alphas_cumprod (the signal fraction of the noisy latent) at a timestep.

The real module also imports torch_utils for its float64 helper; the stand-in has no torch_utils (the
schedule is read as Python floats here)."""

from __future__ import annotations

import k_diffusion.sampling
import torch

from modules import shared
from modules.models.diffusion.uni_pc import uni_pc

# Adams-Bashforth weights (newest eps first) and divisor, by the number of earlier eps values PLMS has
_ADAMS_BASHFORTH = {1: ((3, -1), 2), 2: ((23, -16, 5), 12), 3: ((55, -59, 37, -9), 24)}


def _alphas_cumprod(model) -> torch.Tensor:
    # CFGDenoiserTimesteps -> CompVisTimestepsDenoiser -> the loaded model
    return model.inner_model.inner_model.alphas_cumprod


def _steps_down(model, x, timesteps):
    """(index, timestep, previous timestep, alpha there, alpha at the previous one), from the top down to
    the second timestep; the alphas as 0-d tensors of x's dtype, so the updates round as the real ones do."""
    alphas = _alphas_cumprod(model)
    for index in range(len(timesteps) - 1):
        t, t_prev = timesteps[len(timesteps) - 1 - index], timesteps[len(timesteps) - 2 - index]
        yield index, t.item(), t_prev.item(), alphas[t].to(x), alphas[t_prev].to(x)


def _ddim_step(x, eps, alpha, alpha_prev, direction, sigma=0.0):
    """The DDIM update without its noise term: x' = sqrt(a') x0 + sqrt(1 - a' - sigma^2) direction, where
    x0 = (x - sqrt(1 - a) eps) / sqrt(a) is the predicted clean latent. Returns (x', x0)."""
    x0 = (x - (1 - alpha).sqrt() * eps) / alpha.sqrt()
    return alpha_prev.sqrt() * x0 + (1.0 - alpha_prev - sigma**2).sqrt() * direction, x0


def _ddim(model, x, timesteps, extra_args, callback, eta, cfgpp):
    """DDIM steps plus noise sigma z, sigma = eta sqrt((1 - a') / (1 - a) (1 - a / a')). The direction
    term uses eps, or with CFG++ (Chung et al., 2024) the unconditional eps. z is drawn through
    k_diffusion.sampling.torch (TorchHijack: p.rng) on every step, whatever eta, as the real sampler does."""
    extra_args = extra_args or {}
    per_image = x.new_ones(x.shape[0])
    for i, t, _, alpha, alpha_prev in _steps_down(model, x, timesteps):
        eps = model(x, t * per_image, **extra_args)
        # in float64 from the float32 alphas, 1 / (1 - a) taken in float32: how the real code's mix of numpy
        # and torch evaluates it
        a, a_prev = alpha.double(), alpha_prev.double()
        sigma = (eta * torch.sqrt((1 - alpha).reciprocal().double() * (1 - a_prev) * (1 - a / a_prev))).to(x.dtype)
        x, x0 = _ddim_step(x, eps, alpha, alpha_prev, model.last_noise_uncond if cfgpp else eps, sigma)
        x = x + sigma * k_diffusion.sampling.torch.randn_like(x)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": x0})
    return x


@torch.no_grad()
def ddim(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    """sd_samplers_timesteps_impl.ddim (Song et al., "Denoising Diffusion Implicit Models")."""
    return _ddim(model, x, timesteps, extra_args, callback, eta, cfgpp=False)


@torch.no_grad()
def ddim_cfgpp(model, x, timesteps, extra_args=None, callback=None, disable=None, eta=0.0):
    """sd_samplers_timesteps_impl.ddim_cfgpp: DDIM with CFG++. The CFG scale is divided by 12.5 (CFG++
    works with guidance in [0, 1]) and the denoiser keeps each call's unconditional eps; both stay set
    on this sampler's denoiser, as in the real one."""
    model.cond_scale_miltiplier = 1 / 12.5
    model.need_last_noise_uncond = True
    return _ddim(model, x, timesteps, extra_args, callback, eta, cfgpp=True)


@torch.no_grad()
def plms(model, x, timesteps, extra_args=None, callback=None, disable=None):
    """sd_samplers_timesteps_impl.plms (Liu et al., pseudo linear multistep): deterministic DDIM updates
    with an eps extrapolated Adams-Bashforth style from the earlier steps' eps (up to 4th order). The
    first step has none and takes a pseudo improved Euler step instead, one extra model call at the
    next timestep."""
    extra_args = extra_args or {}
    per_image = x.new_ones(x.shape[0])
    earlier = []
    for i, t, t_prev, alpha, alpha_prev in _steps_down(model, x, timesteps):
        eps = model(x, t * per_image, **extra_args)
        if earlier:
            weights, divisor = _ADAMS_BASHFORTH[len(earlier)]
            combined = sum(w * e for w, e in zip(weights, [eps, *reversed(earlier)])) / divisor
        else:
            trial, _ = _ddim_step(x, eps, alpha, alpha_prev, eps)
            combined = (eps + model(trial, t_prev * per_image, **extra_args)) / 2
        x, x0 = _ddim_step(x, combined, alpha, alpha_prev, combined)
        earlier = [*earlier, eps][-3:]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": x0})
    return x


class UniPCCFG(uni_pc.UniPC):
    """sd_samplers_timesteps_impl.UniPCCFG: UniPC over the CFG denoiser, whose timestep for continuous
    time t is (t - 1/N) * 1000; every update reports its own running index to the sampler callback."""

    def __init__(self, cfg_model, extra_args, callback, noise_schedule, variant):
        super().__init__(noise_schedule, variant)
        self.cfg_model, self.extra_args, self.callback = cfg_model, extra_args, callback
        self.index = 0

    def model(self, x, t):
        return self.cfg_model(x, (t - 1.0 / self.noise_schedule.total_N) * 1000.0, **self.extra_args)

    def after_update(self, x, model_x):
        self.callback({"x": x, "i": self.index, "sigma": 0, "sigma_hat": 0, "denoised": model_x})
        self.index += 1


def unipc(model, x, timesteps, extra_args=None, callback=None, disable=None, is_img2img=False):
    """sd_samplers_timesteps_impl.unipc: len(timesteps) UniPC updates with the uni_pc_* settings (variant,
    skip type, order, lower order final). img2img starts at the continuous time of the highest scheduled
    timestep plus 1/1000, as the real one does; txt2img at t = 1."""
    schedule = uni_pc.NoiseScheduleVP("discrete", alphas_cumprod=_alphas_cumprod(model))
    solver = UniPCCFG(model, extra_args, callback, schedule, shared.opts.uni_pc_variant)
    options = shared.opts
    return solver.sample(
        x,
        steps=len(timesteps),
        t_start=timesteps[-1] / 1000 + 1 / 1000 if is_img2img else None,
        order=options.uni_pc_order,
        skip_type=options.uni_pc_skip_type,
        lower_order_final=options.uni_pc_lower_order_final,
    )
