"""Stand-in for the WebUI's modules/sd_schedulers.py: the "Schedule type" choices and the noise-level
(sigma) sequence each one produces for the k-diffusion samplers.

The real module also swaps k-diffusion's ``to_d`` for its own at import; here :func:`install` and
:func:`uninstall` (called by the harness) do that, so a torn-down host leaves k-diffusion as it found it."""

from __future__ import annotations

import dataclasses
from typing import Callable

import k_diffusion.sampling
import numpy as np
import torch

from modules import shared


def to_d(x, sigma, denoised):
    """sd_schedulers.to_d: the Karras ODE slope (x - denoised) / sigma. Unlike k-diffusion's own it does
    not append dimensions to sigma, which the samplers pass as a scalar anyway."""
    return (x - denoised) / sigma


_saved_to_d = []


def install() -> None:
    """Put the WebUI's ``to_d`` into k_diffusion.sampling, as importing the real module does."""
    if not _saved_to_d:
        _saved_to_d.append(k_diffusion.sampling.to_d)
        k_diffusion.sampling.to_d = to_d


def uninstall() -> None:
    """Give k-diffusion its own ``to_d`` back."""
    if _saved_to_d:
        k_diffusion.sampling.to_d = _saved_to_d.pop()


@dataclasses.dataclass
class Scheduler:
    """sd_schedulers.Scheduler: ``name`` is the internal key (sampler options name their default
    scheduler by it), ``label`` what the UI and the infotext show. ``default_rho`` -1 means the function
    takes no rho; ``need_inner_model`` functions get the model wrapper (its discrete sigma table)."""

    name: str
    label: str
    function: Callable | None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: list | None = None


def _sigmas_then_zero(values, device) -> torch.Tensor:
    return torch.FloatTensor([*map(float, values), 0.0]).to(device)


def uniform(n, sigma_min, sigma_max, inner_model, device):
    """sd_schedulers.uniform: the wrapper's own schedule (evenly spaced model timesteps)."""
    return inner_model.get_sigmas(n).to(device)


def normal_scheduler(n, sigma_min, sigma_max, inner_model, device, sgm=False):
    """sd_schedulers.normal_scheduler: timesteps spaced evenly between those of sigma_max and sigma_min,
    mapped back to sigmas. With ``sgm`` (sgm_uniform) the n points are the first n of n + 1, so the
    smallest sigma is never reached, as in Stability's sgm code."""
    first, last = (inner_model.sigma_to_t(torch.tensor(s)) for s in (sigma_max, sigma_min))
    times = torch.linspace(first, last, n + 1)[:-1] if sgm else torch.linspace(first, last, n)
    return _sigmas_then_zero([inner_model.t_to_sigma(t) for t in times], device)


def sgm_uniform(n, sigma_min, sigma_max, inner_model, device):
    """sd_schedulers.sgm_uniform: normal_scheduler with ``sgm``."""
    return normal_scheduler(n, sigma_min, sigma_max, inner_model, device, sgm=True)


def simple_scheduler(n, sigma_min, sigma_max, inner_model, device):
    """sd_schedulers.simple_scheduler: every (len / n)-th entry of the model's sigma table, from the top."""
    table = inner_model.sigmas
    stride = len(table) / n
    return _sigmas_then_zero([table[-(1 + int(k * stride))] for k in range(n)], device)


def ddim_scheduler(n, sigma_min, sigma_max, inner_model, device):
    """sd_schedulers.ddim_scheduler: the table entries 1, 1 + s, 1 + 2s, ... (s = len // n), highest first."""
    table = inner_model.sigmas
    picked = table[1 :: max(len(table) // n, 1)]
    return _sigmas_then_zero(reversed(picked.tolist()), device)


def beta_scheduler(n, sigma_min, sigma_max, inner_model, device):
    """sd_schedulers.beta_scheduler: sigmas placed at the quantiles of a Beta(alpha, beta) distribution
    (options beta_dist_alpha / beta_dist_beta), linearly between sigma_min and sigma_max."""
    from scipy import stats

    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), shared.opts.beta_dist_alpha, shared.opts.beta_dist_beta)
    return _sigmas_then_zero([sigma_min + q * (sigma_max - sigma_min) for q in quantiles], device)


def kl_optimal(n, sigma_min, sigma_max, device):
    """sd_schedulers.kl_optimal: n + 1 sigmas evenly spaced in arctan(sigma); it ends at sigma_min, not 0."""
    fraction = torch.arange(n + 1, device=device) / n
    angle_min, angle_max = (torch.arctan(torch.tensor(s, device=device)) for s in (sigma_min, sigma_max))
    return torch.tan(fraction * angle_min + (1.0 - fraction) * angle_max)


# NVIDIA's "Align Your Steps" 10-step sigmas (sd_schedulers.get_align_your_steps_sigmas)
_AYS_SIGMAS = {
    "sd1": [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029],
    "sdxl": [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029],
}


def get_align_your_steps_sigmas(n, sigma_min, sigma_max, device):
    """sd_schedulers.get_align_your_steps_sigmas: the tabulated sigmas of the model family, resampled
    log-linearly to n points when n is not the table's length."""
    table = _AYS_SIGMAS["sdxl" if shared.sd_model.is_sdxl else "sd1"]
    if n == len(table):
        return _sigmas_then_zero(table, device)
    log_reversed = np.log(table[::-1])
    resampled = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(table)), log_reversed)
    return _sigmas_then_zero(np.exp(resampled)[::-1], device)


def _build_schedulers() -> list[Scheduler]:
    kd = k_diffusion.sampling
    rows = [
        # label, function, extra fields; the name is the label in snake case unless given
        ("Automatic", None, {}),
        ("Uniform", uniform, {"need_inner_model": True}),
        ("Karras", kd.get_sigmas_karras, {"default_rho": 7.0}),
        ("Exponential", kd.get_sigmas_exponential, {}),
        ("Polyexponential", kd.get_sigmas_polyexponential, {"default_rho": 1.0}),
        ("SGM Uniform", sgm_uniform, {"need_inner_model": True, "aliases": ["SGMUniform"]}),
        ("KL Optimal", kl_optimal, {}),
        ("Align Your Steps", get_align_your_steps_sigmas, {}),
        ("Simple", simple_scheduler, {"need_inner_model": True}),
        ("Normal", normal_scheduler, {"need_inner_model": True}),
        ("DDIM", ddim_scheduler, {"need_inner_model": True}),
        ("Beta", beta_scheduler, {"need_inner_model": True}),
    ]
    return [Scheduler(label.lower().replace(" ", "_"), label, function, **extra) for label, function, extra in rows]


schedulers = _build_schedulers()
schedulers_map = {key: s for s in schedulers for key in (s.name, s.label)}
