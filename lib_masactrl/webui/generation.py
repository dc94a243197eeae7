"""One WebUI generation with MasaCtrl, hook by hook: ``process`` pairs the batch, each sampling
pass attaches to the U-Net that samples it, each batch publishes its notes, and the generation's
state is closed at its end, whatever happened in between.

Everything MasaCtrl keeps for a generation lives in one :class:`GenerationState` on ``p``, made
anew by every ``process_images`` call (scripts such as Loopback, SD upscale and the img2img Batch
tab run several on one ``p``) and closed by ``postprocess``, by ``p.close()`` after an exception,
or by the next ``process`` on the same ``p``, whichever comes first. X/Y/Z cells (copies of ``p``)
and concurrent API requests therefore never share one, and nothing outlives its generation.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence

from modules import sd_unet, shared

from ..fields import FIELDS, Animation, ControlNetScope, parse_args
from ..forge import sampling as forge_sampling
from ..inversion import InversionInterrupted
from ..layout import LayoutError
from ..patching import detach_all, stop_on_next_call
from ..session import GenerationSession, pair_prompts
from ..settings import SettingsError
from . import animation, compat, controlnet, infotext, inversion, masks, model, sampling, xyz
from .messages import MasaCtrlInputError, is_api, record_notes, refusal, stop_in_the_ui, tell_user

logger = logging.getLogger("masactrl")

STATE_ATTRIBUTE = "masactrl"
CLOSE_HOOK_MARKER = "__masactrl_close__"


class GenerationState:
    """What MasaCtrl holds for one ``process_images`` call, and its one cleanup."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.unet: Any = None
        """The U-Net the generation started with (the refiner may sample with another)."""
        self.session: GenerationSession | None = None
        """Set when MasaCtrl controls this generation."""
        self.refusal: str | None = None
        """The message of a refused generation: nothing it makes may reach the user."""
        self.noise_watch: sampling.NoiseWatch | None = None
        self.maps: Any = None
        """The control maps, read once for the generation."""
        self.sampler: Any = None
        """A sampler made to refuse: its own ``launch_sampling`` is given back at the close."""
        self.closed = False

    def refuse(self, reason: str) -> None:
        """Stop the generation with ``reason`` and show it once: in the UI as the comment and a toast
        (the generation is stopped as Interrupt stops it, so the WebUI neither prints a traceback
        nor shows an error box, and :func:`drop_hidden_sources` keeps whatever was sampled out of
        the gallery and the saved files); through the API as a 422 carrying the message, raised
        where the WebUI does not swallow it: by ``p.sample`` before sampling starts, else by the
        U-Net's next call. The console gets one line either way."""
        message = refusal(reason)
        self.refusal = message
        if self.session is not None:
            self.session.close()
            self.session = None
        if is_api(self.p):
            error = MasaCtrlInputError(message)
            self.p.sample = _raiser(error)
            # Refused while a pass is being prepared: the sampler exists and has not started, so it
            # stops before its progress bar does; the U-Net's guard stops anything else.
            sampler = getattr(self.p, "sampler", None)
            if sampler is not None:
                sampler.launch_sampling = _raiser(error)
                self.sampler = sampler
            if self.unet is not None:
                stop_on_next_call(self.unet, error)
            return
        stop_in_the_ui(self.p, message)

    def close(self) -> None:
        """Remove everything this generation installed. Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        try:
            watch, self.noise_watch = self.noise_watch, None
            if watch is not None:
                watch.close()
            if self.session is not None:
                self.session.close()
            for unet in {id(u): u for u in (self.unet, model.loaded_unet()) if u is not None}.values():
                detach_all(unet)
            controlnet.release(self.p)
        finally:
            vars(self.p).pop("sample", None)
            if self.sampler is not None:
                vars(self.sampler).pop("launch_sampling", None)


def _raiser(error: Exception) -> Any:
    def sample(*args: Any, **kwargs: Any) -> Any:
        raise error

    return sample


def _briefly(error: BaseException, limit: int = 160) -> str:
    """An unexpected error for the user's message: its kind and the start of its first line (the
    console has the whole of it, with the traceback)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(text) > limit:
        text = f"{text[:limit].rstrip()}..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def state_of(p: Any) -> GenerationState | None:
    state = getattr(p, STATE_ATTRIBUTE, None)
    return state if isinstance(state, GenerationState) and not state.closed else None


def session_of(p: Any) -> GenerationSession | None:
    state = state_of(p)
    return state.session if state is not None else None


def _effective_batch_size(p: Any) -> int:
    """img2img with several init images (up to the batch size) makes one image per init image:
    ``p.init`` shrinks the batch after ``process`` (processing.py), so pair for that size."""
    images = getattr(p, "init_images", None) or ()
    return len(images) if 1 < len(images) <= p.batch_size else p.batch_size


