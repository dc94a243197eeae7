"""The stand-in WebUI (tests/webui) as WebUI Forge runs it.

Forge's ``modules`` is a fork of the AUTOMATIC1111 WebUI's, and an extension meets the fork's
differences in a handful of places: the loaded model is one of Forge's own (its U-Net behind a
patcher in ``forge_objects``), the model is reloaded and ``forge_objects`` reset around every batch
and every sampling pass, the CFG denoiser hands each step to Forge's ``sampling_function``, the
refiner switch reloads the model mid-pass, and sampling is prepared and cleaned up around each
sampler run. :func:`install` replaces exactly those behaviours of the stand-in's modules with
Forge's (each replacement names the Forge file and function it mirrors, at dfdcbab6) and puts
Forge's packages on ``sys.path``: the ``backend`` stand-in (tests/forge) and ``modules_forge``
(this folder), by which extensions tell Forge; :func:`uninstall` restores all of it.

Left out: inpainting (Forge's noised-init blend), the timestep samplers (DDIM, PLMS, UniPC, whose
Forge denoiser converts timesteps to sigmas), LoRA (``forge_objects_after_applying_lora`` is the
original), Forge's UI fields (distilled CFG, hires CFG: ``hr_cfg`` keeps the API's default, 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
from typing import Any, Callable, List, Tuple

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
BACKEND = os.path.join(os.path.dirname(HERE), "forge")
CONTROLNET_EXTENSION = os.path.join(HERE, "sd_forge_controlnet")
"""The built-in ControlNet stand-in, to register as a built-in extension before the host starts."""

# --- Forge's models (backend/diffusion_engine/) ---------------------------------------------------


class ForgeObjects:
    """backend/diffusion_engine/base.py ``ForgeObjects``: the model's parts; ``shallow_copy`` shares them."""

    def __init__(self, unet: Any, clip: Any, vae: Any, clipvision: Any = None):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self) -> "ForgeObjects":
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


def _context_width(network: nn.Module) -> int | None:
    """The text context width of a U-Net's cross-attention, ``None`` for a network without one."""
    for name, module in network.named_modules():
        if name.endswith("attn2"):
            return module.to_k.in_features
    return None


class ForgeModel:
    """backend/diffusion_engine/base.py ``ForgeDiffusionEngine``: ``forge_objects`` (and the two
    copies processing resets from), the WebUI-facing flags and the checkpoint fields the loader sets.
    It has no ``model`` attribute: Forge's engines keep their denoiser in ``forge_objects.unet``."""

    sd_checkpoint_info = sd_model_checkpoint = sd_model_hash = filename = used_config = None
    is_sd1 = is_sd2 = is_sdxl = is_sd3 = is_inpaint = False
    latent_channels = 4
    cond_stage_key = "txt"

    def __init__(self, network: nn.Module, encoder: Any, vae: Any):
        from backend.modules.k_model import KModel
        from backend.patcher.unet import UnetPatcher
        from standin_model import sd_alphas_cumprod

        self.first_stage_model = vae
        self.forge_objects = ForgeObjects(UnetPatcher(KModel(network)), encoder, vae)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.alphas_cumprod = sd_alphas_cumprod()  # what k-diffusion's wrapper takes its sigmas from
        self.extra_generation_params, self.comments = {}, []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield None

    def get_first_stage_encoding(self, x: torch.Tensor) -> torch.Tensor:
        return x  # Forge's encode_first_stage already gives the latent

    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        return self.forge_objects.vae.encode(x)

    def decode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        return self.forge_objects.vae.decode(x)


class StableDiffusion(ForgeModel):
    """backend/diffusion_engine/sd15.py ``StableDiffusion``: one CLIP text engine,
    ``text_processing_engine``, whose output is the conditioning."""

    def __init__(self, network: nn.Module, width: int, text_seed: int = 1234):
        from standin_model import FakeTextEncoder, FakeVAE

        encoder = FakeTextEncoder(width, seed=text_seed, honours_clip_skip=width == 768)
        super().__init__(network, encoder, FakeVAE())
        self.text_processing_engine = encoder
        self.is_sd1, self.is_sd2 = width == 768, width == 1024

    def get_learned_conditioning(self, prompts: List[str]) -> Any:
        return self.text_processing_engine(prompts)


class StableDiffusion2(StableDiffusion):
    """backend/diffusion_engine/sd20.py ``StableDiffusion2``: as SD1's, with OpenCLIP's 1024-wide context."""


