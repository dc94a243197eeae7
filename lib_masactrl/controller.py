"""Per-generation state: which step and rows are running, and what each attn1 call must do.

The host tells the controller the step and the step's row layout once per denoiser call
(:meth:`MasaCtrlController.begin_step`); the controller never counts attention calls to guess
them. Each U-Net call of that step then takes the next consecutive rows of the layout, which is
how the WebUI slices its CFG stack (all rows, or cond chunks followed by the uncond rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch

from .attention import controlled_self_attention
from .layout import CallPlan, StepLayout
from .settings import MasaCtrlSettings, Schedule

logger = logging.getLogger("masactrl")

# Keyword arguments sgm's attn1 receives; any other value than these defaults changes what the
# context means, so such calls run unchanged.
_NEUTRAL_KWARGS = {"additional_tokens": None, "n_times_crossframe_attn_in_self": 0}


@dataclass
class ControlStats:
    """Counts the host reads after a run to tell a working control from one that never acted
    (for example a U-Net replacement that bypasses the ldm attention modules)."""

    unet_calls: int = 0
    controlled_calls: int = 0
    fallback_rows: int = 0


class MasaCtrlController:
    def __init__(self, settings: MasaCtrlSettings, schedule: Schedule) -> None:
        self.settings = settings
        self.schedule = schedule
        self.stats = ControlStats()
        self.notes: List[str] = []
        self._noted: set = set()
        self._step: int | None = None
        self._layout: StepLayout | None = None
        self._cursor = 0
        self._plan: CallPlan | None = None
        self._kept: Dict[Tuple[int, int], torch.Tensor] = {}

    # --- host side -------------------------------------------------------------------------

    def begin_step(self, step: int | None, layout: StepLayout | None) -> None:
        """Start a denoiser call: ``step`` is the sampler step, ``layout`` the rows it stacks.
        ``None`` for either means the coming U-Net calls run without control. Contexts kept from
        the previous denoiser call are dropped here."""
        self._step = step
        self._layout = layout
        self._cursor = 0
        self._plan = None
        self._kept.clear()

    def close(self) -> None:
        self.begin_step(None, None)

    @property
    def step_is_controlled(self) -> bool:
        return (
            self._step is not None
            and self._layout is not None
            and self._layout.has_targets
            and self.schedule.controls_step(self._step)
        )

    @property
    def current_plan(self) -> CallPlan | None:
        """The rows of the U-Net call now running as the cursor placed them in the step's layout;
        ``None`` outside a call that fits it. Other row-wise patches (ControlNet units) read it."""
        return self._plan

    def note(self, key: str, message: str) -> None:
        """Report a problem once per generation: to the console now, and to the host via
        :attr:`notes` so that it can show it to the user."""
        if key in self._noted:
            return
        self._noted.add(key)
        self.notes.append(message)
        logger.warning("MasaCtrl: %s", message)

    # --- engine side -----------------------------------------------------------------------

    def begin_unet_call(self, rows: int) -> None:
        """Called before every U-Net forward with the number of rows it holds."""
        self.stats.unet_calls += 1
        layout = self._layout
        self._plan = None
        if layout is None:
            return
        start, stop = self._cursor, self._cursor + rows
        self._cursor = stop
        if stop <= len(layout):
            self._plan = layout.plan(start, stop)
        elif self.step_is_controlled:
            self.note(
                "unexpected-call",
                f"a U-Net call with {rows} rows did not fit the {len(layout)} rows of step {self._step}; "
                "that call ran without MasaCtrl",
            )

    def attention(self, layer: int, call: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        """Handle one attn1 call of a patched layer: controlled when the step, the layer and the
        rows call for it, otherwise ``call(*args, **kwargs)`` unchanged."""
        plan = self._plan
        if (
            plan is None
            or not (plan.has_targets or plan.keep)
            or not self.step_is_controlled
            or not self.schedule.controls_layer(layer)
        ):
            return call(*args, **kwargs)
        parsed = self._parse(layer, plan, args, kwargs)
        if parsed is None:
            return call(*args, **kwargs)
        x, context, extra = parsed

        own = x if context is None else context
        for row in plan.keep:
            self._kept[(layer, plan.start + row)] = own[row : row + 1].clone()
        if not plan.has_targets:
            return call(*args, **kwargs)

        kv_rows, kept_rows = self._kv_rows(layer, plan)
        bank = torch.cat([own] + kept_rows) if kept_rows else own
        self.stats.controlled_calls += 1
        return controlled_self_attention(call, x, context, bank, kv_rows, self.settings.mode, extra)

    def _parse(
        self, layer: int, plan: CallPlan, args: tuple, kwargs: dict
    ) -> Tuple[torch.Tensor, torch.Tensor | None, Dict[str, Any]] | None:
        names = ("x", "context", "mask")
        bound = dict(zip(names, args))
        bound.update({name: kwargs[name] for name in names if name in kwargs})
        extra = {key: value for key, value in kwargs.items() if key not in names}
        x, context, mask = bound.get("x"), bound.get("context"), bound.get("mask")
        unusual = ["mask"] * (mask is not None) + ["positional arguments"] * (len(args) > len(names))
        unusual += sorted(key for key, value in extra.items() if key not in _NEUTRAL_KWARGS or _is_set(value))
        if unusual:
            self.note(
                f"arguments-{layer}",
                f"layer {layer} self-attention was called with extra inputs ({', '.join(unusual)}); "
                "it ran without MasaCtrl",
            )
            return None
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            return None
        if x.shape[0] != plan.size or (context is not None and context.shape[0] != plan.size):
            self.note(
                f"rows-{layer}",
                f"layer {layer} self-attention saw {x.shape[0]} rows where the U-Net call had {plan.size} "
                "(another extension reshapes the batch); that layer ran without MasaCtrl",
            )
            return None
        return x, context, extra

    def _kv_rows(self, layer: int, plan: CallPlan) -> Tuple[List[int], List[torch.Tensor]]:
        kv_rows: List[int] = []
        kept_rows: List[torch.Tensor] = []
        kept_position: Dict[int, int] = {}
        for i, source in enumerate(plan.sources):
            if source is None:
                kv_rows.append(i)
            elif plan.is_local(source):
                kv_rows.append(source - plan.start)
            elif source in kept_position:
                kv_rows.append(kept_position[source])
            elif (layer, source) in self._kept:
                kept_position[source] = plan.size + len(kept_rows)
                kept_rows.append(self._kept[(layer, source)])
                kv_rows.append(kept_position[source])
            else:
                kv_rows.append(i)
                self.stats.fallback_rows += 1
                self.note(
                    f"missing-source-{plan.start + i}",
                    f"the source of row {plan.start + i} had not been computed when the row ran at "
                    f"step {self._step}, layer {layer}; it used plain self-attention there",
                )
        return kv_rows, kept_rows


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, torch.Tensor):
        return True
    return bool(value)
