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

from ..fields import FIELDS, Animation, ControlNetScope, parse_args
from ..inversion import InversionInterrupted
from ..layout import LayoutError
from ..patching import detach_all, stop_on_next_call
from ..session import GenerationSession, pair_prompts
from ..settings import SettingsError
from . import animation, controlnet, infotext, inversion, masks, model, sampling, xyz
from .messages import MasaCtrlInputError, record_notes, tell_user

logger = logging.getLogger("masactrl")

SESSION_ATTRIBUTE = "masactrl_session"
CLEANUP_ATTRIBUTE = "masactrl_cleanup_on_close"
NOISE_WATCH_ATTRIBUTE = "masactrl_noise_watch"
MAPS_ATTRIBUTE = "masactrl_control_maps"


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
    try:
        _pair(p, session, inverting)
        if parsed.uses_control_maps:
            _load_maps(p, session, batch_size)
    except SettingsError as error:
        refuse(p, unet, str(error))
        return
    setattr(p, SESSION_ATTRIBUTE, session)
    _cleanup_on_close(p, unet)


def _pair(p: Any, session: GenerationSession, inverting: bool) -> None:
    """Give every image its prompt and seed as the pairing says, and write the infotext."""
    pairing, args = session.pairing, session.args
    styles = getattr(p, "styles", None)

    def styled(prompt: str) -> str:
        return shared.prompt_styles.apply_styles_to_prompt(prompt, styles) if prompt and styles else prompt

    main_prompts = list(p.all_prompts)
    source_prompt = styled(args.source_prompt)
    if pairing.repeats_sources and not source_prompt and not inverting:
        source_prompt = main_prompts[0]  # every batch's source is the first batch's
    lines = [styled(line) for line in args.target_prompt_lines]
    hr_prompts = getattr(p, "all_hr_prompts", None)
    p.all_prompts = pair_prompts(main_prompts, pairing, source_prompt, lines, empty_is_main=not inverting)
    if hr_prompts:
        p.all_hr_prompts = pair_prompts(hr_prompts, pairing, source_prompt, lines if hr_prompts == main_prompts else ())
    p.all_seeds = pairing.seeds(p.all_seeds)
    p.all_subseeds = pairing.seeds(p.all_subseeds)
    # With target prompts the targets' own prompts are theirs, not the main prompt: the sources'
    # prompt is recorded as it was used, so that pasting a target's parameters remakes the set.
    used_source_prompt = p.all_prompts[pairing.sources[0]] if lines else None
    p.extra_generation_params.update(args.infotext(session.start_layer, inverted=inverting, source_prompt=used_source_prompt))
    p.extra_generation_params[infotext.TARGET_PROMPT_KEY] = infotext.main_prompt_of_sources(pairing, main_prompts)


def _load_maps(p: Any, session: GenerationSession, batch_size: int) -> None:
    """Read and check the control maps once for the generation."""
    if controlnet.script_of(p) is None:
        raise SettingsError("control maps need the ControlNet extension, which is not installed")
    maps = controlnet.load_maps(session.args)
    note = controlnet.check_map_count(maps, session.pairing, p.n_iter * batch_size)
    if note:
        session.note(note)
    setattr(p, MAPS_ATTRIBUTE, maps)


def refuse(p: Any, unet: Any, reason: str) -> None:
    """Stop the generation with ``reason``: the U-Net's next call raises it, which the WebUI does
    not swallow, and the user reads it in the error box, the console and a 422 API response."""
    named = reason if reason.startswith("MasaCtrl") else f"MasaCtrl: {reason}"
    message = f"{named}. Nothing was generated; fix the setting or disable MasaCtrl."
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
    loaded = getattr(p, MAPS_ATTRIBUTE, None)
    maps = controlnet.unit_maps(p, session.pairing, session.args, loaded) if loaded else None
    session.start_pass(unet, controlled, steps, sampling.pass_name(p, hires, steps), network, assignments, guide, maps)
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
    """``postprocess_batch_list``: drop the sources the user does not see from the gallery and the
    saved files: the reconstructions with "Show reconstruction" off, and a one-source layout's
    repeated source after the first batch unless "Show the source of every batch" is on. The
    per-image lists must shrink with them (scripts.py docstring)."""
    session = session_of(p)
    if session is None:
        return
    shown = _shown(p, session, getattr(p, "iteration", 0))
    if len(shown) == len(session.pairing):
        return
    pp.images[:] = [pp.images[image] for image in shown]
    for name in ("prompts", "negative_prompts", "seeds", "subseeds"):
        values = getattr(p, name)
        setattr(p, name, [values[image] for image in shown])


def _shown(p: Any, session: GenerationSession, batch: int) -> List[int]:
    """The images of batch ``batch`` a result shows."""
    pairing = session.pairing
    hidden_reconstructions = not session.args.show_reconstruction and inversion.inverts(p, session.args)
    return [image for image in pairing.shown(batch, session.args.show_every_source)
            if pairing.is_target(image) or not hidden_reconstructions]


def end_batch(p: Any) -> None:
    """``postprocess_batch``: the batch's passes are over; tell what they noted."""
    session = session_of(p)
    _stop_watching_noise(p, session)
    if session is not None:
        session.end_pass()
        _publish(p, session)


def finish(p: Any, processed: Any) -> None:
    """``postprocess``: detach, trim the result's lists, add the mask previews, the animation and
    the notes."""
    session = session_of(p)
    if session is None:
        return
    session.close()
    shown = [_shown(p, session, batch) for batch in range(p.n_iter)]
    _trim_lists(processed, session, shown)
    roles = [session.pairing.is_target(image) for images in shown for image in images]
    first = processed.index_of_first_image
    generated = list(zip(processed.images[first:], processed.infotexts[first:], roles))
    if session.args.show_masks:
        masks.show(p, processed, session)
    if session.pairing.repeats_sources and session.args.animation != Animation.NONE and roles.count(True) > 1:
        frames = [(image, info) for image, info, is_target in generated if is_target]
        animation.add(p, processed, [image for image, _ in frames], Animation.parse(session.args.animation),
                      session.args.fps, frames[0][1])
    xyz.show_batch_in_cell(p, processed, [session.pairing.is_target(image) for image in shown[0]])
    for text in _publish(p, session):
        if text not in (processed.comments or ""):
            processed.comments = f"{processed.comments or ''}{text}\n"


def _trim_lists(processed: Any, session: GenerationSession, shown: List[List[int]]) -> None:
    """The result's per-image lists (the API's info) list the shown images only, as the batch
    lists were shrunk in :func:`drop_hidden_sources`."""
    size = len(session.pairing)
    if all(len(images) == size for images in shown):
        return
    for name in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        values = getattr(processed, name, None)
        if values:
            setattr(processed, name, [value for i, value in enumerate(values)
                                      if i % size in shown[min(i // size, len(shown) - 1)]])


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
