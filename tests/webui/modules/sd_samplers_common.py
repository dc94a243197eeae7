"""Mirrors modules/sd_samplers_common.py: SamplerData, the Sampler base, img2img step maths, latent
<-> image helpers, InterruptedException, apply_refiner (the SDXL refiner switch) and the TorchHijack
of k-diffusion's randn.

Simplified: decoding always uses the stand-in model's decode_first_stage (the "Approx NN"/"Approx
cheap" previews use it too; TAESD raises NotImplementedError). The torchsde Brownian-noise patch of
the real file is applied by install() instead of at import."""

import inspect
from collections import namedtuple

import k_diffusion.sampling
import numpy as np
import torch
from PIL import Image

from modules import devices, shared
from modules.shared import opts, state

SamplerDataTuple = namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])


class SamplerData(SamplerDataTuple):
    # mirrors sd_samplers_common.SamplerData: total_steps doubles the steps of second-order samplers
    def total_steps(self, steps):
        if self.options.get("second_order", False):
            steps = steps * 2
        return steps


def setup_img2img_steps(p, steps=None):
    # mirrors sd_samplers_common.setup_img2img_steps: by default denoise int(strength * steps) steps of a
    # steps-long schedule; with img2img_fix_steps (or explicit steps, as in the hires pass) run exactly
    # the requested steps of a longer schedule
    if opts.img2img_fix_steps or steps is not None:
        requested_steps = steps or p.steps
        steps = int(requested_steps / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested_steps - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def samples_to_images_tensor(sample, approximation=None, model=None):
    # mirrors sd_samplers_common.samples_to_images_tensor: latents -> RGB in [-1, 1]
    if approximation is None or (shared.state.interrupted and opts.live_preview_fast_interrupt):
        approximation = approximation_indexes.get(opts.show_progress_type, 0)
    if approximation == 3:
        raise NotImplementedError("stand-in: TAESD is not available")
    if model is None:
        model = shared.sd_model
    with torch.no_grad(), devices.without_autocast():
        return model.decode_first_stage(sample.to(model.first_stage_model.dtype))


def single_sample_to_image(sample, approximation=None):
    x_sample = samples_to_images_tensor(sample.unsqueeze(0), approximation)[0] * 0.5 + 0.5
    x_sample = torch.clamp(x_sample, min=0.0, max=1.0)
    x_sample = (255.0 * np.moveaxis(x_sample.cpu().numpy(), 0, 2)).astype(np.uint8)
    return Image.fromarray(x_sample)


def decode_first_stage(model, x):
    # mirrors sd_samplers_common.decode_first_stage
    x = x.to(devices.dtype_vae)
    return samples_to_images_tensor(x, approximation_indexes.get(opts.sd_vae_decode_method, 0), model)


def sample_to_image(samples, index=0, approximation=None):
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples, approximation=None):
    from modules import images

    return images.image_grid([single_sample_to_image(sample, approximation) for sample in samples])


def images_tensor_to_samples(image, approximation=None, model=None):
    # mirrors sd_samplers_common.images_tensor_to_samples: image in [0, 1] -> latents, one image at a
    # time when there are several
    if approximation is None:
        approximation = approximation_indexes.get(opts.sd_vae_encode_method, 0)
    if approximation == 3:
        raise NotImplementedError("stand-in: TAESD is not available")
    if model is None:
        model = shared.sd_model
    image = image.to(shared.device, dtype=devices.dtype_vae) * 2 - 1
    if len(image) > 1:
        return torch.stack(
            [model.get_first_stage_encoding(model.encode_first_stage(torch.unsqueeze(img, 0)))[0] for img in image]
        )
    return model.get_first_stage_encoding(model.encode_first_stage(image))


def store_latent(decoded):
    # mirrors sd_samplers_common.store_latent
    state.current_latent = decoded
    if (
        opts.live_previews_enable
        and opts.show_progress_every_n_steps > 0
        and shared.state.sampling_step % opts.show_progress_every_n_steps == 0
    ):
        if not shared.parallel_processing_allowed:
            shared.state.assign_current_image(sample_to_image(decoded))


def is_sampler_using_eta_noise_seed_delta(p):
    # mirrors sd_samplers_common.is_sampler_using_eta_noise_seed_delta
    from modules import sd_samplers

    config = sd_samplers.find_sampler_config(p.sampler_name)
    eta = p.eta
    if eta is None and p.sampler is not None:
        eta = p.sampler.eta
    if eta is None and config is not None:
        eta = 0 if config.options.get("default_eta_is_0", False) else 1.0
    if eta == 0:
        return False
    return config.options.get("uses_ensd", False)