class StableDiffusionXL(ForgeModel):
    """backend/diffusion_engine/sdxl.py ``StableDiffusionXL``: the conditioning is a dict of the joined
    text context (``crossattn``) and the pooled vector (``vector``); the CLIP-L engine
    (``text_processing_engine_l``) is the one that tokenises like SD1's."""

    is_sdxl = True

    def __init__(self, network: nn.Module, width: int, text_seed: int = 1234):
        from standin_model import FakeTextEncoder, FakeVAE

        encoder = FakeTextEncoder(width, seed=text_seed)
        super().__init__(network, encoder, FakeVAE())
        self.text_processing_engine_l = encoder

    def get_learned_conditioning(self, prompts: List[str]) -> Any:
        from standin_model import _SDXL_VECTOR_WIDTH

        from modules import prompt_parser

        crossattn = self.text_processing_engine_l(prompts)
        pooled = crossattn.mean(dim=1)
        padding = torch.zeros(pooled.shape[0], _SDXL_VECTOR_WIDTH[crossattn.shape[-1]] - pooled.shape[1])
        return prompt_parser.DictWithShape({"crossattn": crossattn, "vector": torch.cat([pooled, padding], dim=1)})


class Flux(ForgeModel):
    """backend/diffusion_engine/flux.py ``Flux``: a transformer denoiser, not a U-Net. Only loading it
    and asking MasaCtrl for it are supported; it does not sample."""

    def __init__(self, network: nn.Module):
        from standin_model import FakeVAE

        super().__init__(network, None, FakeVAE())

    def get_learned_conditioning(self, prompts: List[str]) -> Any:
        return torch.zeros(len(prompts), 256, 4096)  # T5-wide; an API request encodes its prompts before a refusal ends it


def forge_loader(network: nn.Module) -> ForgeModel:
    """backend/loader.py ``forge_loader``: the engine class Forge guesses from the checkpoint."""
    from backend.nn.unet import IntegratedUNet2DConditionModel

    if not isinstance(network, IntegratedUNet2DConditionModel):
        return Flux(network)
    width = _context_width(network)
    engine = {2048: StableDiffusionXL, 1024: StableDiffusion2}.get(width, StableDiffusion)
    return engine(network, width)


# --- modules/sd_models.py ---------------------------------------------------------------------------


def architecture_config(network: nn.Module) -> str:
    """The stand-in checkpoint file's config name: Forge reads no config files, so only the network's
    shapes tell checkpoints apart."""
    shapes = repr([(name, tuple(tensor.shape)) for name, tensor in network.state_dict().items()])
    return f"forge-{type(network).__name__}#{hashlib.sha256(shapes.encode()).hexdigest()[:8]}"


def forge_model_reload() -> Tuple[ForgeModel, bool]:
    """modules/sd_models.py ``forge_model_reload``: nothing when the loading parameters are those of the
    loaded model; otherwise the loaded model is dropped, a new one is built from the checkpoint (a
    fresh engine with fresh ``forge_objects``), made current, and ``on_model_loaded`` fires."""
    from modules import script_callbacks, sd_models

    data = sd_models.model_data
    info = data.forge_loading_parameters["checkpoint_info"]
    if data.sd_model is not None and data.forge_hash == info.title:
        return data.sd_model, False
    data.sd_model = None
    data.loaded_sd_models.clear()
    model = forge_loader(info.standin_file.build_unet())
    model.sd_checkpoint_info, model.filename = info, info.filename
    model.sd_model_checkpoint, model.sd_model_hash = info.filename, info.shorthash
    model.used_config = info.standin_file.config
    data.set_sd_model(model)
    data.was_loaded_at_least_once = True
    script_callbacks.model_loaded_callback(model)
    data.forge_hash = info.title
    return model, True


def _load_checkpoint(info: Any) -> ForgeModel:
    """modules_forge/main_entry.py ``checkpoint_change`` + ``refresh_model_loading_parameters``, then
    the reload: the loading parameters name ``info``."""
    from modules import sd_models

    sd_models.model_data.forge_loading_parameters = {"checkpoint_info": info}
    return forge_model_reload()[0]


def load_model(checkpoint_info: Any = None) -> ForgeModel:
    """The startup load (modules/initialize.py, through ``forge_model_reload``)."""
    from modules import sd_models

    return _load_checkpoint(checkpoint_info or sd_models.select_checkpoint())


