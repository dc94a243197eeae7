"""Stand-in for the WebUI's modules/sd_samplers_common.py: what every sampler shares. The sampler entry
type (SamplerData), the Sampler base class with its sampling driver, the img2img step arithmetic, the
latent <-> image helpers, the interrupt exception, the SDXL refiner switch (apply_refiner) and
TorchHijack, which routes k-diffusion's noise draws to the per-image generators of ``p.rng``.

Simplified: decoding always goes through the model's ``decode_first_stage`` (the "Approx NN" and "Approx
cheap" previews too; TAESD raises NotImplementedError). The real module patches torchsde's Brownian
noise at import; here :func:`install` / :func:`uninstall` do it for the harness."""

from __future__ import annotations

import inspect
from collections import namedtuple

import k_diffusion.sampling
import numpy as np
import torch
from PIL import Image

from modules import devices, rng, shared
from modules.script_callbacks import ExtraNoiseParams, extra_noise_callback
from modules.shared import opts, state


def conditioning_key(model) -> str:
    """The conditioning key the sampler notes (Sampler.__init__ reads the ldm wrapper's)."""
    return getattr(model.model, "conditioning_key", "crossattn")


class SamplerData(namedtuple("SamplerData", ["name", "constructor", "aliases", "options"])):
    """sd_samplers_common.SamplerData: one entry of the sampler list. ``options`` holds the traits the
    rest of the WebUI looks up (default ``scheduler``, ``second_order``, ``brownian_noise``...)."""

    def total_steps(self, steps: int) -> int:
        """Model evaluations a run of ``steps`` steps is budgeted for: twice as many for second-order samplers."""
        return steps * 2 if self.options.get("second_order", False) else steps


def sampler_entry(label, funcname, aliases, options, sampler_class) -> SamplerData:
    """A list entry whose constructor builds ``sampler_class(funcname, model)``."""
    return SamplerData(label, lambda model: sampler_class(funcname, model), aliases, options)


def setup_img2img_steps(p, steps: int | None = None) -> tuple[int, int]:
    """sd_samplers_common.setup_img2img_steps: (schedule length, t_enc). Normally the schedule is
    ``p.steps`` long and img2img denoises its last ``int(strength * steps)`` steps; with the
    img2img_fix_steps option, or explicit ``steps`` (the hires pass), exactly the requested steps are run,
    from a schedule stretched to ``steps / strength``."""
    strength = min(p.denoising_strength, 0.999)
    if not (opts.img2img_fix_steps or steps is not None):
        return p.steps, int(strength * p.steps)
    wanted = steps or p.steps
    return (int(wanted / strength) if p.denoising_strength > 0 else 0), wanted - 1


approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}


def _refuse_taesd(approximation: int) -> None:
    if approximation == approximation_indexes["TAESD"]:
        raise NotImplementedError("stand-in: TAESD is not available")


def samples_to_images_tensor(sample, approximation=None, model=None):
    """sd_samplers_common.samples_to_images_tensor: latents to RGB in [-1, 1] (the live-preview method
    when no approximation is given)."""
    if approximation is None or (state.interrupted and opts.live_preview_fast_interrupt):
        approximation = approximation_indexes.get(opts.show_progress_type, 0)
    _refuse_taesd(approximation)
    model = shared.sd_model if model is None else model
    with torch.no_grad(), devices.without_autocast():
        return model.decode_first_stage(sample.to(model.first_stage_model.dtype))


def single_sample_to_image(sample, approximation=None) -> Image.Image:
    """sd_samplers_common.single_sample_to_image: one latent decoded to a PIL image."""
    pixels = samples_to_images_tensor(sample[None], approximation)[0]
    pixels = torch.clamp(pixels * 0.5 + 0.5, 0.0, 1.0)
    return Image.fromarray((255.0 * np.moveaxis(pixels.cpu().numpy(), 0, 2)).astype(np.uint8))


def sample_to_image(samples, index=0, approximation=None) -> Image.Image:
    """sd_samplers_common.sample_to_image: image ``index`` of a batch of latents (live previews)."""
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples, approximation=None) -> Image.Image:
    """sd_samplers_common.samples_to_image_grid: a batch of latents as one grid image (live previews)."""
    from modules import images

    return images.image_grid([single_sample_to_image(sample, approximation) for sample in samples])


