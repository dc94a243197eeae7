"""Real-image editing in img2img: the init image's latent is inverted along the sampler's own
schedule, through the sampler's own model wrapper, and every row starts from its source's
inverted latent."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from typing import Any, Callable, ContextManager, Iterator, List, Tuple

import numpy as np
import torch
import tqdm

from modules import prompt_parser, sd_samplers_common, shared

from ..fields import ScriptArgs
from ..forge import inversion as forge_inversion
from ..inversion import InversionInterrupted, classifier_free
from ..inversion_cache import InversionCache, InversionKey, invert_cached, tensor_digest
from ..session import GenerationSession
from ..settings import SettingsError
from . import compat, options

logger = logging.getLogger("masactrl")

JOB = "MasaCtrl inversion"
CACHE = InversionCache(options.DEFAULT_CACHE_SIZE)
"""Inversions kept between generations; it outlives *Reload UI*, as this module does."""


class InversionFailed(Exception):
    """The inversion raised; the generation must stop rather than sample from plain noise."""


def inverts(p: Any, args: ScriptArgs) -> bool:
    return args.enabled and args.invert and hasattr(p, "init_images")


def problem(p: Any) -> str | None:
    """Why this img2img generation cannot be inverted, or ``None``."""
    if not p.init_images or p.init_images[0] is None:
        return "inverting the init image needs an init image; add one or untick 'Invert the init image'"
    if p.denoising_strength <= 0:
        return "denoising strength 0 leaves no step to invert or edit; raise it (1.0 inverts fully)"
    return None


def _rows(cond: Any, rows: List[int]) -> Any:
    """Rows of a conditioning tensor, or of each tensor of SDXL's dict conditioning."""
    if isinstance(cond, dict):
        return {key: value[rows] for key, value in cond.items()}
    return cond[rows]


def _denoiser(p: Any, session: GenerationSession, sources: List[int], c: Any, uc: Any) -> Tuple[Any, List[Any]]:
    """The sources' denoiser, with guidance at the inversion's scale, and the conditioning its calls
    receive (for the cache key): the sources' first prompt (multicond's first sub-prompt at step 0)
    and, with guidance, their negative prompt."""
    conds_list, cond = prompt_parser.reconstruct_multicond_batch(c, 0)
    cond = _rows(cond, [conds_list[image][0][0] for image in sources])
    image_cond = p.image_conditioning[sources]
    consumed = [cond, image_cond]
    model = _forge_model(p, session) if compat.is_forge() else _webui_model(p, session)
    denoise_cond = model(cond, image_cond)
    scale = session.args.inversion_cfg
    if scale == 1:
        return denoise_cond, consumed
    uncond = _rows(prompt_parser.reconstruct_cond_batch(uc, 0), sources)
    image_uncond = torch.zeros_like(image_cond) if _adm_conditioned() else image_cond
    return classifier_free(denoise_cond, model(uncond, image_uncond), scale), [*consumed, uncond, image_uncond]