def reload_model_weights(sd_model: Any = None, info: Any = None, forced_reload: bool = False) -> ForgeModel:
    """Forge's ``reload_model_weights`` does nothing; the checkpoint setting changes the loading
    parameters, and processing reloads at every batch (``forge_model_reload``). The stand-in's
    callers (the batch start, the checkpoint setting, a hires checkpoint) get that reload. The
    checkpoint setting's change loads at once here, where Forge waits for the next generation."""
    from modules import sd_models

    return _load_checkpoint(info or sd_models.select_checkpoint())


# --- modules/sd_samplers_common.py -----------------------------------------------------------------


def apply_refiner(denoiser: Any, x: torch.Tensor) -> bool:
    """modules/sd_samplers_common.py ``apply_refiner`` in Forge: once ``step / total_steps`` reaches
    the switch point, the pass's patcher is cleaned up, the refiner is loaded as a new model (the
    setting keeps the main checkpoint, which the next batch reloads), the conds are made again, the
    denoiser's wrapper is rebuilt and the new model's patcher, not set up by any script, is prepared."""
    from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare

    from modules import extra_networks, sd_models, sd_samplers_common, shared

    p = denoiser.p
    refiner = sd_samplers_common.refiner_due(p, denoiser.step / denoiser.total_steps)
    if refiner is None:
        return False
    sampling_cleanup(shared.sd_model.forge_objects.unet)
    main = sd_models.model_data.forge_loading_parameters
    _load_checkpoint(refiner)
    sd_models.model_data.forge_loading_parameters = main
    if not p.disable_extra_networks:
        extra_networks.activate(p, p.extra_network_data)
    p.setup_conds()
    denoiser.update_inner_model()
    sampling_prepare(shared.sd_model.forge_objects.unet, x)
    return True


def sampler_conditioning_key(model: Any) -> str:
    """Forge's samplers take every model's conditioning as cross-attention."""
    return "crossattn"


def _prepared_run(original: Callable) -> Callable:
    """modules/sd_samplers_kdiffusion.py ``sample`` / ``sample_img2img`` in Forge: the pass's patcher
    (whatever the scripts left in ``forge_objects``) is prepared before the sampler runs
    (``sampling_prepare``) and the then-current model's is cleaned up after it returns, an interrupted
    run included; an exception skips the cleanup, as in Forge."""

    def run_sampler(self, p, x, *args, **kwargs):
        from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare

        from modules import shared

        sampling_prepare(shared.sd_model.forge_objects.unet, x)
        samples = original(self, p, x, *args, **kwargs)
        sampling_cleanup(shared.sd_model.forge_objects.unet)
        return samples

    return run_sampler


# --- modules/sd_samplers_cfg_denoiser.py -------------------------------------------------------------


def cfg_denoiser_forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
    """modules/sd_samplers_cfg_denoiser.py ``CFGDenoiser.forward`` in Forge: the callbacks see one row
    per image (``x``, ``sigma``, ``image_cond`` as the sampler gave them) and the WebUI's conds; the
    hires pass guides with ``p.hr_cfg``; skip-early-CFG and NGMS set the scale to 1 (which drops the
    uncond); Forge's ``sampling_function`` makes the model calls; ``on_cfg_denoised`` never fires."""
    from backend.sampling.sampling_function import sampling_function

    from modules import prompt_parser, sd_samplers_common, sd_samplers_kdiffusion
    from modules.script_callbacks import AfterCFGCallbackParams, CFGDenoiserParams, cfg_after_cfg_callback, cfg_denoiser_callback
    from modules.shared import state

    if state.interrupted or state.skipped:
        raise sd_samplers_common.InterruptedException
    if not isinstance(self, sd_samplers_kdiffusion.CFGDenoiserKDiffusion):
        raise NotImplementedError("stand-in Forge: the timestep samplers are left out")
    if self.mask is not None:
        raise NotImplementedError("stand-in Forge: inpainting is left out")
    if apply_refiner(self, x):
        cond, uncond = self.sampler.sampler_extra_args["cond"], self.sampler.sampler_extra_args["uncond"]
    composition, text_cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
    text_uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step) if uncond is not None else None

    params = CFGDenoiserParams(x, image_cond, sigma, state.sampling_step, state.sampling_steps, text_cond, text_uncond,
                               self)
    cfg_denoiser_callback(params)

    if getattr(self.p, "is_hr_pass", False):
        cond_scale = self.p.hr_cfg
    if self._skips_uncond(sigma, s_min_uncond):  # the same rule (and notes) as A1111's, as a scale of 1
        cond_scale = 1.0
    denoised, _, uncond_pred = sampling_function(self, params, cond_scale, composition)
    if self.need_last_noise_uncond:
        self.last_noise_uncond = (x - uncond_pred) / sigma[:, None, None, None]
    self.sampler.last_latent = denoised
    sd_samplers_common.store_latent(denoised)
    after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
    cfg_after_cfg_callback(after)
    self.step += 1
    return after.x


