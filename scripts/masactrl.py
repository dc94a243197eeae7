"""MasaCtrl in the AUTOMATIC1111 WebUI: the accordion, reading ``p``, the CFG denoiser callback,
infotext, API and xyz axes. Everything else is in ``lib_masactrl``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import gradio as gr
import numpy as np
import torch
import tqdm
from PIL import Image

from lib_masactrl import (
    Assignment,
    InversionCache,
    InversionInterrupted,
    InversionKey,
    LayerMap,
    LayoutError,
    MaskGuide,
    Mode,
    SettingsError,
    classifier_free,
    default_start_layer,
    detach_all,
    invert_cached,
    mask_guide,
    release_units,
    stop_on_next_call,
    tensor_digest,
)
from lib_masactrl.fields import (
    AUTO_LAYER,
    FIELD_BY_NAME,
    FIELDS,
    MAX_INVERSION_CFG,
    MAX_LAYERS,
    MAX_STEPS,
    ControlNetScope,
    MaskMode,
    ScriptArgs,
    fill_pasted_defaults,
    parse_args,
)
from lib_masactrl.session import GenerationSession, pair_prompts, share_seeds
from modules import images, prompt_parser, script_callbacks, scripts, sd_samplers_common, sd_unet, shared
from modules.ui_components import InputAccordion

logger = logging.getLogger("masactrl")

SESSION_ATTRIBUTE = "masactrl_session"
OVERRIDES_ATTRIBUTE = "masactrl_overrides"
CLEANUP_ATTRIBUTE = "masactrl_cleanup_on_close"
XYZ_PREFIX = "[MasaCtrl] "
# ControlNet's batch option that gives unit i to image i (its scripts/enums.py, BatchOption.SEPARATE)
CONTROLNET_SEPARATE = "Each ControlNet unit for each image in a batch"
CACHE_OPTION = "masactrl_inversion_cache_size"
TARGET_PROMPT_KEY = "MasaCtrl target prompt"
SAVE_MASKS_OPTION = "masactrl_save_masks"
INVERSION_JOB = "MasaCtrl inversion"
DEFAULT_CACHE_SIZE = 4
INVERSION_CACHE = InversionCache(DEFAULT_CACHE_SIZE)


class MasaCtrlInputError(ValueError):
    """A setting or batch MasaCtrl cannot run with. The WebUI API turns an exception's
    ``status_code`` and ``detail`` attributes into the HTTP response (modules/api/api.py,
    ``handle_exception``), so API clients get a 422 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status_code = 422
        self.detail = message


def _unet(model: Any) -> Any:
    return model.model.diffusion_model


def _tell_user(p: Any, message: str) -> None:
    p.comment(message)
    gr.Warning(message)


def _inverts(p: Any, args: ScriptArgs) -> bool:
    return args.enabled and args.invert and hasattr(p, "init_images")


def _inversion_problem(p: Any) -> str | None:
    if not p.init_images or p.init_images[0] is None:
        return "inverting the init image needs an init image; add one or untick 'Invert the init image'"
    if p.denoising_strength <= 0:
        return "denoising strength 0 leaves no step to invert or edit; raise it (1.0 inverts fully)"
    return None


def _is_stochastic(sampler_name: str) -> bool:
    """k-diffusion's ancestral ("Euler a"), SDE, Restart and LCM samplers add fresh noise each step."""
    return sampler_name.endswith(" a") or any(name in sampler_name for name in ("SDE", "Restart", "LCM"))


def _rows(cond: Any, rows: List[int]) -> Any:
    """Rows of a conditioning tensor, or of each tensor of SDXL's dict conditioning."""
    if isinstance(cond, dict):
        return {key: value[rows] for key, value in cond.items()}
    return cond[rows]


