"""Mirrors modules/sd_schedulers.py: the "Schedule type" choices and their sigma functions.

The real file replaces k_diffusion.sampling.to_d at import (same formula); the stand-in does that in
install()/uninstall() (called by the harness) so the change can be undone."""

import dataclasses

import k_diffusion
import numpy as np
import torch

from modules import shared


def to_d(x, sigma, denoised):
    # mirrors sd_schedulers.to_d: the Karras ODE derivative
    return (x - denoised) / sigma


_original_to_d = None


def install():
    global _original_to_d
    if _original_to_d is None:
        _original_to_d = k_diffusion.sampling.to_d
        k_diffusion.sampling.to_d = to_d


def uninstall():
    global _original_to_d
    if _original_to_d is not None:
        k_diffusion.sampling.to_d = _original_to_d
        _original_to_d = None


@dataclasses.dataclass
class Scheduler:
    name: str
    label: str
    function: any
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list = None


def uniform(n, sigma_min, sigma_max, inner_model, device):
    return inner_model.get_sigmas(n).to(device)


def sgm_uniform(n, sigma_min, sigma_max, inner_model, device):
    start = inner_model.sigma_to_t(torch.tensor(sigma_max))
    end = inner_model.sigma_to_t(torch.tensor(sigma_min))
    sigmas = [inner_model.t_to_sigma(ts) for ts in torch.linspace(start, end, n + 1)[:-1]]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


def get_align_your_steps_sigmas(n, sigma_min, sigma_max, device):
    # mirrors sd_schedulers.get_align_your_steps_sigmas: NVIDIA's tabulated sigmas, log-linearly resampled
    def loglinear_interp(t_steps, num_steps):
        xs = np.linspace(0, 1, len(t_steps))
        ys = np.log(t_steps[::-1])
        new_ys = np.interp(np.linspace(0, 1, num_steps), xs, ys)
        return np.exp(new_ys)[::-1].copy()

    if shared.sd_model.is_sdxl:
        sigmas = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
    else:
        sigmas = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]

    if n != len(sigmas):
        sigmas = np.append(loglinear_interp(sigmas, n), [0.0])
    else:
        sigmas.append(0.0)
    return torch.FloatTensor(sigmas).to(device)


def kl_optimal(n, sigma_min, sigma_max, device):
    alpha_min = torch.arctan(torch.tensor(sigma_min, device=device))
    alpha_max = torch.arctan(torch.tensor(sigma_max, device=device))
    step_indices = torch.arange(n + 1, device=device)
    return torch.tan(step_indices / n * alpha_min + (1.0 - step_indices / n) * alpha_max)


def simple_scheduler(n, sigma_min, sigma_max, inner_model, device):
    sigmas = []
    stride = len(inner_model.sigmas) / n
    for x in range(n):
        sigmas += [float(inner_model.sigmas[-(1 + int(x * stride))])]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


def normal_scheduler(n, sigma_min, sigma_max, inner_model, device, sgm=False, floor=False):
    start = inner_model.sigma_to_t(torch.tensor(sigma_max))
    end = inner_model.sigma_to_t(torch.tensor(sigma_min))
    timesteps = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    sigmas = [inner_model.t_to_sigma(ts) for ts in timesteps]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


def ddim_scheduler(n, sigma_min, sigma_max, inner_model, device):
    sigmas = []
    stride = max(len(inner_model.sigmas) // n, 1)
    x = 1
    while x < len(inner_model.sigmas):
        sigmas += [float(inner_model.sigmas[x])]
        x += stride
    sigmas = sigmas[::-1]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


def beta_scheduler(n, sigma_min, sigma_max, inner_model, device):
    from scipy import stats

    alpha = shared.opts.beta_dist_alpha
    beta = shared.opts.beta_dist_beta
    timesteps = [stats.beta.ppf(x, alpha, beta) for x in 1 - np.linspace(0, 1, n)]
    sigmas = [sigma_min + (x * (sigma_max - sigma_min)) for x in timesteps]
    sigmas += [0.0]
    return torch.FloatTensor(sigmas).to(device)


schedulers = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", k_diffusion.sampling.get_sigmas_karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", k_diffusion.sampling.get_sigmas_exponential),
    Scheduler("polyexponential", "Polyexponential", k_diffusion.sampling.get_sigmas_polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=["SGMUniform"]),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", get_align_your_steps_sigmas),
    Scheduler("simple", "Simple", simple_scheduler, need_inner_model=True),
    Scheduler("normal", "Normal", normal_scheduler, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim_scheduler, need_inner_model=True),
    Scheduler("beta", "Beta", beta_scheduler, need_inner_model=True),
]

schedulers_map = {**{x.name: x for x in schedulers}, **{x.label: x for x in schedulers}}
