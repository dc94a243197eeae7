"""Stand-in for ``modules/processing.py`` of the AUTOMATIC1111 WebUI v1.10.1: the processing objects
(``p``) of txt2img and img2img, ``Processed``, ``create_infotext`` and ``process_images``.

A generation runs in the order of the real ``process_images`` / ``process_images_inner``, which the
extension depends on:

1. the ``before_process`` hooks; ``p.override_settings`` applied for the run (and restored even when
   it fails); token merging; the sampler/scheduler names corrected;
2. the prompts (styles applied) and seeds of every image (``p.all_prompts``, ``p.all_seeds``,
   ``p.all_subseeds``), the ``process`` hooks, ``p.init`` (img2img encodes its init images here and
   may shrink the batch), the SD Unet selection;
3. per batch: ``p.prompts`` / ``p.negative_prompts`` / ``p.seeds`` / ``p.subseeds`` sliced from the
   ``all_*`` lists and ``p.rng`` made from them, ``before_process_batch``, extra networks,
   ``process_batch``, the conds (cached), ``p.sample`` (which calls ``process_before_every_sampling``
   right before its sampler runs), ``post_sample``, decoding, ``postprocess_batch``,
   ``postprocess_batch_list`` and, per image, ``postprocess_image``, ``postprocess_maskoverlay``,
   ``postprocess_image_after_composite`` and the image's infotext;
4. the grid, ``Processed``, the ``postprocess`` hooks.

The script runner catches what a hook raises; any other exception ends the generation where it is
raised, so ``postprocess`` does not run.

Simplified in the stand-in:
- decoding uses the stand-in model's linear "VAE"; each Processed carries ``standin_latents``, the
  latents its images were decoded from (one row per image, grid and extra images excluded);
- nothing is written: ``last_params_txt`` holds what the real host writes to params.txt, and
  ``images.save_image`` only records;
- face restoration, img2img colour correction, inpainting-model conditioning and the txt2img
  "Upscale" button (``firstpass_image``) raise NotImplementedError or are absent; no tiling, no
  old-style hires sizing, no textual-inversion reload, no lowvram handling, no progress-bar totals;
- img2img can start from a latent given in the stand-in-only ``p.standin_init_latent`` (used when
  ``init_images`` is None).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import random
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from modules import (
    devices,
    errors,
    extra_networks,
    images,
    infotext_utils,
    masking,
    prompt_parser,
    rng,
    scripts,
    sd_models,
    sd_samplers,
    sd_samplers_common,
    sd_unet,
    sd_vae,
    shared,
)
from modules.sd_hijack import model_hijack
from modules.sd_samplers_common import approximation_indexes, decode_first_stage, images_tensor_to_samples
from modules.shared import cmd_opts, opts, state

LATENT_SCALE = 8  # pixels per latent cell (the real opt_f)
WEBUI_VERSION = "v1.10.1"

last_params_txt: str | None = None
"""What the real host writes to params.txt: the first batch's first infotext (stand-in only)."""


def _keyword_fields(*declared: tuple[str, str, Any]):
    """Class decorator standing in for the real classes' dataclass constructors. ``declared`` are
    ``(name, annotation, default)``; the class's ``__init__`` takes them and its base class's as
    keywords, stores them in declaration order (so a property such as img2img's ``mask_blur`` sees the
    fields before it), then calls ``_prepare()``. The signature lists them because the API builds its
    request models from it (modules/api/models.py)."""

    def decorate(cls):
        fields = {**getattr(cls, "_fields", {}), **{name: (annotation, default) for name, annotation, default in declared}}

        def __init__(self, **given):
            unknown = given.keys() - fields.keys()
            if unknown:
                raise TypeError(f"{cls.__name__}() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
            for name, (_, default) in fields.items():
                setattr(self, name, given.get(name, default))
            self._prepare()

        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [inspect.Parameter(name, keyword, default=default, annotation=annotation)
                      for name, (annotation, default) in fields.items()]
        __init__.__signature__ = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *parameters])
        cls.__init__, cls._fields = __init__, fields
        return cls

    return decorate


def _hook(p, name: str, *args, **kwargs) -> None:
    """Run the script hook ``name`` when ``p`` has scripts (a ``p`` built by hand has none)."""
    if p.scripts is not None:
        getattr(p.scripts, name)(p, *args, **kwargs)


def _batch_slice(values: list, batch: int, size: int) -> list:
    return values[batch * size : (batch + 1) * size]


def _image_rng(p, shape) -> rng.ImageRNG:
    """``p.rng``: the noise of the batch's images, from their seeds and variation settings."""
    return rng.ImageRNG(shape, p.seeds, subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                        seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w)


def _to_pil(sample: torch.Tensor) -> Image.Image:
    """A decoded image in [0, 1] (channels first) as 8-bit RGB, truncated as the real host does."""
    return Image.fromarray((255.0 * np.moveaxis(sample.cpu().numpy(), 0, 2)).astype(np.uint8))


def _find_checkpoint(name: str):
    """The listed checkpoint ``name`` refers to (refiner, hires); an unknown name fails the generation."""
    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        raise Exception(f"Could not find checkpoint with name {name}")
    return info


def _plain_image_conditioning(latent: torch.Tensor) -> torch.Tensor:
    """The image conditioning of models without image input: a dummy (B, 5, 1, 1) (the real
    ``txt2img_image_conditioning`` / ``img2img_image_conditioning``; inpainting (hybrid/concat) and
    other image-conditioned models are not available in the stand-in)."""
    if shared.sd_model.model.conditioning_key in {"hybrid", "concat"}:
        raise NotImplementedError("stand-in: inpainting models are not available")
    return latent.new_zeros(latent.shape[0], 5, 1, 1)