def decode_first_stage(model, x):
    """sd_samplers_common.decode_first_stage: the final decode, with the sd_vae_decode_method option."""
    method = approximation_indexes.get(opts.sd_vae_decode_method, 0)
    return samples_to_images_tensor(x.to(devices.dtype_vae), method, model)


def images_tensor_to_samples(image, approximation=None, model=None):
    """sd_samplers_common.images_tensor_to_samples: images in [0, 1] to latents. Several images are
    encoded one at a time, as in the real host (the VAE's posterior sampling draws from torch's global
    generator image by image)."""
    if approximation is None:
        approximation = approximation_indexes.get(opts.sd_vae_encode_method, 0)
    _refuse_taesd(approximation)
    model = shared.sd_model if model is None else model
    image = image.to(shared.device, dtype=devices.dtype_vae) * 2 - 1

    def encode(batch):
        return model.get_first_stage_encoding(model.encode_first_stage(batch))

    if len(image) == 1:
        return encode(image)
    return torch.stack([encode(one[None])[0] for one in image])


def store_latent(decoded) -> None:
    """sd_samplers_common.store_latent: keep the preview latent, and decode it when a live preview is due
    (never here while parallel_processing_allowed, as in the real host)."""
    state.current_latent = decoded
    every = opts.show_progress_every_n_steps
    due = opts.live_previews_enable and every > 0 and state.sampling_step % every == 0
    if due and not shared.parallel_processing_allowed:
        state.assign_current_image(sample_to_image(decoded))


def is_sampler_using_eta_noise_seed_delta(p) -> bool:
    """sd_samplers_common.is_sampler_using_eta_noise_seed_delta: whether "ENSD" belongs in the infotext,
    i.e. the sampler draws ancestral noise (``uses_ensd``) and eta is not 0 (p's, else the sampler's,
    else 1)."""
    from modules import sd_samplers

    config = sd_samplers.find_sampler_config(p.sampler_name)
    eta = p.eta
    if eta is None and p.sampler is not None:
        eta = p.sampler.eta
    if eta == 0:
        return False
    return config is not None and config.options.get("uses_ensd", False)


class InterruptedException(BaseException):
    """sd_samplers_common.InterruptedException: raised by the CFG denoiser once Interrupt or Skip was
    pressed. A BaseException, so an extension's ``except Exception`` does not swallow it."""


_saved_globals: dict = {}


def install() -> None:
    """Route torchsde's Brownian-interval noise through rng.randn_local (the real module's import-time
    replace_torchsde_browinan), and remember k_diffusion.sampling's ``torch``, which every sampler run
    replaces with a TorchHijack."""
    import torchsde._brownian.brownian_interval as brownian_interval

    def torchsde_randn(size, dtype, device, seed):
        return rng.randn_local(seed, size).to(device=device, dtype=dtype)

    if not _saved_globals:
        _saved_globals.update(randn=brownian_interval._randn, torch=k_diffusion.sampling.torch)
        brownian_interval._randn = torchsde_randn


def uninstall() -> None:
    """Undo :func:`install`, and give k_diffusion.sampling its own ``torch`` back."""
    import torchsde._brownian.brownian_interval as brownian_interval

    if _saved_globals:
        brownian_interval._randn = _saved_globals.pop("randn")
        k_diffusion.sampling.torch = _saved_globals.pop("torch")


def _completed_ratio(cfg_denoiser, sigma) -> float:
    """How far sampling is, for the refiner switch: denoiser calls made over those budgeted, or (by
    noise level) 1 - timestep / 1000 for the timestep of the highest sigma of this call."""
    if opts.refiner_switch_by_sample_steps or sigma is None:
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
        return cfg_denoiser.step / cfg_denoiser.total_steps
    try:
        timestep = torch.argmin(torch.abs(cfg_denoiser.inner_model.sigmas.to(sigma.device) - torch.max(sigma)))
    except AttributeError:  # the timestep samplers' denoiser is called with timesteps already
        timestep = torch.max(sigma).to(dtype=int)
    return (999 - timestep) / 1000


