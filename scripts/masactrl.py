"""MasaCtrl in the AUTOMATIC1111 WebUI: the accordion, reading ``p``, the CFG denoiser callback,
infotext, API and xyz axes. Everything else is in ``lib_masactrl``."""

from __future__ import annotations

import logging
from typing import Any, Dict, List

import gradio as gr

from lib_masactrl import LayoutError, Mode, SettingsError, detach_all, stop_on_next_call
from lib_masactrl.fields import AUTO_LAYER, FIELDS, MAX_LAYERS, MAX_STEPS, parse_args
from lib_masactrl.session import GenerationSession, pair_prompts, share_seeds
from modules import prompt_parser, script_callbacks, scripts, shared
from modules.ui_components import InputAccordion

logger = logging.getLogger("masactrl")

SESSION_ATTRIBUTE = "masactrl_session"
OVERRIDES_ATTRIBUTE = "masactrl_overrides"
XYZ_PREFIX = "[MasaCtrl] "


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


def _cleanup_on_close(p: Any, unet: Any) -> None:
    """``p.close()`` runs after every generation, even one that raised (txt2img.py, img2img.py
    and the API run it under ``contextlib.closing``), unlike ``postprocess``: hook it so that no
    patch outlives the generation."""
    original = p.close

    def close() -> None:
        try:
            session = getattr(p, SESSION_ATTRIBUTE, None)
            if session is not None:
                session.close()
            detach_all(unet)
            if shared.sd_model is not None:
                detach_all(_unet(shared.sd_model))
        finally:
            original()

    p.close = close


class MasaCtrlScript(scripts.Script):
    def title(self) -> str:
        return "MasaCtrl"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> List[Any]:
        label = {field.name: field.label for field in FIELDS}
        with InputAccordion(False, label=label["enabled"], elem_id=self.elem_id("enabled")) as enabled:
            source_prompt = gr.Textbox(
                label=label["source_prompt"], lines=2, elem_id=self.elem_id("source_prompt"),
                placeholder="Prompt of the source images (first half of the batch); empty: the main prompt",
            )
            with gr.Row():
                mode = gr.Radio(
                    label=label["mode"], choices=[m.value for m in Mode], value=Mode.MUTUAL.value,
                    elem_id=self.elem_id("mode"),
                )
                hires = gr.Checkbox(label=label["hires"], value=False, elem_id=self.elem_id("hires"))
            with gr.Row():
                start_step = self._slider("start_step", label, 0, MAX_STEPS - 1)
                end_step = self._slider("end_step", label, 1, MAX_STEPS)
            with gr.Row():
                start_layer = self._slider("start_layer", label, AUTO_LAYER, MAX_LAYERS - 1)
                end_layer = self._slider("end_layer", label, 1, MAX_LAYERS)
        components = {
            "enabled": enabled, "source_prompt": source_prompt, "mode": mode, "start_step": start_step,
            "end_step": end_step, "start_layer": start_layer, "end_layer": end_layer, "hires": hires,
        }
        ordered = [components[field.name] for field in FIELDS]
        self.infotext_fields = [(component, field.infotext) for component, field in zip(ordered, FIELDS)]
        self.paste_field_names = [field.infotext for field in FIELDS]
        return ordered

    def _slider(self, name: str, label: Dict[str, str], minimum: int, maximum: int) -> Any:
        default = next(field.default for field in FIELDS if field.name == name)
        return gr.Slider(
            label=label[name], minimum=minimum, maximum=maximum, step=1, value=default, elem_id=self.elem_id(name)
        )

    def process(self, p: Any, *args: Any) -> None:
        unet = _unet(p.sd_model)
        detach_all(unet)
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
        try:
            session = GenerationSession(parsed, p.batch_size, p.steps, unet)
        except (SettingsError, LayoutError) as error:
            self._refuse(p, unet, str(error))
            return

        p.all_prompts = pair_prompts(p.all_prompts, p.batch_size, parsed.source_prompt)
        if getattr(p, "all_hr_prompts", None):
            p.all_hr_prompts = pair_prompts(p.all_hr_prompts, p.batch_size, parsed.source_prompt)
        p.all_seeds = share_seeds(p.all_seeds, p.batch_size)
        p.all_subseeds = share_seeds(p.all_subseeds, p.batch_size)
        p.extra_generation_params.update(parsed.infotext(session.start_layer))
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
        controlled = not getattr(p, "is_hr_pass", False) or session.args.hires
        session.start_pass(_unet(shared.sd_model), controlled)

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


script_callbacks.on_cfg_denoiser(on_cfg_denoiser)
script_callbacks.on_model_loaded(on_model_loaded)
script_callbacks.on_script_unloaded(on_script_unloaded)
script_callbacks.on_before_ui(register_xyz_axes)