class InterruptedException(BaseException):
    # mirrors sd_samplers_common.InterruptedException: a BaseException, so "except Exception" in
    # extension code does not swallow it
    pass


_original_torchsde_randn = None
_original_kdiffusion_torch = None


def install():
    # mirrors the import-time patch sd_samplers_common.replace_torchsde_browinan, and remembers the torch
    # module of k_diffusion.sampling (Sampler.initialize replaces it with a TorchHijack)
    global _original_torchsde_randn, _original_kdiffusion_torch
    import torchsde._brownian.brownian_interval as brownian_interval

    if _original_torchsde_randn is None:
        _original_torchsde_randn = brownian_interval._randn

        def torchsde_randn(size, dtype, device, seed):
            return devices.randn_local(seed, size).to(device=device, dtype=dtype)

        brownian_interval._randn = torchsde_randn
    if _original_kdiffusion_torch is None:
        _original_kdiffusion_torch = k_diffusion.sampling.torch


def uninstall():
    global _original_torchsde_randn, _original_kdiffusion_torch
    import torchsde._brownian.brownian_interval as brownian_interval

    if _original_torchsde_randn is not None:
        brownian_interval._randn = _original_torchsde_randn
        _original_torchsde_randn = None
    if _original_kdiffusion_torch is not None:
        k_diffusion.sampling.torch = _original_kdiffusion_torch
        _original_kdiffusion_torch = None


def apply_refiner(cfg_denoiser, sigma=None):
    # mirrors sd_samplers_common.apply_refiner, called by CFGDenoiser.forward before each model call (and
    # before the cfg_denoiser callbacks): once the completed ratio (denoiser calls / total, or the
    # timestep of the current sigma) reaches p.refiner_switch_at, loads the refiner checkpoint
    # (reload_model_weights: a new shared.sd_model for a different config, on_model_loaded fired), then
    # recomputes the conds with the refiner's text encoder (p.setup_conds) and drops the denoiser's
    # model wrapper (update_inner_model) so the next model call uses the refiner
    from modules import sd_models

    if opts.refiner_switch_by_sample_steps or sigma is None:
        completed_ratio = cfg_denoiser.step / cfg_denoiser.total_steps
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
    else:
        try:
            timestep = torch.argmin(torch.abs(cfg_denoiser.inner_model.sigmas.to(sigma.device) - torch.max(sigma)))
        except AttributeError:
            timestep = torch.max(sigma).to(dtype=int)
        completed_ratio = (999 - timestep) / 1000

    refiner_switch_at = cfg_denoiser.p.refiner_switch_at
    refiner_checkpoint_info = cfg_denoiser.p.refiner_checkpoint_info

    if refiner_switch_at is not None and completed_ratio < refiner_switch_at:
        return False
    if refiner_checkpoint_info is None or shared.sd_model.sd_checkpoint_info == refiner_checkpoint_info:
        return False

    if getattr(cfg_denoiser.p, "enable_hr", False):
        is_second_pass = cfg_denoiser.p.is_hr_pass
        if opts.hires_fix_refiner_pass == "first pass" and is_second_pass:
            return False
        if opts.hires_fix_refiner_pass == "second pass" and not is_second_pass:
            return False

        if opts.hires_fix_refiner_pass != "second pass":
            cfg_denoiser.p.extra_generation_params["Hires refiner"] = opts.hires_fix_refiner_pass

    cfg_denoiser.p.extra_generation_params["Refiner"] = refiner_checkpoint_info.short_title
    cfg_denoiser.p.extra_generation_params["Refiner switch at"] = refiner_switch_at

    with sd_models.SkipWritingToConfig():
        sd_models.reload_model_weights(info=refiner_checkpoint_info)

    devices.torch_gc()
    cfg_denoiser.p.setup_conds()
    cfg_denoiser.update_inner_model()

    return True


class TorchHijack:
    # mirrors sd_samplers_common.TorchHijack: stands in for k_diffusion.sampling's ``torch`` so that its
    # randn_like draws from the per-image generators (p.rng) and batches reproduce single images
    def __init__(self, p):
        self.rng = p.rng

    def __getattr__(self, item):
        if item == "randn_like":
            return self.randn_like
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'")

    def randn_like(self, x):
        return self.rng.next()