@_keyword_fields(
    ("sd_model", "object", None), ("outpath_samples", "str", None), ("outpath_grids", "str", None),
    ("prompt", "str", ""), ("negative_prompt", "str", ""), ("styles", "list[str]", None),
    ("seed", "int", -1), ("subseed", "int", -1), ("subseed_strength", "float", 0),
    ("seed_resize_from_h", "int", -1), ("seed_resize_from_w", "int", -1),
    ("sampler_name", "str", None), ("scheduler", "str", None), ("sampler_index", "int", None),
    ("batch_size", "int", 1), ("n_iter", "int", 1), ("steps", "int", 50), ("cfg_scale", "float", 7.0),
    ("width", "int", 512), ("height", "int", 512), ("denoising_strength", "float", None),
    ("restore_faces", "bool", None), ("do_not_save_samples", "bool", False), ("do_not_save_grid", "bool", False),
    ("extra_generation_params", "dict[str, Any]", None), ("overlay_images", "list", None),
    ("eta", "float", None), ("s_min_uncond", "float", None), ("s_churn", "float", None),
    ("s_tmax", "float", None), ("s_tmin", "float", None), ("s_noise", "float", None),
    ("override_settings", "dict[str, Any]", None), ("override_settings_restore_afterwards", "bool", True),
    ("refiner_checkpoint", "str", None), ("refiner_switch_at", "float", None),
    ("disable_extra_networks", "bool", False),
)
class StableDiffusionProcessing:
    """modules/processing.py ``StableDiffusionProcessing``: the settings of one generation and the
    state it builds up while it runs (the "p" every script hook receives). The constructor keywords
    and defaults are the real ones the stand-in uses; ``sampler_index`` is accepted and ignored, as
    the real class only warns about it."""

    # the conds of the last generation ([cache key, conds]); kept across generations with
    # opts.persistent_cond_cache (the real class-level caches)
    cached_c = [None, None]
    cached_uc = [None, None]

    # state the generation fills in (the real class's init=False fields)
    sampler = c = uc = rng = paste_to = extra_network_data = None
    all_prompts = all_negative_prompts = all_seeds = all_subseeds = None
    main_prompt = main_negative_prompt = prompts = negative_prompts = seeds = subseeds = None
    sd_model_name = sd_model_hash = sd_vae_name = sd_vae_hash = user = None
    sampler_noise_scheduler_override = refiner_checkpoint_info = None
    iteration = 0
    is_hr_pass = is_api = is_using_inpainting_conditioning = False
    token_merging_ratio = token_merging_ratio_hr = 0

    def _prepare(self) -> None:
        self.comments: dict[str, int] = {}
        self.styles = self.styles if self.styles is not None else []
        self.extra_generation_params = self.extra_generation_params or {}
        self.override_settings = self.override_settings or {}
        self._scripts = self._script_args = None
        self.scripts_setup_complete = False

    # --- the model and the scripts ----------------------------------------------------------------

    @property
    def sd_model(self):
        """Always the loaded model (the real property ignores what the constructor was given)."""
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value) -> None:
        pass

    @property
    def scripts(self):
        return self._scripts

    @scripts.setter
    def scripts(self, runner) -> None:
        self._scripts = runner
        self._setup_scripts_when_ready()

    @property
    def script_args(self):
        return self._script_args

    @script_args.setter
    def script_args(self, values) -> None:
        self._script_args = values
        self._setup_scripts_when_ready()

    def _setup_scripts_when_ready(self) -> None:
        """The real setters run the scripts' ``setup()`` once both the runner and (non-empty) args are
        set, in whichever order; API runs skip the built-in UI scripts' setup."""
        if self._scripts and self._script_args and not self.scripts_setup_complete:
            self.scripts_setup_complete = True
            self._scripts.setup_scrips(self, is_ui=not self.is_api)

    # --- small helpers the hooks and the extension call ---------------------------------------------

    def comment(self, text: str) -> None:
        """A note shown under the images (``Processed.comments``), each text once."""
        self.comments[text] = 1

    def save_samples(self) -> bool:
        """Whether the images are saved: the option, unless the caller opted out or the run was cut short
        (and incomplete images are not saved)."""
        finished = not state.interrupted and not state.skipped
        return bool(opts.samples_save and not self.do_not_save_samples and (opts.save_incomplete_images or finished))

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        ratio = self.token_merging_ratio or opts.token_merging_ratio
        if for_hr:
            return self.token_merging_ratio_hr or opts.token_merging_ratio_hr or ratio
        return ratio

    def close(self) -> None:
        """Called when the generation is over (``closing(p)``): drops the sampler and conds; the cond
        caches are emptied too unless opts.persistent_cond_cache."""
        self.sampler = self.c = self.uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]

    # --- prompts and conds ------------------------------------------------------------------------

    def fill_fields_from_opts(self) -> None:
        """Sampler noise settings not given on p come from the options (s_tmax 0 means infinity)."""
        for name in ("s_min_uncond", "s_churn", "s_tmin", "s_noise", "s_tmax"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(opts, name))
        self.s_tmax = self.s_tmax or float("inf")

    @staticmethod
    def _styled(prompts: list[str], styles: list[str], negative: bool = False) -> list[str]:
        apply = shared.prompt_styles.apply_negative_styles_to_prompt if negative else shared.prompt_styles.apply_styles_to_prompt
        return [apply(text, styles) for text in prompts]

    def setup_prompts(self) -> None:
        """One prompt and negative prompt per image (batch_size * n_iter, or as many as a list gives),
        with the selected styles applied."""
        if isinstance(self.prompt, list):
            prompts = self.prompt
        else:
            count = len(self.negative_prompt) if isinstance(self.negative_prompt, list) else self.batch_size * self.n_iter
            prompts = [self.prompt] * count
        negatives = self.negative_prompt if isinstance(self.negative_prompt, list) else [self.negative_prompt] * len(prompts)
        if len(prompts) != len(negatives):
            raise RuntimeError(f"Received a different number of prompts ({len(prompts)}) and negative prompts ({len(negatives)})")
        self.all_prompts = self._styled(prompts, self.styles)
        self.all_negative_prompts = self._styled(negatives, self.styles, negative=True)
        self.main_prompt, self.main_negative_prompt = self.all_prompts[0], self.all_negative_prompts[0]

    def parse_extra_network_prompts(self) -> None:
        self.prompts, self.extra_network_data = extra_networks.parse_prompts(self.prompts)

    def _cond_key(self, prompts, steps, hires_steps, network_data) -> tuple:
        """What the conds depend on: when it changes, a cached cond is stale (the real
        ``cached_params``; the stand-in has no fp8 or SDXL crop settings)."""
        model_state = (shared.sd_model.sd_checkpoint_info, opts.CLIP_stop_at_last_layers, opts.emphasis)
        return (list(prompts), steps, hires_steps, opts.use_old_scheduling, network_data, self.width, self.height, model_state)

    def _cached_cond(self, encode: Callable, prompts, steps: int, caches: list[list], network_data, hires_steps=None):
        """``encode``'s conds for ``prompts``, from the first of ``caches`` holding them for the same key,
        else computed and stored in the first cache (the real ``get_conds_with_caching``)."""
        if opts.use_old_scheduling:
            schedules = [prompt_parser.get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, old)
                         for old in (False, True)]
            if schedules[0] != schedules[1]:
                self.extra_generation_params["Old prompt editing timelines"] = True
        key = self._cond_key(prompts, steps, hires_steps, network_data)
        for cache in caches:
            if cache[0] is not None and cache[0] == key:
                return cache[1]
        caches[0][1] = encode(shared.sd_model, prompts, steps, hires_steps, opts.use_old_scheduling)
        caches[0][0] = key
        return caches[0][1]

    def _encode_pair(self, prompts, negatives, size, steps, hires_steps, caches, network_data) -> tuple:
        """(cond, uncond) of a batch at ``size``; the uncond is encoded first, as in the real host."""
        width, height = size
        negatives = prompt_parser.SdConditioning(negatives, width=width, height=height, is_negative_prompt=True)
        prompts = prompt_parser.SdConditioning(prompts, width=width, height=height)
        c_caches, uc_caches = caches
        uc = self._cached_cond(prompt_parser.get_learned_conditioning, negatives, steps, uc_caches, network_data, hires_steps)
        c = self._cached_cond(prompt_parser.get_multicond_learned_conditioning, prompts, steps, c_caches, network_data,
                              hires_steps)
        return c, uc

    def _total_steps(self, sampler_name: str, steps: int) -> int:
        """The schedule length prompt editing is computed over: doubled for second-order samplers."""
        config = sd_samplers.find_sampler_config(sampler_name)
        return config.total_steps(steps) if config else steps

    def setup_conds(self) -> None:
        """The batch's conds (``p.c``, ``p.uc``); the refiner switch calls this again with the new model."""
        self.firstpass_steps = self._total_steps(self.sampler_name, self.steps)
        caches = ([StableDiffusionProcessing.cached_c], [StableDiffusionProcessing.cached_uc])
        self.c, self.uc = self._encode_pair(self.prompts, self.negative_prompts, (self.width, self.height),
                                            self.firstpass_steps, None, caches, self.extra_network_data)

    def get_conds(self) -> tuple:
        return self.c, self.uc

    # --- what the subclasses do -----------------------------------------------------------------------

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """Preparation after the ``process`` hooks, once per generation."""

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        raise NotImplementedError


