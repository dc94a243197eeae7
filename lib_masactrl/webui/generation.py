"""One WebUI generation with MasaCtrl, hook by hook: ``process`` pairs the batch, each sampling
pass attaches to the U-Net that samples it, each batch publishes its notes, and ``p.close()``
removes whatever is left, whatever happened in between.

Per-generation state lives on ``p`` (a :class:`~lib_masactrl.session.GenerationSession`), never in
module globals, so that X/Y/Z cells (copies of ``p``) and concurrent API requests stay apart.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

from modules import sd_unet, shared

from ..fields import FIELDS, ControlNetScope, parse_args
from ..inversion import InversionInterrupted
from ..layout import LayoutError
from ..patching import detach_all, stop_on_next_call
from ..session import GenerationSession, pair_prompts, share_seeds
from ..settings import SettingsError
from . import controlnet, infotext, inversion, masks, model, sampling, xyz
from .messages import MasaCtrlInputError, record_notes, tell_user

logger = logging.getLogger("masactrl")

SESSION_ATTRIBUTE = "masactrl_session"
CLEANUP_ATTRIBUTE = "masactrl_cleanup_on_close"
NOISE_WATCH_ATTRIBUTE = "masactrl_noise_watch"


def session_of(p: Any) -> GenerationSession | None:
    return getattr(p, SESSION_ATTRIBUTE, None)


def _effective_batch_size(p: Any) -> int:
    """img2img with several init images (up to the batch size) makes one image per init image:
    ``p.init`` shrinks the batch after ``process`` (processing.py), so pair for that size."""
    images = getattr(p, "init_images", None) or ()
    return len(images) if 1 < len(images) <= p.batch_size else p.batch_size


# --- process ------------------------------------------------------------------------------


def start(p: Any, args: Sequence[Any]) -> None:
    """``process``: read the arguments, validate them against the batch and the model, pair the
    batch's prompts and seeds, and keep the session on ``p``. Raising here would be swallowed by
    the WebUI (``ScriptRunner.process`` reports and carries on with plain images), so every
    failure stops the generation through :func:`refuse` instead."""
    unet = model.unet_of(p.sd_model)
    detach_all(unet)
    try:
        _start(p, unet, args)
    except Exception as error:
        logger.exception("MasaCtrl: could not prepare the generation")
        refuse(p, unet, f"could not prepare the generation ({error})")


def _start(p: Any, unet: Any, args: Sequence[Any]) -> None:
    if getattr(p, "txt2img_upscale", False):
        # The gallery's Upscale button re-runs one finished image through hires fix: nothing to pair.
        return
    try:
        parsed = parse_args(args)
        cell = xyz.overrides(p)
        if cell:
            parsed = parse_args({**{f.name: getattr(parsed, f.name) for f in FIELDS}, **cell})
    except SettingsError as error:
        refuse(p, unet, str(error))
        return
    if not parsed.enabled:
        return
    batch_size = _effective_batch_size(p)
    try:
        session = GenerationSession(parsed, batch_size, unet)
    except (SettingsError, LayoutError) as error:
        refuse(p, unet, str(error))
        return

    inverting = inversion.inverts(p, parsed)
    if inverting:
        problem = inversion.problem(p)
        if problem:
            refuse(p, unet, problem)
            return
    source_prompt = parsed.source_prompt
    if source_prompt and getattr(p, "styles", None):
        source_prompt = shared.prompt_styles.apply_styles_to_prompt(source_prompt, p.styles)
    p.all_prompts = pair_prompts(p.all_prompts, batch_size, source_prompt, empty_is_main=not inverting)
    if getattr(p, "all_hr_prompts", None):
        p.all_hr_prompts = pair_prompts(p.all_hr_prompts, batch_size, source_prompt)
    p.all_seeds = share_seeds(p.all_seeds, batch_size)
    p.all_subseeds = share_seeds(p.all_subseeds, batch_size)
    p.extra_generation_params.update(parsed.infotext(session.start_layer, inverted=inverting))
    p.extra_generation_params[infotext.TARGET_PROMPT_KEY] = infotext.target_prompt_of_sources(session.pairing)
    setattr(p, SESSION_ATTRIBUTE, session)
    _cleanup_on_close(p, unet)


def refuse(p: Any, unet: Any, reason: str) -> None:
    """Stop the generation with ``reason``: the U-Net's next call raises it, which the WebUI does
    not swallow, and the user reads it in the error box, the console and a 422 API response."""
    message = f"MasaCtrl: {reason}. Nothing was generated; fix the setting or disable MasaCtrl."
    logger.error(message)
    stop_on_next_call(unet, MasaCtrlInputError(message))
    _cleanup_on_close(p, unet)
    tell_user(p, message)


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
            _stop_watching_noise(p, None)
            session = session_of(p)
            if session is not None:
                session.close()
            detach_all(unet)
            loaded = model.loaded_unet()
            if loaded is not None:
                detach_all(loaded)
            controlnet.release(p)
        finally:
            original()

    p.close = close


# --- each sampling pass ---------------------------------------------------------------------


def before_sampling(p: Any, **kwargs: Any) -> None:
    """``process_before_every_sampling``: attach to the U-Net that samples this pass (the first
    pass, or the hires pass), and for img2img invert the init image."""
    session = session_of(p)
    if session is None:
        return
    unet = model.loaded_unet()
    try:
        _before_sampling(p, session, unet, kwargs)
    except InversionInterrupted as stop:
        logger.info("MasaCtrl: %s", stop)
    except SettingsError as error:
        _abandon(p, session, unet, str(error))
    except inversion.InversionFailed as error:
        logger.exception("MasaCtrl: inverting the init image failed")
        _abandon(p, session, unet, f"inverting the init image failed ({error})")
    except Exception as error:
        # Swallowed by the WebUI, this would leave uncontrolled images: stop instead.
        logger.exception("MasaCtrl: could not prepare the sampling pass")
        _abandon(p, session, unet, f"could not prepare the sampling pass ({error})")


def _abandon(p: Any, session: GenerationSession, unet: Any, reason: str) -> None:
    """Refuse once sampling is under way: the session's patches go, then the stop guard."""
    setattr(p, SESSION_ATTRIBUTE, None)
    session.close()
    refuse(p, unet, reason)