def _inversion_denoiser(p: Any, session: GenerationSession, sources: List[int], c: Any, uc: Any) -> Any:
    """The sampler's own model wrapper closed over the sources' conditioning, built the way
    ``CFGDenoiser.forward`` builds it (sd_samplers_cfg_denoiser.py), without the CFG denoiser's
    step counter, callbacks or mask blending, which belong to the sampling that follows."""
    conds_list, cond = prompt_parser.reconstruct_multicond_batch(c, 0)
    cond = _rows(cond, [conds_list[image][0][0] for image in sources])
    image_cond = p.image_conditioning[sources]
    wrap = p.sampler.model_wrap
    adm = shared.sd_model.model.conditioning_key == "crossattn-adm"

    def conditioned(crossattn: Any, image: Any) -> Any:
        if adm:
            return {"c_crossattn": [crossattn], "c_adm": image}
        if isinstance(crossattn, dict):
            return {**crossattn, "c_concat": [image]}
        return {"c_crossattn": [crossattn], "c_concat": [image]}

    def model(crossattn: Any, image: Any) -> Any:
        return session.inversion_call(lambda x, sigma: wrap(x, sigma, cond=conditioned(crossattn, image)))

    denoise_cond = model(cond, image_cond)
    scale = session.args.inversion_cfg
    if scale == 1:
        return denoise_cond
    uncond = _rows(prompt_parser.reconstruct_cond_batch(uc, 0), sources)
    return classifier_free(denoise_cond, model(uncond, torch.zeros_like(image_cond) if adm else image_cond), scale)


def _model_identity(p: Any) -> str:
    """What besides the image and schedule decides the inverted latent: checkpoint, VAE, extra
    networks of the batch (LoRA applies to every row) and the hypernetwork."""
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


@contextlib.contextmanager
def _console_progress(total: int) -> Iterator[Callable[[int, int], None]]:
    """Progress of the inversion in the WebUI's progress bar and the console."""
    bar = tqdm.tqdm(total=total, desc=INVERSION_JOB, disable=shared.opts.data.get("disable_console_progressbars", False))
    shared.state.sampling_steps = total
    shared.state.sampling_step = 0

    def progress(step: int, steps: int) -> None:
        shared.state.sampling_step = step
        bar.update(1)

    try:
        yield progress
    finally:
        bar.close()


def _effective_batch_size(p: Any) -> int:
    """img2img with several init images (up to the batch size) makes one image per init image:
    ``p.init`` shrinks the batch after ``process`` (processing.py), so pair for that size."""
    images = getattr(p, "init_images", None) or ()
    return len(images) if 1 < len(images) <= p.batch_size else p.batch_size


def _target_prompt_of_sources(batch_size: int) -> Callable[..., str | None]:
    """Infotext value for source images: the target (main) prompt. A source image's own prompt
    is the source prompt, so pasting its parameters would otherwise make the source prompt the
    main prompt. ``create_infotext`` calls it with its locals (``all_prompts``, ``index``)."""
    half = batch_size // 2

    def value(all_prompts: Sequence[str] | None = None, index: int = 0, **_: Any) -> str | None:
        if not all_prompts or len(all_prompts) % batch_size or index % batch_size >= half:
            return None
        return all_prompts[index + half]

    return value


def _mask_guide(p: Any, session: GenerationSession) -> MaskGuide | None:
    """The batch's masks: subject words found in each image's prompt with the model's own
    tokenizer, or the uploaded masks. Prompt editing (``[a:b:0.5]``) is read at the start step."""
    args = session.args
    source_mask, target_mask = (_mask_array(mask) for mask in args.user_masks)
    user_masks = {}
    if source_mask is not None:
        for image, source in enumerate(session.image_sources):
            user_masks[image] = source_mask if source is None else target_mask
    prompts = p.hr_prompts if getattr(p, "is_hr_pass", False) else p.prompts
    indexes, flat, _ = prompt_parser.get_multicond_prompt_list(prompts)
    start = session.settings.start_step
    steps = (p.hr_second_pass_steps or p.steps) if getattr(p, "is_hr_pass", False) else p.steps
    subprompts = [[_prompt_at_step(flat[index], start, steps) for index, _ in image] for image in indexes]
    encoder = _text_encoder()
    return mask_guide(
        session.settings, session.image_sources, subprompts,
        (lambda text: [chunk.tokens for chunk in encoder.tokenize_line(text)[0]]) if encoder else None,
        (lambda text: list(encoder.tokenize([text])[0])) if encoder else None,
        user_masks,
    )


def _prompt_at_step(prompt: str, step: int, steps: int) -> str:
    schedule = prompt_parser.get_learned_conditioning_prompt_schedules([prompt], steps)[0]
    return next((text for end, text in schedule if end > step), schedule[-1][1])