def _own_infotext(p: Any) -> None:
    """Give ``p`` an ``extra_generation_params`` of its own without MasaCtrl's keys: X/Y/Z cells are
    copies of one ``p`` that share that dict, and each image's infotext must hold exactly the
    settings it was made with, not an earlier cell's."""
    p.extra_generation_params = {
        key: value for key, value in p.extra_generation_params.items() if not key.startswith(infotext.PREFIX)
    }


def _close_on_exit(p: Any) -> None:
    """``p.close()`` runs after every generation, even one that raised (txt2img.py, img2img.py and
    the API run it under ``contextlib.closing``), unlike ``postprocess``: it closes whatever state
    is left on ``p``."""
    if getattr(vars(p).get("close"), CLOSE_HOOK_MARKER, False):
        return
    original = p.close

    def close() -> None:
        try:
            state = state_of(p)
            if state is not None:
                state.close()
        finally:
            original()

    setattr(close, CLOSE_HOOK_MARKER, True)
    p.close = close


# --- process ------------------------------------------------------------------------------


def start(p: Any, args: Sequence[Any]) -> None:
    """``process``: read the arguments, validate them against the batch and the model, pair the
    batch's prompts and seeds, and keep the state on ``p``. Raising here would be swallowed by the
    WebUI (``ScriptRunner.process`` reports and carries on with plain images), so every failure
    stops the generation through :meth:`GenerationState.refuse` instead."""
    previous = state_of(p)
    if previous is not None:
        previous.close()
    problem = compat.host_problem()
    if problem and not _asked_for(args):
        return  # a WebUI MasaCtrl cannot drive, and nothing asked for it: touch nothing
    _own_infotext(p)
    state = GenerationState(p)
    setattr(p, STATE_ATTRIBUTE, state)
    _close_on_exit(p)
    if problem:
        state.refuse(problem)
        return
    try:
        _start(p, state, args)
    except Exception as error:
        logger.exception("MasaCtrl: could not prepare the generation")
        state.refuse(f"could not prepare the generation ({_briefly(error)}; the console has the details)")


def _asked_for(args: Sequence[Any]) -> bool:
    """Whether the arguments switch MasaCtrl on (unreadable ones count as asking)."""
    try:
        return parse_args(args).enabled
    except SettingsError:
        return True


def _start(p: Any, state: GenerationState, args: Sequence[Any]) -> None:
    loaded = model.unet_or_none(getattr(p, "sd_model", None))
    if loaded is not None:
        detach_all(loaded)  # anything a crashed earlier generation left
    if getattr(p, "txt2img_upscale", False):
        # The gallery's Upscale button re-runs one finished image through hires fix: nothing to pair.
        return
    cell = xyz.overrides(p)
    try:
        parsed = parse_args(args)
        if cell and parsed.enabled:
            parsed = parse_args({**{f.name: getattr(parsed, f.name) for f in FIELDS}, **cell})
    except SettingsError as error:
        state.refuse(str(error))
        return
    if not parsed.enabled:
        if cell:
            xyz.note_ignored(p, cell)
        return
    if loaded is None:
        state.refuse(model.unsupported(getattr(p, "sd_model", None)))
        return
    state.unet = loaded
    batch_size = _effective_batch_size(p)
    try:
        session = GenerationSession(parsed, batch_size, loaded)
    except (SettingsError, LayoutError) as error:
        state.refuse(str(error))
        return

    inverting = inversion.inverts(p, parsed)
    problem = inversion.problem(p) if inverting else None
    if problem:
        state.refuse(problem)
        return
    try:
        _pair(p, session, inverting)
        if parsed.uses_control_maps:
            state.maps = _load_maps(p, session, batch_size)
    except SettingsError as error:
        state.refuse(str(error))
        return
    state.session = session


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
    # prompt is recorded as it was used, so that pasting a target's parameters remakes the set,
    # and no image records the main prompt, which none of them used.
    used_source_prompt = p.all_prompts[pairing.sources[0]] if lines else None
    p.extra_generation_params.update(
        args.infotext(session.start_layer, session.layer_count, inverted=inverting, source_prompt=used_source_prompt)
    )
    if not lines:
        p.extra_generation_params[infotext.TARGET_PROMPT_KEY] = infotext.main_prompt_of_sources(pairing, main_prompts)


def _load_maps(p: Any, session: GenerationSession, batch_size: int) -> Any:
    """Read and check the control maps once for the generation."""
    maps = controlnet.load_maps(session.args, from_api=is_api(p))
    if controlnet.script_of(p) is None:
        raise SettingsError("control maps need the ControlNet extension, which is not installed")
    note = controlnet.check_map_count(maps, session.pairing, p.n_iter * batch_size)
    if note:
        session.note(note)
    return maps


# --- each sampling pass ---------------------------------------------------------------------


