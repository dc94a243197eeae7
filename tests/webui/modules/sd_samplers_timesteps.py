"""Stand-in for the WebUI's modules/sd_samplers_timesteps.py: CompVisSampler, which runs the timestep
samplers of sd_samplers_timesteps_impl (DDIM, DDIM CFG++, PLMS, UniPC) through CFGDenoiserTimesteps.

They differ from the k-diffusion samplers in that the denoiser gets timesteps (0..999) where those get
sigmas, returns the guided eps rather than a denoised latent, the initial noise is used unscaled, and the
inpainting mask is blended into the model input (``mask_before_denoising``). Their eta comes from the
eta_ddim setting (default 0, infotext "Eta DDIM").

Simplified: no v-prediction wrapper (the stand-in checkpoints are eps-prediction) and no
``sd_samplers_compvis`` / VanillaStableDiffusionSampler aliases for old extensions."""

from __future__ import annotations

import inspect

import torch

from modules import devices, sd_samplers_common, sd_samplers_timesteps_impl, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser


class CompVisTimestepsDenoiser(torch.nn.Module):
    """sd_samplers_timesteps.CompVisTimestepsDenoiser: the model's own eps prediction at timestep t."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model

    def forward(self, input, timesteps, **kwargs):
        return self.inner_model.apply_model(input, timesteps, **kwargs)


class CFGDenoiserTimesteps(CFGDenoiser):
    """sd_samplers_timesteps.CFGDenoiserTimesteps: "sigma" is the timestep; the predicted x0 (last latent,
    previews) is (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""

    def __init__(self, sampler):
        super().__init__(sampler)
        self.alphas = shared.sd_model.alphas_cumprod
        self.mask_before_denoising = True

    def get_pred_x0(self, x_in, x_out, sigma):
        alpha = self.alphas[sigma.to(dtype=int)][:, None, None, None]
        return (x_in - (1 - alpha).sqrt() * x_out) / alpha.sqrt()

    def make_wrapper(self, model):
        return CompVisTimestepsDenoiser(model)


class CompVisSampler(sd_samplers_common.Sampler):
    """sd_samplers_timesteps.CompVisSampler: ``funcname`` is the sampling function of
    sd_samplers_timesteps_impl."""

    eta_option_field, eta_infotext_field, eta_default = "eta_ddim", "Eta DDIM", 0.0

    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.model_wrap_cfg = CFGDenoiserTimesteps(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_timesteps(self, p, steps):
        """CompVisSampler.get_timesteps: 1, 1 + 1000 // steps, 1 + 2 * (1000 // steps), ... below 1001, kept
        within 999 (one more entry than steps when 1000 is not a multiple of it)."""
        steps += int(self.discards_penultimate(p))
        return torch.clip(torch.arange(0, 1000, 1000 // steps, device=devices.device) + 1, 0, 999)

    def _kwargs(self, p, **schedule):
        kwargs = self.initialize(p)
        accepted = inspect.signature(self.func).parameters
        kwargs.update((key, value) for key, value in schedule.items() if key in accepted)
        return kwargs

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        """CompVisSampler.sample (txt2img): the unit noise as the start latent, all the timesteps."""
        steps = steps or p.steps
        kwargs = self._kwargs(p, timesteps=self.get_timesteps(p, steps))
        return self.run_sampler(p, x, steps, kwargs, conditioning, unconditional_conditioning, image_conditioning, x)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        """CompVisSampler.sample_img2img: the init latent noised to timesteps[t_enc] as the forward
        process does (sqrt(a) x + sqrt(1 - a) noise), then the sampler over timesteps[:t_enc]."""
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        alpha = shared.sd_model.alphas_cumprod[timesteps[t_enc]]
        xi = x * torch.sqrt(alpha) + noise * torch.sqrt(1 - alpha)
        xi = self.add_extra_noise(p, x, noise, xi, scale=torch.sqrt(alpha))
        kwargs = self._kwargs(p, timesteps=timesteps[:t_enc], is_img2img=True)
        self.model_wrap_cfg.init_latent = x
        return self.run_sampler(p, xi, t_enc + 1, kwargs, conditioning, unconditional_conditioning, image_conditioning, x)


samplers_data_timesteps = [
    sd_samplers_common.sampler_entry(label, getattr(sd_samplers_timesteps_impl, function), [function], {}, CompVisSampler)
    for label, function in (("DDIM", "ddim"), ("DDIM CFG++", "ddim_cfgpp"), ("PLMS", "plms"), ("UniPC", "unipc"))
]