def _text_encoder() -> Any:
    """The CLIP text encoder wrapper whose tokenizer fills the context (SDXL: its first embedder;
    both SDXL encoders share the vocabulary and chunking)."""
    model = shared.sd_model
    encoder = getattr(model, "cond_stage_model", None)
    if hasattr(encoder, "tokenize_line"):
        return encoder
    embedders = getattr(getattr(model, "conditioner", None), "embedders", None) or ()
    return next((embedder for embedder in embedders if hasattr(embedder, "tokenize_line")), None)


def _mask_array(value: Any) -> np.ndarray | None:
    """A mask from the UI (an image, or gradio's sketch dict of image and drawn strokes) or the
    API (a base64 PNG, with or without a data URL prefix) as a 2-D array in 0..1."""
    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, dict):
        # gradio's sketch tool: the uploaded picture and the strokes drawn on it; strokes win.
        strokes = _mask_array(value.get("mask"))
        return strokes if strokes is not None and strokes.any() else _mask_array(value.get("image"))
    if isinstance(value, str):
        try:
            value = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[-1])))
        except (ValueError, OSError):
            raise SettingsError("a mask given as text must be a base64-encoded image") from None
    if isinstance(value, Image.Image):
        value = value.convert("L")
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 3:
        array = array.max(axis=-1)
    if array.ndim != 2:
        raise SettingsError(f"a mask must be an image, got an array of shape {array.shape}")
    return array / 255.0 if array.max() > 1 else array


def _targets_only(values: Sequence[Any], session: GenerationSession) -> List[Any]:
    """The entries of per-image values (one batch, or all batches in order) that are targets."""
    size = len(session.image_sources)
    return [value for i, value in enumerate(values) if session.image_sources[i % size] is not None]


def _drop_sources_from_lists(processed: Any, session: GenerationSession) -> None:
    """With the reconstructions hidden, the per-image lists of the result (the API's info) must
    list the shown images only, as the batch lists were shrunk in ``postprocess_batch_list``."""
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        values = getattr(processed, name, None)
        if values:
            setattr(processed, name, _targets_only(values, session))


def _show_masks(p: Any, processed: Any, session: GenerationSession) -> None:
    """Add the masks each pass used to the gallery; saved only if the user asked. Each gets its
    generation's infotext plus a "MasaCtrl mask" entry: the gallery's Save button parses every
    selected image's infotext and needs its Seed (ui_common.py)."""
    base = processed.info
    # Other scripts (ControlNet's detect maps) may have added images without infotexts.
    processed.infotexts.extend([base] * (len(processed.images) - len(processed.infotexts)))
    for used in session.used_masks:
        for image, mask in sorted(used.masks.items()):
            role = "source" if session.image_sources[image] is None else "target"
            label = f"{role} {image + 1}, step {used.step}"
            size = mask.shape[-1] * 4 * 8, mask.shape[-2] * 4 * 8
            picture = Image.fromarray((mask.numpy() * 255).astype(np.uint8), "L").resize(size, Image.NEAREST)
            info = f'{base}, MasaCtrl mask: "{label}"'
            processed.images.append(picture)
            processed.infotexts.append(info)
            if shared.opts.data.get(SAVE_MASKS_OPTION, False):
                images.save_image(picture, p.outpath_samples, "", p.all_seeds[0], label, shared.opts.samples_format,
                                  info=info, p=p, suffix="-masactrl-mask")


def _controlnet_installed() -> bool:
    """Whether the ControlNet extension is loaded, judged from the loaded script files so that
    none of its code is imported."""
    return any(os.path.basename(data.path) == "controlnet.py" for data in scripts.scripts_data)