class DecodedSamples(list):
    """Decoded images (what the real ``decode_latent_batch`` returns; a hires pass hands them to
    ``process_images`` already decoded). The stand-in keeps the latents beside them."""

    already_decoded = True
    standin_latents: torch.Tensor | None = None


def decode_latent_batch(model, batch: torch.Tensor, target_device=None, check_for_nans=False) -> DecodedSamples:
    """modules/processing.py ``decode_latent_batch``: each latent decoded on its own, NaNs checked in
    the latents and in every decoded image."""
    if check_for_nans:
        devices.test_for_nans(batch, "unet")
    decoded = DecodedSamples()
    for row in batch.split(1):
        image = decode_first_stage(model, row)[0]
        if check_for_nans:
            devices.test_for_nans(image, "vae")
        decoded.append(image if target_device is None else image.to(target_device))
    decoded.standin_latents = batch.detach().clone()
    return decoded


# --- txt2img ------------------------------------------------------------------------------------------


@_keyword_fields(
    ("enable_hr", "bool", False), ("denoising_strength", "float", 0.75), ("hr_scale", "float", 2.0),
    ("hr_upscaler", "str", None), ("hr_second_pass_steps", "int", 0), ("hr_resize_x", "int", 0), ("hr_resize_y", "int", 0),
    ("hr_checkpoint_name", "str", None), ("hr_sampler_name", "str", None), ("hr_scheduler", "str", None),
    ("hr_prompt", "str", ""), ("hr_negative_prompt", "str", ""), ("force_task_id", "str", None),
)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """modules/processing.py ``StableDiffusionProcessingTxt2Img``: noise to image, optionally followed by
    the hires fix, a second pass that upscales the result (in latent space, or as images with a PIL
    upscaler) and runs it through img2img at the new size with its own prompts, sampler, scheduler,
    steps and, optionally, checkpoint. During that pass ``p.is_hr_pass`` is True."""

    cached_hr_c = [None, None]
    cached_hr_uc = [None, None]

    hr_checkpoint_info = latent_scale_mode = hr_c = hr_uc = hr_extra_network_data = None
    all_hr_prompts = all_hr_negative_prompts = hr_prompts = hr_negative_prompts = None
    hr_upscale_to_x = hr_upscale_to_y = truncate_x = truncate_y = 0

    def init(self, all_prompts, all_seeds, all_subseeds) -> None:
        """Resolves the hires settings and records them in the infotext, in the real host's key order."""
        if not self.enable_hr:
            return
        params = self.extra_generation_params
        params["Denoising strength"] = self.denoising_strength
        if self.hr_checkpoint_name and self.hr_checkpoint_name != "Use same checkpoint":
            self.hr_checkpoint_info = _find_checkpoint(self.hr_checkpoint_name)
            params["Hires checkpoint"] = self.hr_checkpoint_info.short_title
        if self.hr_sampler_name is not None and self.hr_sampler_name != self.sampler_name:
            params["Hires sampler"] = self.hr_sampler_name
        # the hires prompts are written only for images whose hires prompt differs from the first pass's
        params["Hires prompt"] = lambda p, index, prompt_text, **_: (
            None if p.all_hr_prompts[index] == prompt_text else p.all_hr_prompts[index])
        params["Hires negative prompt"] = lambda p, index, negative_prompt, **_: (
            None if p.all_hr_negative_prompts[index] == negative_prompt else p.all_hr_negative_prompts[index])
        params["Hires schedule type"] = None  # holds the key's place; the sampler fills it in
        if self.hr_scheduler is None:
            self.hr_scheduler = self.scheduler

        upscaler = shared.latent_upscale_default_mode if self.hr_upscaler is None else self.hr_upscaler
        self.latent_scale_mode = shared.latent_upscale_modes.get(upscaler)
        if self.latent_scale_mode is None and not any(x.name == self.hr_upscaler for x in shared.sd_upscalers):
            raise Exception(f"could not find upscaler named {self.hr_upscaler}")

        self._resolve_hires_size()
        if self.hr_second_pass_steps:
            params["Hires steps"] = self.hr_second_pass_steps
        if self.hr_upscaler is not None:
            params["Hires upscaler"] = self.hr_upscaler

    def _resolve_hires_size(self) -> None:
        """The second pass's size: scaled by hr_scale, or fitted to "resize to" (one side given: the
        other keeps the aspect; both: cover the box, then crop the excess latent rows/columns)."""
        width, height, box_w, box_h = self.width, self.height, self.hr_resize_x, self.hr_resize_y
        if not box_w and not box_h:
            self.extra_generation_params["Hires upscale"] = self.hr_scale
            self.hr_upscale_to_x, self.hr_upscale_to_y = int(width * self.hr_scale), int(height * self.hr_scale)
            return
        self.extra_generation_params["Hires resize"] = f"{box_w}x{box_h}"
        fit_width = box_h == 0 or (box_w != 0 and width / height < box_w / box_h)
        if fit_width:
            self.hr_upscale_to_x, self.hr_upscale_to_y = box_w, box_w * height // width
        else:
            self.hr_upscale_to_x, self.hr_upscale_to_y = box_h * width // height, box_h
        if box_w and box_h:
            self.truncate_x = (self.hr_upscale_to_x - box_w) // LATENT_SCALE
            self.truncate_y = (self.hr_upscale_to_y - box_h) // LATENT_SCALE

    def setup_prompts(self) -> None:
        """Also the hires prompts: empty ones mean the first pass's."""
        super().setup_prompts()
        if not self.enable_hr:
            return
        count = self.batch_size * self.n_iter
        for kind, first_pass in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt)):
            given = getattr(self, f"hr_{kind}")
            if given == "":
                given = first_pass
                setattr(self, f"hr_{kind}", given)
            texts = given if isinstance(given, list) else [given] * count
            setattr(self, f"all_hr_{kind}s", self._styled(texts, self.styles, negative=kind == "negative_prompt"))

    def parse_extra_network_prompts(self) -> None:
        super().parse_extra_network_prompts()
        if self.enable_hr:
            self.hr_prompts = _batch_slice(self.all_hr_prompts, self.iteration, self.batch_size)
            self.hr_negative_prompts = _batch_slice(self.all_hr_negative_prompts, self.iteration, self.batch_size)
            self.hr_prompts, self.hr_extra_network_data = extra_networks.parse_prompts(self.hr_prompts)

    def setup_conds(self) -> None:
        """First-pass conds; during the hires pass (when the refiner switch calls it) the hires conds.
        With opts.hires_fix_use_firstpass_conds the hires conds are made now, with the first model."""
        if self.is_hr_pass:
            self.hr_c = None
            self.calculate_hr_conds()
            return
        super().setup_conds()
        self.hr_c = self.hr_uc = None
        if self.enable_hr and self.hr_checkpoint_info is None and opts.hires_fix_use_firstpass_conds:
            self.calculate_hr_conds()

    def calculate_hr_conds(self) -> None:
        """The hires pass's conds, at its size and over its schedule; the first-pass caches serve too."""
        if self.hr_c is not None:
            return
        hires_steps = self._total_steps(self.hr_sampler_name or self.sampler_name, self.hr_second_pass_steps or self.steps)
        first_pass = StableDiffusionProcessing
        caches = ([self.cached_hr_c, first_pass.cached_c], [self.cached_hr_uc, first_pass.cached_uc])
        size = (self.hr_upscale_to_x, self.hr_upscale_to_y)
        self.hr_c, self.hr_uc = self._encode_pair(self.hr_prompts, self.hr_negative_prompts, size, self.firstpass_steps,
                                                  hires_steps, caches, self.hr_extra_network_data)

    def get_conds(self) -> tuple:
        return (self.hr_c, self.hr_uc) if self.is_hr_pass else (self.c, self.uc)

    def close(self) -> None:
        super().close()
        self.hr_c = self.hr_uc = None
        if not opts.persistent_cond_cache:
            StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
            StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        """The first pass from ``p.rng``'s noise; with the hires fix, the second pass (its result comes
        back decoded)."""
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        noise = self.rng.next()
        _hook(self, "process_before_every_sampling", x=noise, noise=noise, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, noise, conditioning, unconditional_conditioning,
                                      image_conditioning=_plain_image_conditioning(noise))
        if not self.enable_hr:
            return samples
        decoded = None
        if self.latent_scale_mode is None:  # a PIL upscaler works on the first pass's images
            decoded = decode_latent_batch(self.sd_model, samples, target_device=devices.cpu, check_for_nans=True)
            decoded = torch.stack(decoded).float()
        with sd_models.SkipWritingToConfig():
            sd_models.reload_model_weights(info=self.hr_checkpoint_info)
        return self.sample_hr_pass(samples, decoded, seeds, subseeds, subseed_strength, prompts)

    def _save_before_hires(self, image: Image.Image, index: int) -> None:
        """opts.save_images_before_highres_fix: the first pass's image, saved with its own infotext."""
        info = create_infotext(self, self.all_prompts, self.all_seeds, self.all_subseeds, iteration=self.iteration,
                               position_in_batch=index)
        images.save_image(image, self.outpath_samples, "", self.seeds[index], self.prompts[index], opts.samples_format,
                          info=info, p=self, suffix="-before-highres-fix")

    def _upscaled(self, samples: torch.Tensor, decoded: torch.Tensor | None) -> torch.Tensor:
        """The first pass's result at the hires size, as latents."""
        size = (self.hr_upscale_to_x, self.hr_upscale_to_y)
        keep_first_pass = self.save_samples() and opts.save_images_before_highres_fix
        if self.latent_scale_mode is not None:
            for index in range(samples.shape[0]) if keep_first_pass else ():
                self._save_before_hires(sd_samplers_common.sample_to_image(samples, index, approximation=0), index)
            mode = self.latent_scale_mode
            return torch.nn.functional.interpolate(samples, size=(size[1] // LATENT_SCALE, size[0] // LATENT_SCALE),
                                                   mode=mode["mode"], antialias=mode["antialias"])
        pictures = []
        for index, image in enumerate(map(_to_pil, torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0))):
            if keep_first_pass:
                self._save_before_hires(image, index)
            image = images.resize_image(0, image, *size, upscaler_name=self.hr_upscaler)
            pictures.append(np.moveaxis(np.array(image).astype(np.float32) / 255.0, 2, 0))
        pixels = torch.from_numpy(np.array(pictures)).to(shared.device, dtype=devices.dtype_vae)
        if opts.sd_vae_encode_method != "Full":
            self.extra_generation_params["VAE Encoder"] = opts.sd_vae_encode_method
        return images_tensor_to_samples(pixels, approximation_indexes.get(opts.sd_vae_encode_method))

    def sample_hr_pass(self, samples, decoded_samples, seeds, subseeds, subseed_strength, prompts):
        """The hires fix's second pass: an img2img pass over the upscaled first pass with fresh noise
        (a new ``p.rng`` at the new size), the hires extra networks and conds, ``before_hr`` and
        ``process_before_every_sampling``, and ``hr_second_pass_steps`` (or ``steps``) steps."""
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        samples = self._upscaled(samples, decoded_samples)
        state.nextjob()
        rows, columns = samples.shape[2:]
        samples = samples[:, :, self.truncate_y // 2 : rows - (self.truncate_y + 1) // 2,
                          self.truncate_x // 2 : columns - (self.truncate_x + 1) // 2]
        self.rng = _image_rng(self, samples.shape[1:])
        noise = self.rng.next()
        if not self.disable_extra_networks:
            extra_networks.activate(self, self.hr_extra_network_data)
        self.calculate_hr_conds()
        sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio(for_hr=True))
        _hook(self, "before_hr")
        _hook(self, "process_before_every_sampling", x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc)
        steps = self.hr_second_pass_steps or self.steps
        samples = self.sampler.sample_img2img(self, samples, noise, self.hr_c, self.hr_uc, steps=steps,
                                              image_conditioning=_plain_image_conditioning(samples))
        sd_models.apply_token_merging(self.sd_model, self.get_token_merging_ratio())
        self.sampler = None
        decoded = decode_latent_batch(self.sd_model, samples, target_device=devices.cpu, check_for_nans=True)
        self.is_hr_pass = False
        return decoded