def refiner_due(p, completed: float):
    """The refiner checkpoint to switch to now that sampling has ``completed`` this share, or None:
    not yet at ``p.refiner_switch_at``, no refiner, the refiner already loaded, or (with hires fix,
    opts.hires_fix_refiner_pass) not this pass. A switch is noted in the infotext."""
    switch_at, refiner = p.refiner_switch_at, p.refiner_checkpoint_info
    if switch_at is not None and completed < switch_at:
        return None
    if refiner is None or shared.sd_model.sd_checkpoint_info == refiner:
        return None
    if getattr(p, "enable_hr", False):
        which = opts.hires_fix_refiner_pass
        if which == ("first pass" if p.is_hr_pass else "second pass"):  # the other pass is the refiner's
            return None
        if which != "second pass":
            p.extra_generation_params["Hires refiner"] = which
    p.extra_generation_params.update({"Refiner": refiner.short_title, "Refiner switch at": switch_at})
    return refiner


def apply_refiner(cfg_denoiser, sigma=None) -> bool:
    """sd_samplers_common.apply_refiner, called by CFGDenoiser.forward before anything else of a call:
    once sampling has reached ``p.refiner_switch_at``, load the refiner checkpoint (not written to the
    settings), recompute the conds with its text encoder and make the denoiser build its model wrapper
    anew. With hires fix, opts.hires_fix_refiner_pass decides which pass may switch. True if it switched."""
    from modules import sd_models

    p = cfg_denoiser.p
    refiner = refiner_due(p, _completed_ratio(cfg_denoiser, sigma))  # notes "by sampling steps" even without one
    if refiner is None:
        return False
    with sd_models.SkipWritingToConfig():
        sd_models.reload_model_weights(info=refiner)
    devices.torch_gc()
    p.setup_conds()
    cfg_denoiser.update_inner_model()
    return True


class TorchHijack:
    """sd_samplers_common.TorchHijack: takes the place of ``torch`` inside k_diffusion.sampling so that
    its ``randn_like`` returns ``p.rng.next()``, the per-image generators' noise; everything else is torch."""

    def __init__(self, p):
        self.rng = p.rng

    def randn_like(self, x):
        return self.rng.next()

    def __getattr__(self, item):
        try:
            return getattr(torch, item)
        except AttributeError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{item}'") from None


# the sigma options a sampler may take from the settings, with their infotext keys
_SIGMA_KNOBS = {f"s_{knob}": f"Sigma {knob}" for knob in ("churn", "tmin", "tmax", "noise")}


