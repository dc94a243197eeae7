"""Stand-in for the WebUI's modules/sd_samplers_kdiffusion.py: the samplers that run the real
k_diffusion.sampling functions (and the WebUI's own Restart, sd_samplers_extra) on sigmas, through
CFGDenoiserKDiffusion around k-diffusion's CompVisDenoiser.

Simplified: no v-prediction wrapper or model-provided denoiser (``create_denoiser``, SD3), since the
stand-in checkpoints are all eps-prediction SD1/SDXL models."""

from __future__ import annotations

import inspect

import k_diffusion.external
import k_diffusion.sampling
import torch

from modules import devices, sd_samplers_cfg_denoiser, sd_samplers_common, sd_samplers_extra, sd_schedulers
from modules.sd_samplers_cfg_denoiser import CFGDenoiser  # noqa: F401 (the real module re-exports it)
from modules.shared import opts

# The k-diffusion entries of the real sampler list, in its order: label | function in
# k_diffusion.sampling without "sample_" ("extra:" the WebUI's own, sd_samplers_extra.<name>_sampler) |
# aliases | options (see parse_options).
_K_DIFFUSION_TABLE = """
DPM++ 2M          | dpmpp_2m           | k_dpmpp_2m                  | scheduler=karras
DPM++ SDE         | dpmpp_sde          | k_dpmpp_sde                 | scheduler=karras 2nd brownian
DPM++ 2M SDE      | dpmpp_2m_sde       | k_dpmpp_2m_sde              | scheduler=exponential brownian
DPM++ 2M SDE Heun | dpmpp_2m_sde       | k_dpmpp_2m_sde_heun         | scheduler=exponential brownian solver_type=heun
DPM++ 2S a        | dpmpp_2s_ancestral | k_dpmpp_2s_a                | scheduler=karras ensd 2nd
DPM++ 3M SDE      | dpmpp_3m_sde       | k_dpmpp_3m_sde              | scheduler=exponential discard brownian
Euler a           | euler_ancestral    | k_euler_a k_euler_ancestral | ensd
Euler             | euler              | k_euler                     |
LMS               | lms                | k_lms                       |
Heun              | heun               | k_heun                      | 2nd
DPM2              | dpm_2              | k_dpm_2                     | scheduler=karras discard 2nd
DPM2 a            | dpm_2_ancestral    | k_dpm_2_a                   | scheduler=karras discard ensd 2nd
DPM fast          | dpm_fast           | k_dpm_fast                  | ensd
DPM adaptive      | dpm_adaptive       | k_dpm_ad                    | ensd
Restart           | extra:restart      | restart                     | scheduler=karras 2nd
"""
_FLAGS = {"2nd": "second_order", "brownian": "brownian_noise", "ensd": "uses_ensd", "discard": "discard_next_to_last_sigma"}