# --- img2img ------------------------------------------------------------------------------------------


def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:
    """modules/processing.py ``create_binary_mask``: the alpha channel of a partly transparent RGBA
    image (thresholded at 128 when ``round``), otherwise the image as greyscale."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        alpha = image.split()[-1].convert("L")
        return alpha.point(lambda value: 255 if value > 128 else 0) if round else alpha
    return image.convert("L")


def _blur_mask(mask: Image.Image, radius_x: int, radius_y: int) -> Image.Image:
    """The Gaussian blur the real img2img applies to a mask with cv2 (``GaussianBlur(mask, (k, 1), r)``
    then ``(1, k)``): kernel size 2 * int(2.5 * r + 0.5) + 1, mirrored borders without repeating the
    edge (cv2's default), the result rounded back to 8 bits after each direction."""
    pixels = np.array(mask)
    for axis, sigma in ((1, radius_x), (0, radius_y)):
        if sigma <= 0:
            continue
        half = int(2.5 * sigma + 0.5)
        weights = np.exp(-np.arange(-half, half + 1) ** 2 / (2.0 * sigma * sigma))
        weights /= weights.sum()
        padding = [(0, 0), (0, 0)]
        padding[axis] = (half, half)
        padded = np.pad(pixels.astype(np.float64), padding, mode="reflect" if pixels.shape[axis] > 1 else "edge")
        length = pixels.shape[axis]
        blurred = sum(weight * np.take(padded, np.arange(offset, offset + length), axis=axis)
                      for offset, weight in enumerate(weights))
        pixels = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@_keyword_fields(
    ("init_images", "list", None), ("resize_mode", "int", 0), ("denoising_strength", "float", 0.75),
    ("image_cfg_scale", "float", None), ("mask", "Any", None), ("mask_blur_x", "int", 4), ("mask_blur_y", "int", 4),
    ("mask_blur", "int", None), ("mask_round", "bool", True), ("inpainting_fill", "int", 0),
    ("inpaint_full_res", "bool", True), ("inpaint_full_res_padding", "int", 0), ("inpainting_mask_invert", "int", 0),
    ("initial_noise_multiplier", "float", None), ("force_task_id", "str", None),
)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """modules/processing.py ``StableDiffusionProcessingImg2Img``: image to image. ``p.init`` turns the
    init images (one per image, or one for the whole batch) into ``p.init_latent``, shrinking the batch
    to the number of images given; with a mask it also prepares the inpainting: the mask (binary,
    inverted, blurred), "only masked" cropping, the masked-content fill, the latent masks ``p.mask``
    (keep) / ``p.nmask`` (repaint) and the overlays pasted over the results. The constructor's ``mask``
    becomes ``p.image_mask``; ``p.mask`` is the latent mask."""

    image_mask = nmask = image_conditioning = mask_for_overlay = init_latent = None
    standin_init_latent: torch.Tensor | None = None  # stand-in only, see the module docstring

    def _prepare(self) -> None:
        super()._prepare()
        self.image_mask, self.mask = self.mask, None
        if self.initial_noise_multiplier is None:
            self.initial_noise_multiplier = opts.initial_noise_multiplier

    @property
    def mask_blur(self) -> int | None:
        """One radius for both directions when they agree (the infotext's "Mask blur")."""
        return self.mask_blur_x if self.mask_blur_x == self.mask_blur_y else None

    @mask_blur.setter
    def mask_blur(self, radius) -> None:
        if isinstance(radius, int):
            self.mask_blur_x = self.mask_blur_y = radius

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        overridden = "token_merging_ratio" in self.override_settings and opts.token_merging_ratio
        return self.token_merging_ratio or overridden or opts.token_merging_ratio_img2img or opts.token_merging_ratio

    def init(self, all_prompts, all_seeds, all_subseeds) -> None:
        params = self.extra_generation_params
        params["Denoising strength"] = self.denoising_strength
        self.image_cfg_scale = self.image_cfg_scale if shared.sd_model.cond_stage_key == "edit" else None
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        if opts.img2img_color_correction:
            raise NotImplementedError("stand-in: img2img color correction is not implemented")
        if self.init_images is None and self.standin_init_latent is not None:
            self._init_from_latent()
            return

        mask, crop = self._prepare_mask()
        pixels = []
        for picture in self.init_images:
            picture = images.flatten(picture, opts.img2img_background_color)
            if crop is None and self.resize_mode != 3:
                picture = images.resize_image(self.resize_mode, picture, self.width, self.height)
            if mask is not None:
                if self.mask_for_overlay.size != picture.size:
                    self.mask_for_overlay = images.resize_image(self.resize_mode, self.mask_for_overlay, *picture.size)
                self.overlay_images.append(masking.masked_out(picture, self.mask_for_overlay).convert("RGBA"))
            if crop is not None:
                picture = images.resize_image(2, picture.crop(crop), self.width, self.height)
            if mask is not None and self.inpainting_fill != 1:
                picture = masking.fill(picture, mask)
                if self.inpainting_fill == 0:
                    params["Masked content"] = "fill"
            pixels.append(np.moveaxis(np.array(picture).astype(np.float32) / 255.0, 2, 0))

        if self._one_for_all(len(pixels), "images"):
            batch = np.repeat(pixels[0][None], self.batch_size, axis=0)
            if self.overlay_images is not None:
                self.overlay_images = self.overlay_images * self.batch_size
        else:
            batch = np.array(pixels)

        image = torch.from_numpy(batch).to(shared.device, dtype=devices.dtype_vae)
        if opts.sd_vae_encode_method != "Full":
            params["VAE Encoder"] = opts.sd_vae_encode_method
        self.init_latent = images_tensor_to_samples(image, approximation_indexes.get(opts.sd_vae_encode_method), self.sd_model)
        if self.resize_mode == 3:  # "latent upscale": the init image is resized as a latent
            latent_size = (self.height // LATENT_SCALE, self.width // LATENT_SCALE)
            self.init_latent = torch.nn.functional.interpolate(self.init_latent, size=latent_size, mode="bilinear")
        if mask is not None:
            self._set_latent_masks(mask, all_seeds)
        self.image_conditioning = _plain_image_conditioning(self.init_latent)

    def _one_for_all(self, count: int, what: str) -> bool:
        """Whether one init image serves the whole batch; otherwise the batch shrinks to the ``count``
        given, which may not exceed it."""
        if count == 1:
            return True
        if count > self.batch_size:
            raise RuntimeError(f"bad number of {what} passed: {count}; expecting {self.batch_size} or less")
        self.batch_size = count
        return False

    def _init_from_latent(self) -> None:
        """Stand-in only: ``p.standin_init_latent`` as the encoded init images (one latent repeated for
        the batch, or one per image)."""
        if self.image_mask is not None:
            raise NotImplementedError("stand-in: a mask needs init_images")
        latent = self.standin_init_latent.to(shared.device, dtype=devices.dtype)
        shared_by_all = self._one_for_all(latent.shape[0], "latents")
        self.init_latent = latent.repeat(self.batch_size, 1, 1, 1) if shared_by_all else latent
        self.image_conditioning = _plain_image_conditioning(self.init_latent)

    def _prepare_mask(self) -> tuple[Image.Image | None, tuple | None]:
        """The inpainting mask at the processing size and, for "only masked", the crop box in the init
        image; sets ``mask_for_overlay``, ``paste_to`` and the mask's infotext keys."""
        if self.image_mask is None:
            return None, None
        params = self.extra_generation_params
        mask = create_binary_mask(self.image_mask, round=self.mask_round)
        if self.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
            params["Mask mode"] = "Inpaint not masked"
        if self.mask_blur_x > 0 or self.mask_blur_y > 0:
            mask = _blur_mask(mask, self.mask_blur_x, self.mask_blur_y)
            params["Mask blur"] = self.mask_blur
        self.overlay_images = []
        if not self.inpaint_full_res:
            mask = images.resize_image(self.resize_mode, mask, self.width, self.height)
            # the overlay keeps the original where the blurred mask is below half
            self.mask_for_overlay = Image.fromarray(np.clip(np.array(mask).astype(np.float32) * 2, 0, 255).astype(np.uint8))
            return mask, None
        self.mask_for_overlay = mask
        grey = mask.convert("L")
        crop = masking.get_crop_region_v2(grey, self.inpaint_full_res_padding)
        if not crop:
            # a blank mask: the real host falls back to plain img2img and says so
            self.mask_for_overlay = None
            self.inpaint_full_res = False
            message = 'Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.'
            model_hijack.comments.append(message)
            logging.info(message)
            return None, None
        crop = masking.expand_crop_region(crop, self.width, self.height, grey.width, grey.height)
        left, top, right, bottom = crop
        self.paste_to = (left, top, right - left, bottom - top)
        params["Inpaint area"] = "Only masked"
        params["Masked area padding"] = self.inpaint_full_res_padding
        return images.resize_image(2, grey.crop(crop), self.width, self.height), crop

    def _set_latent_masks(self, mask: Image.Image, all_seeds: list[int]) -> None:
        """``p.nmask`` (1 where the image is repainted) and ``p.mask`` (1 where it is kept) at latent
        size, and the latent fill modes (2: noise, 3: nothing) applied to the masked area."""
        images_count, channels, rows, columns = self.init_latent.shape
        grey = np.array(mask.convert("RGB").resize((columns, rows)), dtype=np.float32)[..., 0] / 255
        repaint = torch.from_numpy(np.around(grey) if self.mask_round else grey)
        self.nmask = repaint[None].repeat(channels, 1, 1).to(shared.device, devices.dtype)
        self.mask = 1.0 - self.nmask
        filled = {2: "latent noise", 3: "latent nothing"}.get(self.inpainting_fill)
        if filled:
            self.init_latent = self.init_latent * self.mask
            if self.inpainting_fill == 2:
                noise = rng.ImageRNG((channels, rows, columns), all_seeds[:images_count]).next()
                self.init_latent = self.init_latent + noise * self.nmask
            self.extra_generation_params["Masked content"] = filled

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        """Noise from ``p.rng`` (times the initial noise multiplier), ``process_before_every_sampling``
        with the init latent as ``x``, the sampler's img2img, then the final inpainting blend (which the
        ``on_mask_blend`` hooks may change)."""
        noise = self.rng.next()
        if self.initial_noise_multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = self.initial_noise_multiplier
            noise *= self.initial_noise_multiplier
        _hook(self, "process_before_every_sampling", x=self.init_latent, noise=noise, c=conditioning,
              uc=unconditional_conditioning)
        samples = self.sampler.sample_img2img(self, self.init_latent, noise, conditioning, unconditional_conditioning,
                                              image_conditioning=self.image_conditioning)
        if self.mask is None:
            return samples
        blended = samples * self.nmask + self.init_latent * self.mask
        blend = scripts.MaskBlendArgs(samples, self.nmask, self.init_latent, self.mask, blended)
        _hook(self, "on_mask_blend", blend)
        return blend.blended_latent


# --- the result -----------------------------------------------------------------------------------


class Processed:
    """modules/processing.py ``Processed``: the images of a generation with their infotexts, the
    comments, and the values ``js()`` reports (the API's ``info``, which has no comments)."""

    _JS_FIELDS = (
        "all_prompts all_negative_prompts seed all_seeds subseed all_subseeds subseed_strength width height "
        "sampler_name cfg_scale steps batch_size restore_faces face_restoration_model sd_model_name sd_model_hash "
        "sd_vae_name sd_vae_hash seed_resize_from_w seed_resize_from_h denoising_strength extra_generation_params "
        "index_of_first_image infotexts styles job_timestamp clip_skip is_using_inpainting_conditioning version"
    ).split()

    def __init__(self, p: StableDiffusionProcessing, images_list: list, seed=-1, info: str = "", subseed=None,
                 index_of_first_image: int = 0, infotexts: list[str] | None = None):
        def first(value):
            return value[0] if isinstance(value, list) else value

        for name in ("width", "height", "sampler_name", "cfg_scale", "steps", "batch_size", "restore_faces", "styles",
                     "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
                     "extra_generation_params", "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash",
                     "is_using_inpainting_conditioning"):
            setattr(self, name, getattr(p, name))
        self.images = images_list
        self.info = info
        self.prompt, self.negative_prompt = first(p.prompt), first(p.negative_prompt)
        self.seed = -1 if seed is None else int(first(seed))
        self.subseed = -1 if subseed is None else int(first(subseed))
        self.comments = "".join(f"{text}\n" for text in p.comments)
        self.face_restoration_model = opts.face_restoration_model if p.restore_faces else None
        self.index_of_first_image = index_of_first_image
        self.job_timestamp = state.job_timestamp
        self.clip_skip = opts.CLIP_stop_at_last_layers
        self.version = WEBUI_VERSION
        self.all_prompts = p.all_prompts or [self.prompt]
        self.all_negative_prompts = p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = p.all_seeds or [self.seed]
        self.all_subseeds = p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.standin_latents: torch.Tensor | None = None  # stand-in only, see the module docstring

    def js(self) -> str:
        """The generation info as JSON (values that cannot be serialised, such as infotext callables,
        become null)."""
        data = {name: getattr(self, name) for name in self._JS_FIELDS}
        data["prompt"], data["negative_prompt"] = self.all_prompts[0], self.all_negative_prompts[0]
        return json.dumps(data, default=lambda value: None)


# --- infotexts --------------------------------------------------------------------------------------


def _fixed_infotext_fields(p, index: int, use_main_prompt: bool, seeds: list, subseeds: list) -> list[tuple[str, Any]]:
    """The infotext's own keys, in the real host's order, before ``p.extra_generation_params``."""
    seed = p.all_seeds[0] if use_main_prompt else seeds[index]
    subseed = p.all_subseeds[0] if use_main_prompt else subseeds[index]
    varied = p.subseed_strength != 0
    resized = p.seed_resize_from_w > 0 and p.seed_resize_from_h > 0
    clip_skip = opts.CLIP_stop_at_last_layers
    merging, merging_hr = p.get_token_merging_ratio(), p.get_token_merging_ratio(for_hr=True)
    uses_ensd = opts.eta_noise_seed_delta != 0 and sd_samplers_common.is_sampler_using_eta_noise_seed_delta(p)
    return [
        ("Steps", p.steps), ("Sampler", p.sampler_name), ("Schedule type", p.scheduler), ("CFG scale", p.cfg_scale),
        ("Image CFG scale", getattr(p, "image_cfg_scale", None)), ("Seed", seed),
        ("Face restoration", opts.face_restoration_model if p.restore_faces else None), ("Size", f"{p.width}x{p.height}"),
        ("Model hash", p.sd_model_hash if opts.add_model_hash_to_info else None),
        ("Model", p.sd_model_name if opts.add_model_name_to_info else None),
        ("VAE hash", p.sd_vae_hash if opts.add_vae_hash_to_info else None),
        ("VAE", p.sd_vae_name if opts.add_vae_name_to_info else None),
        ("Variation seed", subseed if varied else None), ("Variation seed strength", p.subseed_strength if varied else None),
        ("Seed resize from", f"{p.seed_resize_from_w}x{p.seed_resize_from_h}" if resized else None),
        ("Denoising strength", p.extra_generation_params.get("Denoising strength")),
        ("Clip skip", clip_skip if clip_skip > 1 else None), ("ENSD", opts.eta_noise_seed_delta if uses_ensd else None),
        ("Token merging ratio", merging or None),
        ("Token merging ratio hr", merging_hr if getattr(p, "enable_hr", False) and merging_hr else None),
        ("RNG", opts.randn_source if opts.randn_source != "GPU" else None),
    ]


def create_infotext(p, all_prompts, all_seeds, all_subseeds, iteration=0, position_in_batch=0, use_main_prompt=False,
                    index=None, all_negative_prompts=None) -> str:
    """modules/processing.py ``create_infotext``: "prompt", "Negative prompt: ..." and one line of
    "key: value" pairs: the fixed keys, then ``p.extra_generation_params``, then the version. A list
    value gives the image's element; a callable is called with the values describing the image
    (``p``, ``index``, ``all_prompts``, ``prompt_text``, ``negative_prompt``...) and a failing one is
    reported and left out; None is left out; a value equal to its key is written alone; values with
    ',', ':' or a newline are JSON-quoted (``infotext_utils.quote``)."""
    if use_main_prompt:
        index = 0
    elif index is None:
        index = position_in_batch + iteration * p.batch_size
    all_negative_prompts = p.all_negative_prompts if all_negative_prompts is None else all_negative_prompts
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]
    described = dict(p=p, index=index, all_prompts=all_prompts, all_seeds=all_seeds, all_subseeds=all_subseeds,
                     all_negative_prompts=all_negative_prompts, prompt_text=prompt_text, negative_prompt=negative_prompt,
                     iteration=iteration, position_in_batch=position_in_batch, use_main_prompt=use_main_prompt)

    fields = dict(_fixed_infotext_fields(p, index, use_main_prompt, all_seeds, all_subseeds))
    fields.update(p.extra_generation_params)
    fields["Version"] = WEBUI_VERSION if opts.add_version_to_infotext else None
    fields["User"] = p.user if opts.add_user_name_to_info else None

    pairs = []
    for key, value in fields.items():
        try:
            if isinstance(value, list):
                value = value[index]
            elif callable(value):
                value = value(**described)
        except Exception:
            errors.report(f'Error creating infotext for key "{key}"', exc_info=True)
            value = None
        if value is not None:
            pairs.append(key if key == value else f"{key}: {infotext_utils.quote(value)}")

    negative_line = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt_text}{negative_line}\n{', '.join(pairs)}".strip()