def _before_sampling(p: Any, session: GenerationSession, unet: Any, kwargs: Dict[str, Any]) -> None:
    replacement = sd_unet.current_unet
    if replacement is not None:
        # processing.py applies the selected SD Unet after ``process``, so it is checked here.
        label = getattr(getattr(replacement, "option", None), "label", type(replacement).__name__)
        raise SettingsError(f"the SD Unet replacement '{label}' (Settings > SD Unet) bypasses the attention "
                            "layers MasaCtrl works in; set SD Unet to None for MasaCtrl")
    hires = getattr(p, "is_hr_pass", False)
    controlled = not hires or session.args.hires
    steps = sampling.pass_steps(p, hires)
    network = controlnet.network_of(p)
    assignments = controlnet.own_assignment(p) if session.args.controlnet == ControlNetScope.TARGETS else None
    guide = masks.guide_for(p, session) if controlled else None
    session.start_pass(unet, controlled, steps, sampling.pass_name(p, hires, steps), network, assignments, guide)
    if inversion.inverts(p, session.args) and not hires:
        inversion.install(p, session, kwargs["x"], kwargs["noise"], kwargs["c"], kwargs["uc"], network)
        _watch_noise(p, session)


def _watch_noise(p: Any, session: GenerationSession) -> None:
    """The reconstruction equals the init image only if the sampler adds no noise of its own."""
    setattr(p, NOISE_WATCH_ATTRIBUTE, sampling.NoiseWatch(p))


def _stop_watching_noise(p: Any, session: GenerationSession | None) -> None:
    watch = getattr(p, NOISE_WATCH_ATTRIBUTE, None)
    if watch is None:
        return
    watch.close()
    setattr(p, NOISE_WATCH_ATTRIBUTE, None)
    if session is not None and watch.added_noise:
        session.note(
            f"the {p.sampler_name} sampler added fresh noise while it sampled, so the reconstruction drifts from the "
            "init image; a deterministic sampler such as Euler (with eta and sigma churn at 0) reconstructs it"
        )


# --- after each batch, and at the end -------------------------------------------------------


def after_sampling(p: Any, ps: Any) -> None:
    """``post_sample``: sources that followed their inversion end at the inverted latent."""
    session = session_of(p)
    if session is not None:
        ps.samples = session.finished_latents(ps.samples)


def drop_hidden_sources(p: Any, pp: Any) -> None:
    """``postprocess_batch_list``: with "Show reconstruction" off, drop the sources (the
    reconstructions) from the gallery and the saved files; the per-image lists must shrink with
    them (scripts.py docstring)."""
    session = session_of(p)
    if session is None or not _hides_sources(p, session):
        return
    pp.images[:] = session.pairing.targets_only(pp.images[:len(session.pairing)])
    for name in ("prompts", "negative_prompts", "seeds", "subseeds"):
        setattr(p, name, session.pairing.targets_only(getattr(p, name)))


def _hides_sources(p: Any, session: GenerationSession) -> bool:
    """Whether the sources are reconstructions the user asked not to see."""
    return not session.args.show_reconstruction and inversion.inverts(p, session.args)


def end_batch(p: Any) -> None:
    """``postprocess_batch``: the batch's passes are over; tell what they noted."""
    session = session_of(p)
    _stop_watching_noise(p, session)
    if session is not None:
        session.end_pass()
        _publish(p, session)


def finish(p: Any, processed: Any) -> None:
    """``postprocess``: detach, trim the result's lists, add the mask previews and the notes."""
    session = session_of(p)
    if session is None:
        return
    session.close()
    roles = [session.pairing.is_target(image) for image in range(len(session.pairing))]
    if _hides_sources(p, session):
        roles = [True] * roles.count(True)
        for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
            values = getattr(processed, name, None)
            if values:
                setattr(processed, name, session.pairing.targets_only(values))
    if session.args.show_masks:
        masks.show(p, processed, session)
    xyz.show_batch_in_cell(p, processed, roles)
    for text in _publish(p, session):
        if text not in (processed.comments or ""):
            processed.comments = f"{processed.comments or ''}{text}\n"


def _publish(p: Any, session: GenerationSession) -> List[str]:
    """Tell the user every note not yet told, and keep them all in the infotext; returns all notes
    as shown."""
    texts = [f"MasaCtrl: {note}" for note in session.notes]
    for text in texts:
        if text not in p.comments:
            tell_user(p, text)
    record_notes(p, session.notes)
    return texts


# --- model and extension events -------------------------------------------------------------


def on_model_loaded(loaded: Any) -> None:
    """A reload that keeps the module objects (same config) must not keep old patches."""
    detach_all(model.unet_of(loaded))


def on_script_unloaded() -> None:
    unet = model.loaded_unet()
    if unet is not None:
        detach_all(unet)
