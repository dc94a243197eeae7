"""Stand-in for the WebUI's modules/sd_samplers_lcm.py: the "LCM" sampler for latent consistency models.
It is a KDiffusionSampler whose model wrapper knows only LCM's 50 training timesteps (19, 39, ..., 999)
and applies the consistency model's boundary condition to the denoised output; each step jumps to
that prediction and re-noises it to the next level."""

from __future__ import annotations

import torch
from k_diffusion import sampling, utils
from k_diffusion.external import DiscreteEpsDDPMDenoiser

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, sd_samplers_kdiffusion, shared

_MODEL_TIMESTEPS, _LCM_TIMESTEPS = 1000, 50


def _boundary_condition(timesteps, denoised, x, sigma_data=0.5):
    """LCM's c_skip * x + c_out * denoised, with the timestep scaled by 10: at low noise the output
    stays close to the input."""
    scaled = utils.append_dims(timesteps, denoised.ndim) * 10.0
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_out * denoised + c_skip * x


class LCMCompVisDenoiser(DiscreteEpsDDPMDenoiser):
    """sd_samplers_lcm.LCMCompVisDenoiser: k-diffusion's eps denoiser over the alphas of the 50 LCM
    timesteps. Its sigma_to_t answers with the model timestep of the nearest of them."""

    def __init__(self, model):
        stride = _MODEL_TIMESTEPS // _LCM_TIMESTEPS
        super().__init__(model, model.alphas_cumprod[stride - 1 :: stride].to(torch.float32), quantize=None)
        self.skip_steps = stride

    def get_sigmas(self, n=None):
        """n levels evenly spaced in model timestep from the highest LCM level to the lowest, then 0."""
        if n is None:
            return sampling.append_zero(self.sigmas.flip(0))
        first, last = self.sigma_to_t(self.sigma_max), self.sigma_to_t(self.sigma_min)
        return sampling.append_zero(self.t_to_sigma(torch.linspace(first, last, n, device=shared.sd_model.device)))

    def sigma_to_t(self, sigma, quantize=None):
        nearest = (sigma.log() - self.log_sigmas[:, None]).abs().argmin(dim=0).view(sigma.shape)
        return nearest * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, timestep):
        index = ((timestep - (self.skip_steps - 1)) / self.skip_steps).float()
        return super().t_to_sigma(torch.clamp(index, min=0, max=len(self.sigmas) - 1))

    def get_eps(self, *args, **kwargs):
        return self.inner_model.apply_model(*args, **kwargs)

    def forward(self, input, sigma, **kwargs):
        return _boundary_condition(self.sigma_to_t(sigma), super().forward(input, sigma, **kwargs), input)


def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """sd_samplers_lcm.sample_lcm: x becomes the model's prediction, plus fresh noise at the next level
    unless that is 0. The default noise comes from k-diffusion's default_noise_sampler, i.e. the
    WebUI's TorchHijack (p.rng) while sampling."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or sampling.default_noise_sampler(x)
    ones = x.new_ones([x.shape[0]])
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        denoised = model(x, sigma * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = denoised if sigma_next <= 0 else denoised + sigma_next * noise_sampler(sigma, sigma_next)
    return x


class CFGDenoiserLCM(sd_samplers_cfg_denoiser.CFGDenoiser):
    """sd_samplers_lcm.CFGDenoiserLCM: the CFG denoiser over LCMCompVisDenoiser."""

    def make_wrapper(self, model):
        return LCMCompVisDenoiser(model)


class LCMSampler(sd_samplers_kdiffusion.KDiffusionSampler):
    """sd_samplers_lcm.LCMSampler. Its entry names no scheduler, so "Automatic" gives
    LCMCompVisDenoiser.get_sigmas."""

    denoiser_class = CFGDenoiserLCM


samplers_data_lcm = [sd_samplers_common.sampler_entry("LCM", sample_lcm, ["k_lcm"], {}, LCMSampler)]