class Sampler:
    """sd_samplers_common.Sampler: the base of KDiffusionSampler and CompVisSampler. ``func`` is the
    sampling function, called as ``func(model_wrap_cfg, x, extra_args=..., callback=..., **kwargs)``;
    subclasses choose the schedule and the start latent and hand over to :meth:`run_sampler`."""

    eta_option_field, eta_infotext_field, eta_default = "eta_ancestral", "Eta", 1.0
    # the samplers' own defaults for the sigma options; a setting that differs is passed and noted
    s_churn, s_tmin, s_tmax, s_noise = 0.0, 0.0, float("inf"), 1.0

    def __init__(self, funcname):
        self.funcname = self.func = funcname
        self.extra_params: list[str] = []
        self.config: SamplerData | None = None  # set by sd_samplers.create_sampler
        self.p = self.eta = self.stop_at = self.last_latent = self.s_min_uncond = None
        self.model_wrap_cfg = self.sampler_extra_args = None
        self.conditioning_key = conditioning_key(shared.sd_model)

    def callback_state(self, d):
        """Sampler.callback_state: the sampling function's per-step callback; ``d["i"]`` is its own step
        index, which becomes state.sampling_step."""
        if self.stop_at is not None and d["i"] > self.stop_at:
            raise InterruptedException
        state.sampling_step = d["i"]
        shared.total_tqdm.update()

    def launch_sampling(self, steps, func):
        """Sampler.launch_sampling: run ``func`` with the step counters set; an interrupt or skip ends it
        with the latest predicted latent."""
        self.model_wrap_cfg.steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps)
        state.sampling_steps, state.sampling_step = steps, 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def initialize(self, p) -> dict:
        """Sampler.initialize: prepare the CFG denoiser for this run, hijack k-diffusion's torch, and
        return the keyword arguments from the settings that ``func`` accepts: eta (noted in the
        infotext when not the default) and the sigma options (the settings win over p's values)."""
        self.p = self.model_wrap_cfg.p = p
        self.model_wrap_cfg.mask, self.model_wrap_cfg.nmask = getattr(p, "mask", None), getattr(p, "nmask", None)
        self.model_wrap_cfg.step = 0
        self.eta = p.eta if p.eta is not None else getattr(opts, self.eta_option_field, 0.0)
        self.s_min_uncond = getattr(p, "s_min_uncond", 0.0)
        k_diffusion.sampling.torch = TorchHijack(p)

        accepted = inspect.signature(self.func).parameters
        kwargs = {name: getattr(p, name) for name in self.extra_params if name in accepted and hasattr(p, name)}
        if "eta" in accepted:
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            kwargs["eta"] = self.eta
        for name, infotext in _SIGMA_KNOBS.items():
            if name not in kwargs:
                continue
            value = getattr(opts, name, getattr(p, name))
            if name == "s_tmax":
                value = value or self.s_tmax  # 0 in the settings means no upper bound
            if value != getattr(self, name):
                kwargs[name] = value
                setattr(p, name, value)
                p.extra_generation_params[infotext] = value
        return kwargs

    def create_noise_sampler(self, x, sigmas, p):
        """Sampler.create_noise_sampler: a Brownian-tree noise source seeded with this batch's seeds, so
        the SDE samplers give an image the same noise in any batch (None with the setting that opts out)."""
        if opts.no_dpmpp_sde_batch_determinism:
            return None
        seeds = p.all_seeds[p.iteration * p.batch_size : (p.iteration + 1) * p.batch_size]
        return k_diffusion.sampling.BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)

    def add_extra_noise(self, p, x, noise, xi, scale=1.0):
        """The img2img_extra_noise setting of both samplers' sample_img2img: more of the (callback-adjusted)
        noise on the start latent, ``scale`` times, noted in the infotext."""
        amount = opts.img2img_extra_noise
        if amount <= 0:
            return xi
        p.extra_generation_params["Extra noise"] = amount
        params = ExtraNoiseParams(noise, x, xi)
        extra_noise_callback(params)
        return xi + params.noise * amount * scale

    def discards_penultimate(self, p) -> bool:
        """Whether the schedule drops its next-to-last level: the sampler's own trait, or forced by the
        always_discard_next_to_last_sigma setting (then noted in the infotext)."""
        if self.config is not None and self.config.options.get("discard_next_to_last_sigma", False):
            return True
        if opts.always_discard_next_to_last_sigma:
            p.extra_generation_params["Discard penultimate sigma"] = True
            return True
        return False

    def run_sampler(self, p, x, steps, kwargs, conditioning, unconditional_conditioning, image_conditioning, last_latent):
        """The tail both samplers' sample / sample_img2img share in the real host: store the denoiser's
        extra arguments, run ``func`` through launch_sampling, note padded conds in the infotext."""
        self.last_latent = last_latent
        self.sampler_extra_args = dict(cond=conditioning, image_cond=image_conditioning, uncond=unconditional_conditioning)
        self.sampler_extra_args.update(cond_scale=p.cfg_scale, s_min_uncond=self.s_min_uncond)
        samples = self.launch_sampling(
            steps,
            lambda: self.func(
                self.model_wrap_cfg, x, extra_args=self.sampler_extra_args, disable=False, callback=self.callback_state, **kwargs
            ),
        )
        self.add_infotext(p)
        return samples

    def add_infotext(self, p):
        """Sampler.add_infotext: "Pad conds" / "Pad conds v0" when the denoiser padded a cond on some call."""
        wrap = self.model_wrap_cfg
        if wrap.padded_cond_uncond:
            p.extra_generation_params["Pad conds"] = True
        if wrap.padded_cond_uncond_v0:
            p.extra_generation_params["Pad conds v0"] = True