def _controlnet_script(p: Any) -> Any:
    """The ControlNet extension's script in this generation's runner (found by title, as
    ControlNet's own API does), or ``None``."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", None) or ():
        if script.title().lower() == "controlnet":
            return script
    return None


def _cleanup_on_close(p: Any, unet: Any) -> None:
    """``p.close()`` runs after every generation, even one that raised (txt2img.py, img2img.py
    and the API run it under ``contextlib.closing``), unlike ``postprocess``: hook it so that no
    patch outlives the generation."""
    if getattr(p, CLEANUP_ATTRIBUTE, False):
        return
    setattr(p, CLEANUP_ATTRIBUTE, True)
    original = p.close

    def close() -> None:
        try:
            session = getattr(p, SESSION_ATTRIBUTE, None)
            if session is not None:
                session.close()
            detach_all(unet)
            if shared.sd_model is not None:
                detach_all(_unet(shared.sd_model))
            network = getattr(_controlnet_script(p), "latest_network", None)
            if network is not None:
                release_units(network)
        finally:
            original()

    p.close = close


class MasaCtrlScript(scripts.Script):
    def title(self) -> str:
        return "MasaCtrl"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> List[Any]:
        made: Dict[str, Any] = {}

        def control(kind: Any, name: str, **options: Any) -> Any:
            """One accordion control: label, default and element id come from the field table."""
            field = FIELD_BY_NAME[name]
            options.setdefault("value", field.default)
            made[name] = kind(label=field.label, elem_id=self.elem_id(name), **options)
            return made[name]

        def choice(name: str, values: Any) -> Any:
            return control(gr.Radio, name, choices=[value.value for value in values])

        source_placeholder = (
            "What the init image shows, used to invert and reconstruct it; empty: no prompt (the paper)" if is_img2img
            else "Prompt of the source images (first half of the batch); empty: the main prompt"
        )
        with InputAccordion(False, label=FIELD_BY_NAME["enabled"].label, elem_id=self.elem_id("enabled")) as enabled:
            made["enabled"] = enabled
            control(gr.Textbox, "source_prompt", lines=2, placeholder=source_placeholder)
            with gr.Row():
                choice("mode", Mode)
                control(gr.Checkbox, "hires")
            with gr.Row():
                control(gr.Slider, "start_step", minimum=0, maximum=MAX_STEPS - 1, step=1)
                control(gr.Slider, "end_step", minimum=1, maximum=MAX_STEPS, step=1)
            with gr.Row():
                control(gr.Slider, "start_layer", minimum=AUTO_LAYER, maximum=MAX_LAYERS - 1, step=1)
                control(gr.Slider, "end_layer", minimum=1, maximum=MAX_LAYERS, step=1)
            with gr.Row(visible=_controlnet_installed()):
                controlnet = choice("controlnet", ControlNetScope)
                units = control(gr.Textbox, "controlnet_units", placeholder="source, target", visible=False)
            with gr.Row(visible=is_img2img):
                control(gr.Checkbox, "invert")
                control(gr.Checkbox, "show_reconstruction")
                control(gr.Slider, "inversion_cfg", minimum=1.0, maximum=MAX_INVERSION_CFG, step=0.5)
            with gr.Accordion(label="Masks", open=False):
                with gr.Row():
                    choice("mask_mode", MaskMode)
                    control(gr.Checkbox, "show_masks")
                with gr.Row():
                    control(gr.Textbox, "mask_words", placeholder="corgi")
                    control(gr.Textbox, "mask_target_words", placeholder="empty: the source subject words")
                    control(gr.Slider, "mask_threshold", minimum=0.0, maximum=1.0, step=0.01)
                with gr.Row():
                    control(gr.Image, "source_mask", type="pil", image_mode="L", tool="sketch")
                    control(gr.Image, "target_mask", type="pil", image_mode="L", tool="sketch")
            controlnet.change(
                fn=lambda scope: gr.update(visible=scope == ControlNetScope.PER_UNIT.value),
                inputs=[controlnet], outputs=[units], show_progress=False,
            )
        enabled.change(
            fn=self.layer_ranges, inputs=[], outputs=[made["start_layer"], made["end_layer"]], show_progress=False
        )
        ordered = [made[field.name] for field in FIELDS]
        self.infotext_fields = [(made[field.name], field.infotext) for field in FIELDS if field.infotext]
        self.paste_field_names = [field.infotext for field in FIELDS if field.infotext]
        return ordered

    @staticmethod
    def layer_ranges() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Updates for the layer sliders when MasaCtrl is switched on: the range of the loaded
        model (16 layers on SD1.x/SD2.x, 70 on SDXL) and what "auto" resolves to on it."""
        if shared.sd_model is None:
            return gr.update(), gr.update()
        layer_map = LayerMap.from_unet(_unet(shared.sd_model))
        count = len(layer_map)
        start = gr.update(
            maximum=count - 1,
            info=f"{layer_map.family}: layers 0-{count - 1}; -1 = its default, {default_start_layer(count)}",
        )
        end = gr.update(info=f"{count} or more = through the last layer")
        return start, end

    def process(self, p: Any, *args: Any) -> None:
        unet = _unet(p.sd_model)
        detach_all(unet)
        try:
            self._start(p, unet, args)
        except Exception as error:
            # The WebUI logs an exception raised here and generates plain images: stop instead.
            logger.exception("MasaCtrl: could not prepare the generation")
            self._refuse(p, unet, f"could not prepare the generation ({error})")

    def _start(self, p: Any, unet: Any, args: Sequence[Any]) -> None:
        if getattr(p, "txt2img_upscale", False):
            # The gallery's Upscale button re-runs one finished image through hires fix: nothing to pair.
            return
        overrides: Dict[str, Any] = getattr(p, OVERRIDES_ATTRIBUTE, {})
        try:
            parsed = parse_args(args)
            if overrides:
                parsed = parse_args({**{f.name: getattr(parsed, f.name) for f in FIELDS}, **overrides})
        except SettingsError as error:
            self._refuse(p, unet, str(error))
            return
        if not parsed.enabled:
            return
        batch_size = _effective_batch_size(p)
        try:
            session = GenerationSession(parsed, batch_size, p.steps, unet)
        except (SettingsError, LayoutError) as error:
            self._refuse(p, unet, str(error))
            return

        inverting = _inverts(p, parsed)
        if inverting:
            problem = _inversion_problem(p)
            if problem:
                self._refuse(p, unet, problem)
                return
            if _is_stochastic(p.sampler_name):
                session.note(
                    f"the {p.sampler_name} sampler adds fresh noise at every step, so the reconstruction drifts "
                    "from the init image; Euler (or another deterministic first-order sampler) reconstructs it exactly"
                )
        source_prompt = parsed.source_prompt
        if source_prompt and getattr(p, "styles", None):
            source_prompt = shared.prompt_styles.apply_styles_to_prompt(source_prompt, p.styles)
        p.all_prompts = pair_prompts(p.all_prompts, batch_size, source_prompt, empty_is_main=not inverting)
        if getattr(p, "all_hr_prompts", None):
            p.all_hr_prompts = pair_prompts(p.all_hr_prompts, batch_size, source_prompt)
        p.all_seeds = share_seeds(p.all_seeds, batch_size)
        p.all_subseeds = share_seeds(p.all_subseeds, batch_size)
        p.extra_generation_params.update(parsed.infotext(session.start_layer, inverted=inverting))
        p.extra_generation_params[TARGET_PROMPT_KEY] = _target_prompt_of_sources(batch_size)
        setattr(p, SESSION_ATTRIBUTE, session)
        _cleanup_on_close(p, unet)

    def _refuse(self, p: Any, unet: Any, reason: str) -> None:
        """Stop the generation with ``reason``. Raising here would be swallowed by the WebUI
        (ScriptRunner.process reports and carries on) and the user would get plain images."""
        message = f"MasaCtrl: {reason}. Nothing was generated; fix the setting or disable MasaCtrl."
        logger.error(message)
        stop_on_next_call(unet, MasaCtrlInputError(message))
        _cleanup_on_close(p, unet)
        _tell_user(p, message)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        session: GenerationSession | None = getattr(p, SESSION_ATTRIBUTE, None)
        if session is None:
            return
        unet = _unet(shared.sd_model)
        try:
            self._before_sampling(p, session, unet, kwargs)
        except SettingsError as error:
            self._abandon(p, session, unet, str(error))
        except Exception as error:
            # Swallowed by the WebUI, this would leave uncontrolled images: stop instead.
            logger.exception("MasaCtrl: could not prepare the sampling pass")
            self._abandon(p, session, unet, f"could not prepare the sampling pass ({error})")

    def _abandon(self, p: Any, session: GenerationSession, unet: Any, reason: str) -> None:
        """Refuse once sampling is under way: the session's patches go, then the stop guard."""
        setattr(p, SESSION_ATTRIBUTE, None)
        session.close()
        self._refuse(p, unet, reason)

    def _before_sampling(self, p: Any, session: GenerationSession, unet: Any, kwargs: Dict[str, Any]) -> None:
        replacement = sd_unet.current_unet
        if replacement is not None:
            # processing.py applies the selected SD Unet after ``process``, so it is checked here.
            label = getattr(getattr(replacement, "option", None), "label", type(replacement).__name__)
            raise SettingsError(f"the SD Unet replacement '{label}' (Settings > SD Unet) bypasses the attention "
                                "layers MasaCtrl works in; set SD Unet to None for MasaCtrl")
        controlled = not getattr(p, "is_hr_pass", False) or session.args.hires
        controlnet = _controlnet_script(p)
        network = getattr(controlnet, "latest_network", None)
        assignments = None
        if (
            session.args.controlnet == ControlNetScope.TARGETS
            and CONTROLNET_SEPARATE in (getattr(controlnet, "ui_batch_option_state", None) or ())
        ):
            # The user already gave each image its unit with ControlNet's own batch option.
            assignments = Assignment.BOTH
        masks = _mask_guide(p, session) if controlled else None
        session.start_pass(unet, controlled, network, assignments, masks)
        if _inverts(p, session.args) and not getattr(p, "is_hr_pass", False):
            self._install_inversion(p, session, unet, kwargs["x"], kwargs["noise"], kwargs["c"], kwargs["uc"], network)

    def _install_inversion(
        self, p: Any, session: GenerationSession, unet: Any, x: Any, noise: Any, c: Any, uc: Any, network: Any
    ) -> None:
        """Invert the sources' init latents along the sampler's own schedule and make every row
        start from its source's inverted latent, by writing ``noise`` in place: the sampler starts
        from ``x + noise * sigma_sched[0]`` (sd_samplers_kdiffusion.py, ``sample_img2img``)."""
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
        denoise = _inversion_denoiser(p, session, sources, c, uc)
        key = InversionKey.create(
            x0, sigma_sched, sigma_min, model=_model_identity(p), prompt=p.prompts[sources[0]],
            negative_prompt=p.negative_prompts[sources[0]], cfg_scale=session.args.inversion_cfg,
            content=_init_digest(p), extra={"sources": str(len(sources))},
        )
        INVERSION_CACHE.max_entries = int(shared.opts.data.get(CACHE_OPTION, DEFAULT_CACHE_SIZE))
        # ControlNet units shape the inversion through hints the key does not hold: no caching then.
        cache = InversionCache(0) if getattr(network, "control_params", None) else INVERSION_CACHE
        job = shared.state.job
        shared.state.job = INVERSION_JOB
        try:
            with _console_progress(len(sigma_sched) - 1) as progress:
                inverted = invert_cached(
                    cache, key, x0, denoise, progress=progress,
                    interrupted=lambda: shared.state.interrupted or shared.state.skipped,
                )
        except InversionInterrupted as stop:
            logger.info("MasaCtrl: %s", stop)
            return
        except Exception as error:
            # The WebUI would log this and sample from plain noise: stop instead.
            logger.exception("MasaCtrl: inverting the init image failed")
            self._abandon(p, session, unet, f"inverting the init image failed ({error})")
            return
        finally:
            shared.state.job = job
        start = inverted.latent.to(device=noise.device, dtype=noise.dtype)
        for row, source in enumerate(session.image_sources):
            image = row if source is None else source
            inverted_row = sources.index(image) if image in sources else 0
            noise[row] = (start[inverted_row] - x[row]) / sigma_sched[0]
        if shared.opts.data.get("img2img_extra_noise", 0) > 0:
            session.note("the img2img 'Extra noise' setting adds noise to the inverted latent, so the reconstruction "
                         "drifts from the init image; set it to 0 for MasaCtrl editing")

    def postprocess_batch_list(self, p: Any, pp: Any, *args: Any, **kwargs: Any) -> None:
        """With "Show reconstruction" off, drop the sources (the reconstructions) from the gallery
        and the saved files; the per-image lists must shrink with them (scripts.py docstring)."""
        session: GenerationSession | None = getattr(p, SESSION_ATTRIBUTE, None)
        if session is None or session.args.show_reconstruction or not _inverts(p, session.args):
            return
        pp.images[:] = _targets_only(pp.images[:len(session.image_sources)], session)
        for name in ("prompts", "negative_prompts", "seeds", "subseeds"):
            setattr(p, name, _targets_only(getattr(p, name), session))

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        session: GenerationSession | None = getattr(p, SESSION_ATTRIBUTE, None)
        if session is not None:
            session.end_pass()
            self._publish(p, session)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        session: GenerationSession | None = getattr(p, SESSION_ATTRIBUTE, None)
        if session is None:
            return
        session.close()
        if not session.args.show_reconstruction and _inverts(p, session.args):
            _drop_sources_from_lists(processed, session)
        if session.args.show_masks:
            _show_masks(p, processed, session)
        for text in self._publish(p, session):
            if text not in (processed.comments or ""):
                processed.comments = f"{processed.comments or ''}{text}\n"

    @staticmethod
    def _publish(p: Any, session: GenerationSession) -> List[str]:
        """Tell the user every note not yet told; returns all notes as shown."""
        texts = [f"MasaCtrl: {note}" for note in session.notes]
        for text in texts:
            if text not in p.comments:
                _tell_user(p, text)
        return texts


