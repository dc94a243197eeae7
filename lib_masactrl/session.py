"""One generation with MasaCtrl, from the host's point of view: pairing the batch, attaching to
whichever U-Net samples each pass, turning each denoiser call into a step and a layout, and
collecting what the user must be told. Hosts feed it plain values; it knows nothing of ``p``."""

from __future__ import annotations

import logging
from typing import List, Sequence

from torch import nn

from .fields import ScriptArgs
from .layers import LayerMap
from .layout import LayoutError, StepLayout, pair_halves
from .patching import Attachment, attach, detach_all
from .settings import SettingsError

logger = logging.getLogger("masactrl")


def pair_prompts(prompts: Sequence[str], batch_size: int, source_prompt: str) -> List[str]:
    """Source slots of every batch get the source prompt (their own if it is empty)."""
    half = batch_size // 2
    return [source_prompt if source_prompt and i % batch_size < half else prompt for i, prompt in enumerate(prompts)]


def share_seeds(seeds: Sequence[int], batch_size: int) -> List[int]:
    """Each target takes its source's seed, so that both start from the same noise."""
    half = batch_size // 2
    return [seeds[i - half] if i % batch_size >= half else seed for i, seed in enumerate(seeds)]


def sampler_step(call_index: int, calls_planned: int, steps: int) -> int:
    """The sampler step of a denoiser call. Second-order samplers plan two calls per step (and
    make one on the last), so the step is the call index divided by the calls per step."""
    calls_per_step = max(1, calls_planned // max(steps, 1))
    return min(call_index // calls_per_step, max(steps - 1, 0))


class GenerationSession:
    """Per-generation state. Construction validates everything that can be known before
    sampling and raises :class:`SettingsError` or :class:`LayoutError` with the user's message."""

    def __init__(self, args: ScriptArgs, batch_size: int, steps: int, unet: nn.Module) -> None:
        self.args = args
        self.settings = args.settings()
        self.image_sources = pair_halves(batch_size)
        self.batch_size = batch_size
        layer_map = LayerMap.from_unet(unet)
        self.schedule = self.settings.schedule(len(layer_map), None, layer_map.family)
        self.notes: List[str] = []
        if self.settings.start_step >= steps:
            self.note(
                f"start step {self.settings.start_step} is past the last step ({steps - 1}): the batch is paired "
                "but MasaCtrl does not act on this generation"
            )
        self.attachment: Attachment | None = None
        self.steps_controlled = 0
        """Steps of the current pass that should have been controlled."""

    @property
    def start_layer(self) -> int:
        return min(self.schedule.layers)

    # --- passes -----------------------------------------------------------------------------

    def start_pass(self, unet: nn.Module, controlled: bool) -> None:
        """Before a sampling pass: attach to the U-Net that will sample it, or make sure nothing
        is attached when this pass runs without control (hires fix left unticked)."""
        self.end_pass()
        detach_all(unet)
        if controlled:
            self._attach(unet)

    def _attach(self, unet: nn.Module) -> bool:
        try:
            self.attachment = attach(unet, self.settings, total_steps=None)
        except SettingsError as error:
            self.note(f"this pass's model does not fit the settings ({error}); it ran without MasaCtrl")
            return False
        self.steps_controlled = 0
        return True

    def denoiser_call(
        self,
        unet: nn.Module,
        call_index: int,
        calls_planned: int,
        steps: int,
        rows: int,
        cond_repeats: Sequence[int] | None,
    ) -> None:
        """Before each denoiser call: hand the engine its step and row layout."""
        attachment = self.attachment
        if attachment is None:
            return
        if attachment.unet is not unet:
            self.note("the model changed during sampling (refiner); MasaCtrl follows the new model")
            self.end_pass()
            if not self._attach(unet):
                return
            attachment = self.attachment
        step = sampler_step(call_index, calls_planned, steps)
        try:
            layout = StepLayout.cfg(self.image_sources, cond_repeats)
        except LayoutError as error:
            self.note(f"{error}; this step ran without MasaCtrl")
            layout = None
        if layout is not None and len(layout) != rows:
            self.note(
                f"the denoiser stacked {rows} rows where MasaCtrl expected {len(layout)}; "
                "those steps ran without MasaCtrl"
            )
            layout = None
        if layout is not None and attachment.controller.schedule.controls_step(step):
            self.steps_controlled += 1
        attachment.controller.begin_step(step, layout)

    def end_pass(self) -> None:
        """After a pass (or on any exit): detach, and say so if control never acted although it
        should have (an ``sd_unet`` replacement bypasses the attention modules, for example)."""
        attachment = self.attachment
        if attachment is None:
            return
        self.attachment = None
        stats = attachment.controller.stats
        for message in attachment.controller.notes:
            self.note(message, log=False)
        attachment.detach()
        if self.steps_controlled and stats.controlled_calls == 0:
            self.note(
                "the U-Net's attention never ran through MasaCtrl although steps were controlled: "
                "a U-Net replacement (such as TensorRT) bypasses it, so the images are NOT controlled"
            )

    def close(self) -> None:
        self.end_pass()

    def note(self, message: str, log: bool = True) -> None:
        if message in self.notes:
            return
        self.notes.append(message)
        if log:
            logger.warning("MasaCtrl: %s", message)