# --- seeds ------------------------------------------------------------------------------------------


def get_fixed_seed(seed):
    """modules/processing.py ``get_fixed_seed``: -1, None, "" and text that is not a number become a
    random seed; anything else (a list too) is kept."""
    if isinstance(seed, str):
        try:
            seed = int(seed)
        except ValueError:
            seed = -1
    if seed is None or seed == -1:
        return int(random.randrange(4294967294))
    return seed


def fix_seed(p) -> None:
    """modules/processing.py ``fix_seed``: p's random seeds made concrete (the X/Y/Z plot does this
    first so that every cell uses the same seed)."""
    p.seed = get_fixed_seed(p.seed)
    p.subseed = get_fixed_seed(p.subseed)


# --- the generation -------------------------------------------------------------------------------


@contextlib.contextmanager
def _overridden_settings(p: StableDiffusionProcessing):
    """``p.override_settings`` in force for the generation (checkpoint and VAE reloaded as needed) and
    the changed options restored afterwards unless ``override_settings_restore_afterwards`` is off. As
    in the real host, only options already in ``opts.data`` are restored."""
    overrides = p.override_settings
    saved = {key: opts.data[key] for key in overrides if key in opts.data}
    try:
        if sd_models.checkpoint_aliases.get(overrides.get("sd_model_checkpoint")) is None:
            # no (known) checkpoint override: back to the selected checkpoint (after a refiner or hires one)
            overrides.pop("sd_model_checkpoint", None)
            sd_models.reload_model_weights()
        for key, value in overrides.items():
            opts.set(key, value, is_api=True, run_callbacks=False)
            if key == "sd_model_checkpoint":
                sd_models.reload_model_weights()
            elif key == "sd_vae":
                sd_vae.reload_vae_weights()
        yield
    finally:
        if p.override_settings_restore_afterwards:
            for key, value in saved.items():
                setattr(opts, key, value)
                if key == "sd_vae":
                    sd_vae.reload_vae_weights()