def _cond_repeats(p: Any, rows: int) -> List[int] | None:
    """Cond rows per image: one each, or one per AND sub-prompt (prompt_parser's multicond)."""
    images = p.batch_size
    if rows == 2 * images:
        return None
    prompts = p.hr_prompts if getattr(p, "is_hr_pass", False) else p.prompts
    indexes, _, _ = prompt_parser.get_multicond_prompt_list(prompts)
    return [len(index) for index in indexes]


def on_cfg_denoiser(params: Any) -> None:
    denoiser = params.denoiser
    p = getattr(denoiser, "p", None)
    session: GenerationSession | None = getattr(p, SESSION_ATTRIBUTE, None)
    if session is None:
        return
    rows = params.x.shape[0]
    session.denoiser_call(
        unet=_unet(shared.sd_model),
        call_index=denoiser.step,
        calls_planned=denoiser.total_steps,
        steps=denoiser.steps,
        rows=rows,
        cond_repeats=_cond_repeats(p, rows),
    )


def on_model_loaded(model: Any) -> None:
    """A reload that keeps the module objects (same config) must not keep old patches."""
    detach_all(_unet(model))


def on_script_unloaded() -> None:
    if shared.sd_model is not None:
        detach_all(_unet(shared.sd_model))


def register_xyz_axes() -> None:
    """Axes for the built-in X/Y/Z plot; they override the accordion's values for each cell."""
    xyz = next(
        (data.module for data in scripts.scripts_data if data.script_class.__module__ in ("xyz_grid.py", "xy_grid.py")),
        None,
    )
    if xyz is None or any(option.label.startswith(XYZ_PREFIX) for option in xyz.axis_options):
        return

    def override(name: str):
        def apply(p: Any, value: Any, _xs: Any) -> None:
            overrides = dict(getattr(p, OVERRIDES_ATTRIBUTE, {}))
            overrides[name] = value
            setattr(p, OVERRIDES_ATTRIBUTE, overrides)
        return apply

    xyz.axis_options.extend([
        xyz.AxisOption(f"{XYZ_PREFIX}Start step", int, override("start_step")),
        xyz.AxisOption(f"{XYZ_PREFIX}Start layer", int, override("start_layer")),
        xyz.AxisOption(f"{XYZ_PREFIX}Mode", str, override("mode"), choices=lambda: [m.value for m in Mode]),
    ])


def on_ui_settings() -> None:
    section = ("masactrl", "MasaCtrl")
    shared.opts.add_option(CACHE_OPTION, shared.OptionInfo(
        DEFAULT_CACHE_SIZE, "Inverted init images kept in memory for reuse (0: none)", gr.Slider,
        {"minimum": 0, "maximum": 32, "step": 1}, section=section,
    ))
    shared.opts.add_option(SAVE_MASKS_OPTION, shared.OptionInfo(
        False, "Save the mask previews ('Show masks') with the images", section=section,
    ))


def on_infotext_pasted(infotext: str, params: Dict[str, Any]) -> None:
    if TARGET_PROMPT_KEY in params:
        params["Prompt"] = params.pop(TARGET_PROMPT_KEY)
    fill_pasted_defaults(params)


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_infotext_pasted(on_infotext_pasted)
script_callbacks.on_model_loaded(on_model_loaded)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_before_ui(register_xyz_axes)