class Sampler:
    # mirrors sd_samplers_common.Sampler
    def __init__(self, funcname):
        self.funcname = funcname
        self.func = funcname
        self.extra_params = []
        self.sampler_noises = None
        self.stop_at = None
        self.eta = None
        self.config: SamplerData = None
        self.last_latent = None
        self.s_min_uncond = None
        self.s_churn = 0.0
        self.s_tmin = 0.0
        self.s_tmax = float("inf")
        self.s_noise = 1.0
        self.eta_option_field = "eta_ancestral"
        self.eta_infotext_field = "Eta"
        self.eta_default = 1.0
        self.conditioning_key = getattr(shared.sd_model.model, "conditioning_key", "crossattn")
        self.p = None
        self.model_wrap_cfg = None
        self.sampler_extra_args = None
        self.options = {}

    def callback_state(self, d):
        # mirrors Sampler.callback_state: k-diffusion's per-step callback sets state.sampling_step = i
        step = d["i"]
        if self.stop_at is not None and step > self.stop_at:
            raise InterruptedException
        state.sampling_step = step
        shared.total_tqdm.update()

    def launch_sampling(self, steps, func):
        # mirrors Sampler.launch_sampling: sets the denoiser's steps/total_steps and the state counters;
        # an interrupt/skip (InterruptedException) ends sampling with the last predicted latent
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        state.sampling_steps = steps
        state.sampling_step = 0
        try:
            return func()
        except RecursionError:
            print("Encountered RecursionError during sampling, returning last latent.")
            return self.last_latent
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p):
        return p.steps

    def initialize(self, p) -> dict:
        # mirrors Sampler.initialize: resets the denoiser for this run, installs TorchHijack, collects the
        # sampler's extra keyword arguments (eta, s_churn... read from opts, as the real one does)
        self.p = p
        self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask = p.mask if hasattr(p, "mask") else None
        self.model_wrap_cfg.nmask = p.nmask if hasattr(p, "nmask") else None
        self.model_wrap_cfg.step = 0
        self.model_wrap_cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)

        k_diffusion.sampling.torch = TorchHijack(p)

        parameters = inspect.signature(self.func).parameters
        extra_params_kwargs = {}
        for param_name in self.extra_params:
            if hasattr(p, param_name) and param_name in parameters:
                extra_params_kwargs[param_name] = getattr(p, param_name)

        if "eta" in parameters:
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            extra_params_kwargs["eta"] = self.eta

        if len(self.extra_params) > 0:
            s_churn = getattr(opts, "s_churn", p.s_churn)
            s_tmin = getattr(opts, "s_tmin", p.s_tmin)
            s_tmax = getattr(opts, "s_tmax", p.s_tmax) or self.s_tmax
            s_noise = getattr(opts, "s_noise", p.s_noise)

            if "s_churn" in extra_params_kwargs and s_churn != self.s_churn:
                extra_params_kwargs["s_churn"] = s_churn
                p.s_churn = s_churn
                p.extra_generation_params["Sigma churn"] = s_churn
            if "s_tmin" in extra_params_kwargs and s_tmin != self.s_tmin:
                extra_params_kwargs["s_tmin"] = s_tmin
                p.s_tmin = s_tmin
                p.extra_generation_params["Sigma tmin"] = s_tmin
            if "s_tmax" in extra_params_kwargs and s_tmax != self.s_tmax:
                extra_params_kwargs["s_tmax"] = s_tmax
                p.s_tmax = s_tmax
                p.extra_generation_params["Sigma tmax"] = s_tmax
            if "s_noise" in extra_params_kwargs and s_noise != self.s_noise:
                extra_params_kwargs["s_noise"] = s_noise
                p.s_noise = s_noise
                p.extra_generation_params["Sigma noise"] = s_noise

        return extra_params_kwargs

    def create_noise_sampler(self, x, sigmas, p):
        # mirrors Sampler.create_noise_sampler: a Brownian tree seeded with this batch's seeds
        if shared.opts.no_dpmpp_sde_batch_determinism:
            return None
        from k_diffusion.sampling import BrownianTreeNoiseSampler

        sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
        current_iter_seeds = p.all_seeds[p.iteration * p.batch_size : (p.iteration + 1) * p.batch_size]
        return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=current_iter_seeds)

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError()

    def sample_img2img(self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        raise NotImplementedError()

    def add_infotext(self, p):
        if self.model_wrap_cfg.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        if self.model_wrap_cfg.padded_cond_uncond_v0:
            p.extra_generation_params["Pad conds v0"] = True