def process_images(p: StableDiffusionProcessing) -> Processed:
    """modules/processing.py ``process_images``: the ``before_process`` hooks, then the generation with
    the override settings and token merging in force."""
    _hook(p, "before_process")
    with _overridden_settings(p):
        try:
            sd_models.apply_token_merging(p.sd_model, p.get_token_merging_ratio())
            sd_samplers.fix_p_invalid_sampler_and_scheduler(p)
            return process_images_inner(p)
        finally:
            sd_models.apply_token_merging(p.sd_model, 0)


class _Gallery:
    """What the batches produce: images, their infotexts and (stand-in) latents."""

    def __init__(self) -> None:
        self.images: list = []
        self.infotexts: list[str] = []
        self.latents: list[torch.Tensor] = []


def _start(p: StableDiffusionProcessing) -> None:
    """Before the ``process`` hooks: the model's names, the sampler settings, every image's prompts and
    seeds (one seed per image counting up from the first, except with a variation strength, where all
    share the seed and the variation seeds count up)."""
    assert p.prompt is not None and (not isinstance(p.prompt, list) or len(p.prompt) > 0)
    seed, subseed = get_fixed_seed(p.seed), get_fixed_seed(p.subseed)
    p.restore_faces = opts.face_restoration if p.restore_faces is None else p.restore_faces
    if p.refiner_checkpoint not in (None, "", "None", "none"):
        p.refiner_checkpoint_info = _find_checkpoint(p.refiner_checkpoint)
    p.sd_model_name = shared.sd_model.sd_checkpoint_info.name_for_extra
    p.sd_model_hash = shared.sd_model.sd_model_hash
    p.sd_vae_name, p.sd_vae_hash = sd_vae.get_loaded_vae_name(), sd_vae.get_loaded_vae_hash()
    model_hijack.clear_comments()
    p.fill_fields_from_opts()
    p.setup_prompts()
    count = len(p.all_prompts)
    step = 1 if p.subseed_strength == 0 else 0
    p.all_seeds = seed if isinstance(seed, list) else [int(seed) + i * step for i in range(count)]
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + i for i in range(count)]


