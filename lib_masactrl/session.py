"""One generation with MasaCtrl, from the host's point of view: pairing the batch, attaching to
whichever U-Net samples each pass, turning each denoiser call into a step and a layout, and
collecting what the user must be told. Hosts feed it plain values; it knows nothing of ``p``."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence

import torch
from torch import nn

from .anchoring import SourceAnchor
from .controlnet_rows import UnitMaps, UnitRestriction, maps_unit_missing, restrict_units
from .fields import ScriptArgs
from .inversion import Trajectory
from .layers import LayerMap
from .layout import LayoutError, StepLayout
from .masks import MaskGuide, UsedMasks
from .pairing import Pairing
from .patching import Attachment, attach, detach_all
from .settings import MasaCtrlSettings, SettingsError
from .steps import PassSteps

Attacher = Callable[[nn.Module, MasaCtrlSettings, MaskGuide | None], Attachment]
"""How a host installs MasaCtrl on the U-Net of a pass: the ldm/sgm module patches by default
(:func:`~lib_masactrl.patching.attach`); a host that patches through its own model options (WebUI
Forge) gives an object with the same ``controller``, ``unet``, ``intact`` and ``detach()``."""


def attach_modules(unet: nn.Module, settings: MasaCtrlSettings, masks: MaskGuide | None) -> Attachment:
    return attach(unet, settings, total_steps=None, masks=masks)

logger = logging.getLogger("masactrl")


def pair_prompts(
    prompts: Sequence[str], pairing: Pairing, source_prompt: str, target_prompts: Sequence[str] = (),
    empty_is_main: bool = True,
) -> List[str]:
    """Source slots of every batch get the source prompt and target slots their target prompt (see
    :meth:`Pairing.prompts`). An empty source prompt means the main prompt, except for a real
    image's inversion, where it means no prompt (the paper's default)."""
    keep = not source_prompt and empty_is_main
    return pairing.prompts(prompts, None if keep else source_prompt, target_prompts)


class GenerationSession:
    """Per-generation state. Construction validates everything that can be known before
    sampling and raises :class:`SettingsError` or :class:`LayoutError` with the user's message."""

    def __init__(self, args: ScriptArgs, batch_size: int, unet: nn.Module) -> None:
        self.args = args
        self.settings = args.settings()
        self.pairing = Pairing.of(args.layout, batch_size)
        layer_map = LayerMap.from_unet(unet)
        self.layer_count = len(layer_map)
        self.schedule = self.settings.schedule(len(layer_map), None, layer_map.family)
        self.pass_settings = self.settings
        """The settings of the pass being sampled, with an automatic start step resolved for it."""
        self.notes: List[str] = []
        self.steps: PassSteps | None = None
        """The noise levels of the pass being sampled, one per step."""
        self.anchor: SourceAnchor | None = None
        """The trajectory the sources follow in this pass (real-image editing), if any."""
        self.attachment: Attachment | None = None
        self.restriction: UnitRestriction | None = None
        self.masks: MaskGuide | None = None
        self.used_masks: List[UsedMasks] = []
        """The masks each pass's last masked step used, for the previews."""
        self.pass_controlled = False
        self.steps_controlled = 0
        """Steps of the current pass that should have been controlled."""
        self.attacher: Attacher = attach_modules
        self.inverting = False
        """Whether the model calls now running invert the init image, outside the pass's steps."""

    @property
    def source_images(self) -> List[int]:
        """The images of a batch that no other image reads from: the sources."""
        return self.pairing.sources

    def inversion_call(self, call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
        """Wrap one model call of the inversion of the sources' init latents: no attention is
        controlled there, and every row counts as a source, so ControlNet units assigned to the
        targets stay out of the inversion."""

        def run(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            if self.attachment is not None:
                layout = StepLayout.cfg((None,) * x.shape[0], uncond=False)
                self.attachment.controller.begin_step(None, layout)
            self.inverting = True
            try:
                return call(x, sigma)
            finally:
                self.inverting = False

        return run

    @property
    def start_layer(self) -> int:
        return min(self.schedule.layers)

    def start_step_for(self, steps: int) -> int:
        """The first controlled step of a pass of ``steps`` steps."""
        return self.settings.for_steps(steps).start_step

    # --- passes -----------------------------------------------------------------------------

    def start_pass(
        self,
        unet: nn.Module,
        controlled: bool,
        steps: PassSteps,
        pass_name: str = "this generation",
        controlnet: Any = None,
        assignments: Any = None,
        masks: MaskGuide | None = None,
        maps: UnitMaps | None = None,
        attacher: Attacher | None = None,
        rows_needed: bool = False,
    ) -> None:
        """Before a sampling pass: attach to the U-Net that will sample it. ``steps`` are the noise
        levels the pass samples, which is how each model call finds its step; ``pass_name`` names the
        pass in notes. A pass without control (hires fix left unticked) still needs the row layout
        when ControlNet units are narrowed to sources or targets, so it attaches without controlling
        any step; otherwise nothing stays attached. ``controlnet`` is the ControlNet extension's
        hooked network, if any, and ``assignments`` overrides the user's unit assignment (see
        :func:`restrict_units`, whose :class:`SettingsError` this raises with nothing left attached);
        ``masks`` are the batch's masks (see :func:`~lib_masactrl.masks.mask_guide`) and ``maps`` the
        control maps one unit gives the targets. ``attacher`` installs MasaCtrl on this pass's U-Net
        (default: by patching its modules), and ``rows_needed`` keeps it attached to an uncontrolled
        pass for a host that needs the row layout for reasons of its own."""
        self.end_pass()
        detach_all(unet)
        self.attacher = attacher or attach_modules
        self.steps = steps
        self.pass_settings = self.settings.for_steps(len(steps))
        self.pass_controlled = controlled
        self.masks = masks
        if controlled and self.pass_settings.start_step >= len(steps):
            self.note(
                f"start step {self.pass_settings.start_step} is past the last step ({len(steps) - 1}) of {pass_name}: "
                "the batch is paired but MasaCtrl does not act on it"
            )
        units = bool(getattr(controlnet, "control_params", None))
        if maps is not None and not units:
            raise maps_unit_missing(maps.unit, 0)
        if (controlled or units or rows_needed) and self._attach(unet) and units:
            wanted = assignments if assignments is not None else self.args.controlnet_assignments()
            try:
                self.restriction = restrict_units(controlnet, self.attachment.controller, wanted, maps)
            except SettingsError:
                self.end_pass()
                raise

    def _attach(self, unet: nn.Module) -> bool:
        try:
            self.attachment = self.attacher(unet, self.pass_settings, self.masks)
        except SettingsError as error:
            self.note(f"this pass's model does not fit the settings ({error}); it ran without MasaCtrl")
            return False
        self.steps_controlled = 0
        return True

    def follow_trajectory(self, trajectory: Trajectory, rows: Dict[int, int]) -> None:
        """For the rest of this pass, the source images follow ``trajectory`` (see
        :mod:`lib_masactrl.anchoring`); ``rows`` gives each source image's row in it."""
        self.anchor = SourceAnchor(trajectory, dict(rows))

    def denoiser_call(
        self, unet: nn.Module, level: float, x: torch.Tensor, cond_repeats: Sequence[int] | None
    ) -> torch.Tensor:
        """Before each denoiser call: hand the engine the call's step, found from the noise level
        ``level`` it is made at (see :mod:`lib_masactrl.steps`), and its row layout. Returns the
        stacked model input ``x``, with the sources on their trajectory when they follow one."""
        attachment = self.attachment
        if attachment is None or self.steps is None:
            return x
        rows = x.shape[0]
        self._follow_model(unet)
        attachment = self.attachment
        if attachment is None:
            return x
        step = self.steps.step_at(level)
        try:
            layout = self._checked(StepLayout.cfg(self.pairing.reads_from, cond_repeats), rows, "the denoiser stacked")
        except LayoutError as error:
            self.note(f"{error}; this step ran without MasaCtrl")
            layout = None
        if not self._begin_step(attachment, step, layout):
            return x
        if self.anchor is None:
            return x
        if layout is None:
            self.note("the sources could not follow their inversion in some steps (unknown row layout)")
            return x
        return self.anchor.inputs(x, level, layout)

    def _checked(self, layout: StepLayout, rows: int, what: str) -> StepLayout | None:
        if len(layout) == rows:
            return layout
        self.note(f"{what} {rows} rows where MasaCtrl expected {len(layout)}; those steps ran without MasaCtrl")
        return None

    def _begin_step(self, attachment: Attachment, step: int, layout: StepLayout | None) -> bool:
        """Hand the controller its step and layout; whether the step is one of a controlled pass."""
        if not self.pass_controlled:
            attachment.controller.begin_step(None, layout)
            return False
        if layout is not None and attachment.controller.schedule.controls_step(step):
            self.steps_controlled += 1
        attachment.controller.begin_step(step, layout)
        return True

    def chunked_call(self, level: float, groups: Sequence[str], rows: int, latent_size: Sequence[int] | None) -> None:
        """Before each U-Net call of a host that stacks a call's rows in chunks of the whole batch
        (WebUI Forge, see :meth:`StepLayout.chunks`): the call's step, from its noise level
        ``level``, its chunks' groups, its row count and its latent's height and width. Such a host
        tells each U-Net call apart, so the step and layout are per call, not per denoiser call. The
        inversion's calls (see :meth:`inversion_call`) belong to no step and are left uncontrolled."""
        attachment = self.attachment
        if attachment is None or self.steps is None or self.inverting:
            return
        try:
            layout = self._checked(StepLayout.chunks(self.pairing.reads_from, groups), rows, "a U-Net call held")
        except LayoutError as error:
            self.note(f"{error}; this step ran without MasaCtrl")
            layout = None
        self._begin_step(attachment, self.steps.step_at(level), layout)
        attachment.controller.begin_unet_call(rows, tuple(latent_size) if latent_size is not None else None)

    def images_call(self, unet: nn.Module | None, level: float, x: torch.Tensor) -> torch.Tensor:
        """Before each denoiser call of a host whose denoiser callback sees one row per image (WebUI
        Forge; its U-Net calls report their steps and rows themselves, see :meth:`chunked_call`):
        follow a refiner to ``unet``, the U-Net that samples now, and return ``x`` at noise
        ``level`` with the sources on their trajectory when they follow one."""
        self._follow_model(unet)
        if self.anchor is None or self.steps is None:
            return x
        if x.shape[0] != len(self.pairing):
            self.note(f"the denoiser held {x.shape[0]} images where MasaCtrl expected {len(self.pairing)}; "
                      "the sources could not follow their inversion in those steps")
            return x
        return self.anchor.images(x, level)

    def _follow_model(self, unet: nn.Module | None) -> None:
        """A refiner loads a new model, or reloads weights into this one and the model-loaded
        callback removed the patches: either way, attach to what samples now."""
        attachment = self.attachment
        if attachment is None or unet is None or (attachment.unet is unet and attachment.intact):
            return
        self.note("the model changed during sampling (refiner); MasaCtrl follows the new model")
        self.end_pass(keep_steps=True)
        self._attach(unet)

    def finished_latents(self, samples: torch.Tensor) -> torch.Tensor:
        """A pass's sampled latents (one row per image of the batch), with the sources at their
        inverted latent when they followed a trajectory."""
        return samples if self.anchor is None else self.anchor.outputs(samples)

    def end_pass(self, keep_steps: bool = False) -> None:
        """After a pass (or on any exit): detach, and say so if control never acted although it
        should have (an ``sd_unet`` replacement bypasses the attention modules, for example).
        ``keep_steps`` keeps the pass's levels, for a pass that goes on with another model."""
        if not keep_steps:
            self.steps = None
            self.anchor = None
        if self.restriction is not None:
            self.restriction.release()
            self.restriction = None
        attachment = self.attachment
        if attachment is None:
            return
        self.attachment = None
        stats = attachment.controller.stats
        if attachment.controller.used_masks is not None:
            self.used_masks.append(attachment.controller.used_masks)
        for message in attachment.controller.notes:
            self.note(message)
        attachment.detach()
        if self.steps_controlled and stats.controlled_calls == 0:
            self.note(
                "the U-Net's attention never ran through MasaCtrl although steps were controlled: "
                "a U-Net replacement (such as TensorRT) bypasses it, so the images are NOT controlled"
            )

    def close(self) -> None:
        self.end_pass()

    def note(self, message: str) -> None:
        """Keep ``message`` for the user, once, and write it to the console."""
        if message in self.notes:
            return
        self.notes.append(message)
        logger.warning("MasaCtrl: %s", message)