# --- modules/processing.py ----------------------------------------------------------------------------


def _hook_with_resets(original: Callable) -> Callable:
    """modules/processing.py in Forge around the script hooks: ``forge_objects`` is reset from
    ``forge_objects_original`` before ``before_process_batch`` and from
    ``forge_objects_after_applying_lora`` before ``process_batch`` and before every sampling pass's
    ``process_before_every_sampling``; the hires pass calls that hook once before its reset too
    (``sample_hr_pass``), so whatever the first call patched is thrown away."""

    def hook(p, name, *args, **kwargs):
        model = p.sd_model
        if name == "before_process_batch":
            model.forge_objects = model.forge_objects_original.shallow_copy()
        elif name == "process_batch":
            model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()
        elif name == "process_before_every_sampling":
            if getattr(p, "is_hr_pass", False):
                original(p, name, *args, **kwargs)
            model.forge_objects = model.forge_objects_after_applying_lora.shallow_copy()
        original(p, name, *args, **kwargs)

    return hook


def image_conditioning(latent: torch.Tensor) -> torch.Tensor:
    """modules/processing.py ``txt2img_image_conditioning`` in Forge for a model that is not an
    inpainting model: a dummy (B, 5, 1, 1)."""
    from modules import shared

    if shared.sd_model.is_inpaint:
        raise NotImplementedError("stand-in Forge: inpainting models are left out")
    return latent.new_zeros(latent.shape[0], 5, 1, 1)


def _hires_conds_at_cfg(original: Callable) -> Callable:
    """modules/processing.py ``calculate_hr_conds`` in Forge: at a hires CFG scale of 1 the pass has no
    uncond (``hr_uc`` is ``None``)."""

    def calculate_hr_conds(self):
        original(self)
        if self.hr_cfg == 1:
            self.hr_uc = None

    return calculate_hr_conds


# --- install / uninstall --------------------------------------------------------------------------------

_saved: List[Tuple[Any, str, Any]] = []
_added_paths: List[str] = []


def _replace(owner: Any, name: str, value: Any) -> None:
    _saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)


_MISSING = object()


def install() -> None:
    """Make the stand-in WebUI behave as Forge (module docstring). Call :func:`uninstall` after."""
    if _saved:
        raise RuntimeError("the Forge flavour is already installed")
    for path in (BACKEND, HERE):
        if path not in sys.path:
            sys.path.insert(0, path)
            _added_paths.append(path)
    importlib.invalidate_caches()

    from modules import processing, sd_models, sd_samplers_cfg_denoiser, sd_samplers_common

    _replace(sd_models, "_architecture_config", architecture_config)
    _replace(sd_models, "load_model", load_model)
    _replace(sd_models, "reload_model_weights", reload_model_weights)
    sd_models.model_data.forge_loading_parameters, sd_models.model_data.forge_hash = {}, None
    _replace(sd_samplers_cfg_denoiser.CFGDenoiser, "forward", cfg_denoiser_forward)
    _replace(sd_samplers_common, "conditioning_key", sampler_conditioning_key)
    _replace(sd_samplers_common.Sampler, "run_sampler", _prepared_run(sd_samplers_common.Sampler.run_sampler))
    _replace(processing, "_hook", _hook_with_resets(processing._hook))
    _replace(processing, "_plain_image_conditioning", image_conditioning)
    txt2img = processing.StableDiffusionProcessingTxt2Img
    _replace(txt2img, "calculate_hr_conds", _hires_conds_at_cfg(txt2img.calculate_hr_conds))
    _replace(txt2img, "hr_cfg", 1.0)


def uninstall() -> None:
    """Undo :func:`install`: every replaced attribute back, the folders it put on ``sys.path`` off it,
    ``modules_forge`` forgotten (``backend`` may stay imported: nothing tells A1111 by it)."""
    from modules import sd_models

    while _saved:
        owner, name, value = _saved.pop()
        if value is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, value)
    for name in ("forge_loading_parameters", "forge_hash"):
        sd_models.model_data.__dict__.pop(name, None)
    while _added_paths:
        path = _added_paths.pop()
        if path in sys.path:
            sys.path.remove(path)
    for name in [name for name in sys.modules if name == "modules_forge" or name.startswith("modules_forge.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