# the sigma options each function is given from the settings (the real sampler_extra_params)
_CHURN_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
_SIGMA_OPTIONS = {
    **{f"sample_{name}": _CHURN_OPTIONS for name in ("euler", "heun", "dpm_2")},
    **{f"sample_{name}": ("s_noise",) for name in ("dpm_fast", "dpm_2_ancestral", "dpmpp_2s_ancestral")},
    **{f"sample_{name}": ("s_noise",) for name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")},
}


def parse_options(words: str) -> dict:
    """SamplerData options written as ``key=value``, or as a flag of _FLAGS standing for its option set to True."""
    return dict(word.split("=", 1) if "=" in word else (_FLAGS[word], True) for word in words.split())


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    """sd_samplers_kdiffusion.CFGDenoiserKDiffusion: the model wrapper is k-diffusion's CompVisDenoiser
    around shared.sd_model, built on first use and again after a refiner switch."""

    def make_wrapper(self, model):
        return k_diffusion.external.CompVisDenoiser(model, quantize=opts.enable_quantization)


class KDiffusionSampler(sd_samplers_common.Sampler):
    """sd_samplers_kdiffusion.KDiffusionSampler: ``funcname`` names a k_diffusion.sampling function or is
    the sampling function itself (Restart, LCM). ``model_wrap`` is the CompVisDenoiser (its ``sigmas``
    are the model's discrete noise levels)."""

    denoiser_class = CFGDenoiserKDiffusion

    def __init__(self, funcname, sd_model):
        super().__init__(funcname)
        self.func = funcname if callable(funcname) else getattr(k_diffusion.sampling, funcname)
        self.extra_params = list(_SIGMA_OPTIONS.get(funcname, ()))
        self.model_wrap_cfg = self.denoiser_class(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def _scheduler_sigmas(self, p, scheduler, steps):
        """Call a scheduler function with the model's sigma range, or the settings that override it
        (each noted in the infotext), and the schedule type noted as well."""
        extra = p.extra_generation_params
        if not p.is_hr_pass:
            extra["Schedule type"] = scheduler.label
        elif scheduler.label != extra.get("Schedule type"):
            extra["Hires schedule type"] = scheduler.label

        model_min, model_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        sigma_range = (0.1, 10) if opts.use_old_karras_scheduler_sigmas else (model_min, model_max)
        kwargs = dict(zip(("sigma_min", "sigma_max"), sigma_range))
        overrides = [("sigma_min", "Schedule min sigma", model_min), ("sigma_max", "Schedule max sigma", model_max)]
        if scheduler.default_rho != -1:
            overrides.append(("rho", "Schedule rho", scheduler.default_rho))
        for key, infotext, usual in overrides:
            value = getattr(opts, key)
            if value not in (0, usual):
                kwargs[key] = extra[infotext] = value
        if scheduler.need_inner_model:
            kwargs["inner_model"] = self.model_wrap
        if scheduler.label == "Beta":
            extra.update({"Beta schedule alpha": opts.beta_dist_alpha, "Beta schedule beta": opts.beta_dist_beta})
        return scheduler.function(n=steps, **kwargs, device=devices.cpu)

    def get_sigmas(self, p, steps):
        """KDiffusionSampler.get_sigmas: steps + 1 noise levels, highest first, ending at 0. The pass's
        schedule type, where "Automatic" means the sampler's own default and, with none (Euler, LMS...),
        the model wrapper's schedule; ``p.sampler_noise_scheduler_override`` replaces both. Samplers that
        discard the next-to-last level get one more step and then lose that level."""
        discard = self.discards_penultimate(p)
        steps += int(discard)
        chosen = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        if chosen == "Automatic":
            chosen = self.config.options.get("scheduler")
        scheduler = sd_schedulers.schedulers_map.get(chosen)

        if p.sampler_noise_scheduler_override:
            sigmas = p.sampler_noise_scheduler_override(steps)
        elif scheduler is None or scheduler.function is None:
            sigmas = self.model_wrap.get_sigmas(steps)
        else:
            sigmas = self._scheduler_sigmas(p, scheduler, steps)
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    def _function_kwargs(self, kwargs, schedule, x, sigmas, p):
        """Add the schedule arguments ``func`` takes (sigmas, or n and a sigma range for DPM fast/adaptive),
        the Brownian noise sampler of the SDE samplers and the Heun solver type."""
        accepted = inspect.signature(self.func).parameters
        kwargs.update((key, value) for key, value in schedule.items() if key in accepted)
        if self.config.options.get("brownian_noise", False):
            kwargs["noise_sampler"] = self.create_noise_sampler(x, sigmas, p)
        if self.config.options.get("solver_type") == "heun":
            kwargs["solver_type"] = "heun"
        return kwargs

    @staticmethod
    def _noise_scale(p, top_sigma):
        if not opts.sgm_noise_multiplier:
            return top_sigma
        p.extra_generation_params["SGM noise multiplier"] = True
        return torch.sqrt(1.0 + top_sigma**2.0)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        """KDiffusionSampler.sample (txt2img): the unit noise scaled to the first sigma (to
        sqrt(1 + sigma^2) with the sgm_noise_multiplier setting), then the whole schedule."""
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        x = x * self._noise_scale(p, sigmas[0])
        kwargs = self.initialize(p)
        levels = self.model_wrap.sigmas
        schedule = {"n": steps, "sigmas": sigmas, "sigma_min": levels[0].item(), "sigma_max": levels[-1].item()}
        kwargs = self._function_kwargs(kwargs, schedule, x, sigmas, p)
        return self.run_sampler(p, x, steps, kwargs, conditioning, unconditional_conditioning, image_conditioning, x)

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        """KDiffusionSampler.sample_img2img: the last t_enc + 1 levels of a ``steps``-long schedule
        (setup_img2img_steps), starting from the init latent plus the noise at the first of them."""
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        tail = sigmas[steps - t_enc - 1 :]
        xi = self.add_extra_noise(p, x, noise, x + noise * tail[0])
        kwargs = self.initialize(p)
        schedule = {"n": len(tail) - 1, "sigmas": tail, "sigma_min": tail[-2], "sigma_max": tail[0]}
        kwargs = self._function_kwargs(kwargs, schedule, x, sigmas, p)
        self.model_wrap_cfg.init_latent = x
        return self.run_sampler(p, xi, t_enc + 1, kwargs, conditioning, unconditional_conditioning, image_conditioning, x)


def _table_entries() -> list[sd_samplers_common.SamplerData]:
    entries = []
    for line in _K_DIFFUSION_TABLE.strip().splitlines():
        label, function, aliases, options = (cell.strip() for cell in line.split("|"))
        if function.startswith("extra:"):
            function = getattr(sd_samplers_extra, function.removeprefix("extra:") + "_sampler")
        else:
            function = f"sample_{function}"
        options = parse_options(options)
        entries.append(sd_samplers_common.sampler_entry(label, function, aliases.split(), options, KDiffusionSampler))
    return entries


samplers_data_k_diffusion = _table_entries()