ModelCall = Callable[[Any, Any], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
"""The host's model, conditioned: text conditioning and image conditioning in, a denoiser out."""


def _adm_conditioned() -> bool:
    """Whether the model takes its image conditioning as ``c_adm`` (A1111's unCLIP models), whose
    unconditional side is zeros."""
    inner = getattr(shared.sd_model, "model", None)
    return getattr(inner, "conditioning_key", None) == "crossattn-adm"


def _webui_model(p: Any, session: GenerationSession) -> ModelCall:
    """A1111: the sampler's own model wrapper closed over the conditioning, built the way
    ``CFGDenoiser.forward`` builds it (sd_samplers_cfg_denoiser.py), without the CFG denoiser's
    step counter, callbacks or mask blending, which belong to the sampling that follows."""
    wrap = p.sampler.model_wrap
    adm = _adm_conditioned()

    def conditioned(crossattn: Any, image: Any) -> Any:
        if adm:
            return {"c_crossattn": [crossattn], "c_adm": image}
        if isinstance(crossattn, dict):
            return {**crossattn, "c_concat": [image]}
        return {"c_crossattn": [crossattn], "c_concat": [image]}

    def model(crossattn: Any, image: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return session.inversion_call(lambda x, sigma: wrap(x, sigma, cond=conditioned(crossattn, image)))

    return model


def _forge_model(p: Any, session: GenerationSession) -> ModelCall:
    """Forge: the pass's U-Net patcher, MasaCtrl's clone included (see
    :func:`lib_masactrl.forge.inversion.denoiser`)."""
    patcher = p.sd_model.forge_objects.unet

    def model(crossattn: Any, image: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return session.inversion_call(forge_inversion.denoiser(patcher, crossattn, image))

    return model


def _model_identity(p: Any) -> str:
    """What besides the image, the schedule and the conditioning tensors decides the inverted
    latent: the checkpoint and VAE, and what changes the U-Net's weights or attention without
    showing in the conditioning: the extra networks of the batch (LoRA applies to every row) and
    the hypernetwork."""
    model = shared.sd_model
    info = getattr(model, "sd_checkpoint_info", None)
    networks = sorted(
        (name, [repr(getattr(item, "items", item)) for item in items])
        for name, items in (getattr(p, "extra_network_data", None) or {}).items()
    )
    parts = [
        getattr(info, "filename", "") or type(model).__name__, getattr(model, "sd_model_hash", "") or "",
        str(shared.opts.data.get("sd_vae", "")), str(shared.opts.data.get("sd_vae_encode_method", "")),
        str(shared.opts.data.get("sd_hypernetwork", "")), repr(networks),
    ]
    return "\n".join(parts)


def _probe(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, sigmas: torch.Tensor) -> str:
    """The digest of the denoiser's answer to fixed seeded noise shaped like the latent, at a level of
    the schedule: one model call through everything that will compute the inversion, so that any
    change to the model (Token Merging, fp8 weights, another extension's U-Net patch such as FreeU,
    LoRA, a VAE) keys a new inversion, whether or not anything names it."""
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    level = torch.as_tensor(sigmas[len(sigmas) // 2], dtype=torch.float32).to(x0.device)
    with torch.no_grad():
        answer = denoise((noise * level).to(device=x0.device, dtype=x0.dtype), level.expand(x0.shape[0]).to(x0.dtype))
    return tensor_digest(answer)


def _seeds_in_latent(p: Any, sources: List[int]) -> str:
    """The seeds, when they are part of the init latent: the "latent noise" fill of img2img's
    inpainting puts seeded noise under the mask (processing.py, img2img ``init``)."""
    if getattr(p, "image_mask", None) is None or getattr(p, "inpainting_fill", None) != 2:
        return ""
    return ",".join(str(p.all_seeds[image]) for image in sources)


def _init_digest(p: Any) -> str:
    """The init images and everything img2img does to them before encoding. Not the init latent:
    the VAE samples its posterior with the global RNG, so the latent differs from run to run."""
    digest = hashlib.sha256()
    for image in [*p.init_images, getattr(p, "image_mask", None)]:
        if image is not None:
            digest.update(tensor_digest(torch.from_numpy(np.array(image))).encode())
    for name in ("width", "height", "resize_mode", "inpainting_fill", "mask_blur", "inpaint_full_res",
                 "inpaint_full_res_padding", "inpainting_mask_invert", "batch_size"):
        digest.update(f"{name}={getattr(p, name, None)!r};".encode())
    return digest.hexdigest()


def _model_ready(p: Any, x0: torch.Tensor) -> ContextManager[None]:
    """The host's preparation of the model for sampling, which in Forge comes after this hook and
    must come before the inversion's model calls (:func:`lib_masactrl.forge.inversion.sampling_ready`)."""
    if compat.is_forge():
        return forge_inversion.sampling_ready(p.sd_model.forge_objects.unet, x0)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _console_progress(total: int) -> Iterator[Callable[[int, int], None]]:
    """Progress of the inversion in the WebUI's progress bar and the console. The console's bar
    starts with the first inversion step, so that an inversion taken from the cache leaves none."""
    bars: List[Any] = []
    shared.state.sampling_steps = total
    shared.state.sampling_step = 0

    def progress(step: int, steps: int) -> None:
        shared.state.sampling_step = step
        if not bars:
            bars.append(tqdm.tqdm(total=total, desc=JOB,
                                  disable=shared.opts.data.get("disable_console_progressbars", False)))
        bars[0].update(1)

    try:
        yield progress
    finally:
        for bar in bars:
            bar.close()


def install(p: Any, session: GenerationSession, x: Any, noise: Any, c: Any, uc: Any, units: bool) -> None:
    """Invert the sources' init latents along the sampler's own schedule and make every row
    start from its source's inverted latent, by writing ``noise`` in place: the sampler starts
    from ``x + noise * sigma_sched[0]`` (sd_samplers_kdiffusion.py, ``sample_img2img``).

    With "Source follows the inversion" on, the sources then follow the inversion's trajectory
    (:mod:`lib_masactrl.anchoring`).

    Raises :class:`~lib_masactrl.inversion.InversionInterrupted` when the user stops it,
    :class:`SettingsError` for a sampler without a sigma schedule and :class:`InversionFailed`
    when the inversion itself raised."""
    sampler = p.sampler
    if not hasattr(sampler, "get_sigmas"):
        raise SettingsError(f"inverting the init image needs a k-diffusion sampler such as Euler, not {p.sampler_name}")
    steps, t_enc = sd_samplers_common.setup_img2img_steps(p)
    sigma_sched = sampler.get_sigmas(p, steps)[steps - t_enc - 1:]
    sigma_min = float(sampler.model_wrap.sigmas[0])
    # One init image repeated over the batch (the img2img Batch tab repeats the same object):
    # invert it once for every pair.
    single = len({id(image) for image in p.init_images}) == 1
    sources = session.source_images[:1] if single else session.source_images
    x0 = x[sources]
    denoise, conditioning = _denoiser(p, session, sources, c, uc)
    reads = options.inversion_reads()
    p.extra_generation_params[options.READS_INFOTEXT] = reads.value
    CACHE.max_entries = options.cache_size()
    # ControlNet units (``units``) shape the inversion through hints the key does not hold: no caching then.
    cache = InversionCache(0) if units else CACHE
    job = shared.state.job
    shared.state.job = JOB
    try:
        with _model_ready(p, x0), _console_progress(len(sigma_sched) - 1) as progress:
            # The probe costs a model call, which only a cache that can hit pays back.
            probe = _probe(denoise, x0, sigma_sched) if cache.max_entries else ""
            key = InversionKey.create(
                x0, sigma_sched, sigma_min, model=f"{_model_identity(p)}\n{probe}", conditioning=conditioning,
                reads=reads, cfg_scale=session.args.inversion_cfg, content=_init_digest(p),
                extra={"sources": str(len(sources)), "seeds": _seeds_in_latent(p, sources)},
            )
            inverted = invert_cached(
                cache, key, x0, denoise, progress=progress,
                interrupted=lambda: shared.state.interrupted or shared.state.skipped,
            )
    except InversionInterrupted:
        raise
    except Exception as error:
        raise InversionFailed(str(error)) from error
    finally:
        shared.state.job = job
    trajectory = inverted.trajectory
    start = trajectory.start.to(device=noise.device, dtype=noise.dtype)
    rows = {}
    for row, source in enumerate(session.pairing.reads_from):
        image = row if source is None else source
        rows[image] = sources.index(image) if image in sources else 0
        noise[row] = (start[rows[image]] - x[row]) / sigma_sched[0]
    if session.args.follow_inversion:
        session.follow_trajectory(trajectory, {image: rows[image] for image in session.source_images})
    if shared.opts.data.get("img2img_extra_noise", 0) > 0:
        session.note("the img2img 'Extra noise' setting adds noise to the inverted latent, so the reconstruction "
                     "drifts from the init image; set it to 0 for MasaCtrl editing")