def _slice_batch(p: StableDiffusionProcessing, batch: int) -> None:
    p.prompts = _batch_slice(p.all_prompts, batch, p.batch_size)
    p.negative_prompts = _batch_slice(p.all_negative_prompts, batch, p.batch_size)


def _batch_infotext(p: StableDiffusionProcessing, index: int = 0, use_main_prompt: bool = False) -> str:
    return create_infotext(p, p.prompts, p.seeds, p.subseeds, index=index, use_main_prompt=use_main_prompt,
                           all_negative_prompts=p.negative_prompts)


def _sample_batch(p: StableDiffusionProcessing, batch: int):
    """One batch up to its sampled latents (or images, after a hires pass); None when the batch has no
    prompts (a script emptied it), which ends the generation."""
    global last_params_txt
    sd_models.reload_model_weights()  # a refiner or hires checkpoint of the previous batch goes
    _slice_batch(p, batch)
    p.seeds = _batch_slice(p.all_seeds, batch, p.batch_size)
    p.subseeds = _batch_slice(p.all_subseeds, batch, p.batch_size)
    channels = getattr(shared.sd_model, "latent_channels", 4)
    p.rng = _image_rng(p, (channels, p.height // LATENT_SCALE, p.width // LATENT_SCALE))
    _hook(p, "before_process_batch", batch_number=batch, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
    if not p.prompts:
        return None
    p.parse_extra_network_prompts()
    if not p.disable_extra_networks:
        extra_networks.activate(p, p.extra_network_data)
    _hook(p, "process_batch", batch_number=batch, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
    p.setup_conds()
    p.extra_generation_params.update(model_hijack.extra_generation_params)
    if batch == 0 and not cmd_opts.no_prompt_history:
        last_params_txt = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds)
    for text in model_hijack.comments:
        p.comment(text)
    if p.n_iter > 1:
        state.job = f"Batch {batch + 1} out of {p.n_iter}"
    sd_models.apply_alpha_schedule_override(p.sd_model, p)
    return p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                    subseed_strength=p.subseed_strength, prompts=p.prompts)


def _decode_batch(p: StableDiffusionProcessing, batch: int, samples) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """``post_sample``, decoding, ``postprocess_batch`` and ``postprocess_batch_list``: the batch's
    images in [0, 1] and the latents of those a script kept (found by identity)."""
    if p.scripts is not None:
        handed = scripts.PostSampleArgs(samples)
        p.scripts.post_sample(p, handed)
        samples = handed.samples
    if not getattr(samples, "already_decoded", False):
        devices.test_for_nans(samples, "unet")
        if opts.sd_vae_decode_method != "Full":
            p.extra_generation_params["VAE Decoder"] = opts.sd_vae_decode_method
        samples = decode_latent_batch(p.sd_model, samples, target_device=devices.cpu, check_for_nans=True)
    latents = getattr(samples, "standin_latents", None)
    decoded = torch.clamp((torch.stack(samples).float() + 1.0) / 2.0, min=0.0, max=1.0)
    state.nextjob()
    if p.scripts is None:
        return list(decoded), latents
    p.scripts.postprocess_batch(p, decoded, batch_number=batch)
    _slice_batch(p, batch)
    kept = scripts.PostprocessBatchListArgs(list(decoded))
    given = list(kept.images)
    p.scripts.postprocess_batch_list(p, kept, batch_number=batch)
    if latents is not None:
        positions = [next((i for i, image in enumerate(given) if image is sample), None) for sample in kept.images]
        if None not in positions:
            latents = latents[positions]
    return kept.images, latents


def apply_overlay(image: Image.Image, paste_loc, overlay: Image.Image | None) -> tuple[Image.Image, Image.Image]:
    """modules/processing.py ``apply_overlay``: an "only masked" result pasted back into the full image,
    then the unmasked original composited over it; also returns the image before that composite."""
    if overlay is None:
        return image, image.copy()
    if paste_loc is not None:
        left, top, width, height = paste_loc
        canvas = Image.new("RGBA", (overlay.width, overlay.height))
        canvas.paste(images.resize_image(1, image, width, height), (left, top))
        image = canvas
    denoised = image.copy()
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB"), denoised


def _finish_image(p: StableDiffusionProcessing, index: int, sample: torch.Tensor, save: bool, gallery: _Gallery) -> None:
    """One image of the batch: the image hooks, the inpainting overlay, saving, its infotext, and the
    mask images the options ask for."""

    def save_as(picture: Image.Image, suffix: str) -> None:
        images.save_image(picture, p.outpath_samples, "", p.seeds[index], p.prompts[index], opts.samples_format,
                          info=_batch_infotext(p, index), p=p, suffix=suffix)

    if p.restore_faces:
        raise NotImplementedError("stand-in: face restoration is not available")
    handed = scripts.PostprocessImageArgs(_to_pil(sample))
    _hook(p, "postprocess_image", handed)
    overlays = getattr(p, "overlay_images", None)
    overlay = overlays[index] if opts.overlay_inpaint and overlays is not None and index < len(overlays) else None
    masks = scripts.PostProcessMaskOverlayArgs(index, getattr(p, "mask_for_overlay", None), overlay)
    _hook(p, "postprocess_maskoverlay", masks)
    image, denoised = apply_overlay(handed.image, p.paste_to, masks.overlay_image)
    handed = scripts.PostprocessImageArgs(image)
    _hook(p, "postprocess_image_after_composite", handed)
    image = handed.image
    if save:
        save_as(image, "")
    text = _batch_infotext(p, index)
    gallery.infotexts.append(text)
    if opts.enable_pnginfo:
        image.info["parameters"] = text
    gallery.images.append(image)

    mask = masks.mask_for_overlay
    if mask is None:
        return
    if opts.return_mask or opts.save_mask:
        if save and opts.save_mask:
            save_as(mask.convert("RGB"), "-mask")
        if opts.return_mask:
            gallery.images.append(mask.convert("RGB"))
    if opts.return_mask_composite or opts.save_mask_composite:
        where = images.resize_image(2, mask, image.width, image.height).convert("L")
        composite = Image.composite(denoised.convert("RGBA").convert("RGBa"), Image.new("RGBa", image.size), where)
        composite = composite.convert("RGBA")
        if save and opts.save_mask_composite:
            save_as(composite, "-mask-composite")
        if opts.return_mask_composite:
            gallery.images.append(composite)


def _add_grid(p: StableDiffusionProcessing, gallery: _Gallery) -> int:
    """The grid of the generated images, first in the result (``opts.return_grid``) and/or saved;
    returns the index of the first image that is not the grid."""
    too_few = len(gallery.images) < 2 and opts.grid_only_if_multiple
    if p.do_not_save_grid or too_few or not (opts.return_grid or opts.grid_save):
        return 0
    grid = images.image_grid(gallery.images, p.batch_size)
    text = _batch_infotext(p, use_main_prompt=True)
    if opts.grid_save:
        images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format, info=text,
                          short_filename=not opts.grid_extended_filename, p=p, grid=True)
    if not opts.return_grid:
        return 0
    gallery.infotexts.insert(0, text)
    if opts.enable_pnginfo:
        grid.info["parameters"] = text
    gallery.images.insert(0, grid)
    return 1


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """modules/processing.py ``process_images_inner`` (see the module docstring for the order)."""
    _start(p)
    _hook(p, "process")
    gallery = _Gallery()
    with torch.no_grad(), p.sd_model.ema_scope():
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)
        sd_unet.apply_unet()
        if state.job_count == -1:
            state.job_count = p.n_iter
        for batch in range(p.n_iter):
            p.iteration = batch
            state.skipped = False
            samples = None if state.interrupted or state.stopping_generation else _sample_batch(p, batch)
            if samples is None:
                break
            decoded, latents = _decode_batch(p, batch, samples)
            save = p.save_samples()
            for index, sample in enumerate(decoded):
                _finish_image(p, index, sample, save, gallery)
                if latents is not None and index < latents.shape[0]:
                    gallery.latents.append(latents[index])
        if not gallery.infotexts:
            gallery.infotexts.append(create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds))
        first = _add_grid(p, gallery)
    if not p.disable_extra_networks and p.extra_network_data:
        extra_networks.deactivate(p, p.extra_network_data)

    result = Processed(p, gallery.images, p.all_seeds[0], gallery.infotexts[0], subseed=p.all_subseeds[0],
                       index_of_first_image=first, infotexts=gallery.infotexts)
    result.standin_latents = torch.stack(gallery.latents) if gallery.latents else None
    _hook(p, "postprocess", result)
    return result