def before_sampling(p: Any, **kwargs: Any) -> None:
    """``process_before_every_sampling``: attach to the U-Net that samples this pass (the first
    pass, or the hires pass), and for img2img invert the init image."""
    state = state_of(p)
    if state is None or state.session is None:
        return
    session = state.session
    unet = model.loaded_unet()
    try:
        _before_sampling(p, state, session, unet, kwargs)
    except InversionInterrupted as stop:
        logger.info("MasaCtrl: %s", stop)
    except SettingsError as error:
        state.refuse(str(error))
    except inversion.InversionFailed as error:
        logger.exception("MasaCtrl: inverting the init image failed")
        state.refuse(f"inverting the init image failed ({error})")
    except Exception as error:
        # Swallowed by the WebUI, this would leave uncontrolled images: stop instead.
        logger.exception("MasaCtrl: could not prepare the sampling pass")
        state.refuse(f"could not prepare the sampling pass ({_briefly(error)}; the console has the details)")


def _before_sampling(p: Any, state: GenerationState, session: GenerationSession, unet: Any,
                     kwargs: Dict[str, Any]) -> None:
    replacement = sd_unet.current_unet
    if replacement is not None:
        # processing.py applies the selected SD Unet after ``process``, so it is checked here.
        label = getattr(getattr(replacement, "option", None), "label", type(replacement).__name__)
        raise SettingsError(f"the SD Unet replacement '{label}' (Settings > SD Unet) bypasses the attention "
                            "layers MasaCtrl works in; set SD Unet to None for MasaCtrl")
    hires = getattr(p, "is_hr_pass", False)
    controlled = not hires or session.args.hires
    steps = sampling.pass_steps(p, hires)
    guide = masks.guide_for(p, session, len(steps)) if controlled else None
    if compat.is_forge():
        steps = forge_sampling.levels_of(p, steps)
        attacher, rows_needed = forge_sampling.pass_attacher(p, session, controlnet.enabled_unit_count(p), state.maps)
        session.start_pass(unet, controlled, steps, sampling.pass_name(p, hires, steps), masks=guide,
                           attacher=attacher, rows_needed=rows_needed)
        units = forge_sampling.has_control(p)
    else:
        network = controlnet.network_of(p)
        assignments = controlnet.own_assignment(p) if session.args.controlnet == ControlNetScope.TARGETS else None
        maps = controlnet.unit_maps(p, session.pairing, session.args, state.maps) if state.maps else None
        session.start_pass(unet, controlled, steps, sampling.pass_name(p, hires, steps), network, assignments, guide,
                           maps)
        units = bool(getattr(network, "control_params", None))
    if inversion.inverts(p, session.args) and not hires:
        inversion.install(p, session, kwargs["x"], kwargs["noise"], kwargs["c"], kwargs["uc"], units)
        state.noise_watch = sampling.NoiseWatch(p)


def _stop_watching_noise(p: Any, state: GenerationState) -> None:
    """The reconstruction equals the init image only if the sampler adds no noise of its own."""
    watch, state.noise_watch = state.noise_watch, None
    if watch is None:
        return
    watch.close()
    if state.session is not None and watch.added_noise:
        state.session.note(
            f"the {p.sampler_name} sampler added fresh noise while it sampled, so the reconstruction drifts from the "
            "init image; a deterministic sampler such as Euler (with eta and sigma churn at 0) reconstructs it"
        )


# --- after each batch, and at the end -------------------------------------------------------


def after_sampling(p: Any, ps: Any) -> None:
    """``post_sample``: sources that followed their inversion end at the inverted latent."""
    session = session_of(p)
    if session is not None:
        ps.samples = session.finished_latents(ps.samples)


_PER_IMAGE_LISTS = ("prompts", "negative_prompts", "seeds", "subseeds")


def drop_hidden_sources(p: Any, pp: Any) -> None:
    """``postprocess_batch_list``: drop the images the user does not see from the gallery and the
    saved files: all of a refused generation's (whatever the sampler made before it stopped), the
    reconstructions with "Show reconstruction" off, and a one-source layout's repeated source after
    the first batch unless "Show the source of every batch" is on. The per-image lists must shrink
    with them (scripts.py docstring)."""
    state = state_of(p)
    if state is None:
        return
    if state.refusal is not None:
        shown: List[int] = []
    elif state.session is not None:
        shown = _shown(p, state.session, getattr(p, "iteration", 0))
        if len(shown) == len(state.session.pairing):
            return
    else:
        return
    pp.images[:] = [pp.images[image] for image in shown]
    for name in _PER_IMAGE_LISTS:
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
    state = state_of(p)
    if state is None:
        return
    _stop_watching_noise(p, state)
    if state.session is not None:
        state.session.end_pass()
        _publish(p, state.session)


def finish(p: Any, processed: Any) -> None:
    """``postprocess``: detach, trim the result's lists, add the mask previews, the animation and
    the notes; then close the generation's state."""
    state = state_of(p)
    if state is None:
        return
    try:
        if state.session is not None:
            _finish(p, processed, state.session)
        infotext.drop_unlisted_values(processed)
    finally:
        state.close()


def _finish(p: Any, processed: Any, session: GenerationSession) -> None:
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
    unet = model.unet_or_none(loaded)
    if unet is not None:
        detach_all(unet)


def on_script_unloaded() -> None:
    unet = model.loaded_unet()
    if unet is not None:
        detach_all(unet)
