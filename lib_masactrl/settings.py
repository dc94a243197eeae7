"""Validated MasaCtrl settings and the step/layer schedule they resolve to.

Conventions, used everywhere in the extension:

- Steps are the sampler's denoising steps counted from 0. ``start_step`` is inclusive and
  ``end_step`` exclusive, so ``start_step=4, end_step=None`` on 50 steps controls steps 4..49,
  exactly as the official code's ``range(start_step, total_steps)``. ``start_step=None`` is the
  same share of whatever steps a pass samples (:func:`default_start_step`: 4 of 50, 2 of 25, 0 of
  6), which a host resolves per pass with :meth:`MasaCtrlSettings.for_steps`.
- Layers are the U-Net's transformer blocks counted from 0 in execution order (16 on SD1.x/SD2.x,
  70 on SDXL). ``start_layer`` is inclusive and ``end_layer`` exclusive. ``start_layer=None``
  picks the model's default (10 of 16 as in the paper, 44 of 70 as in the official SDXL example:
  the same 5/8 of the depth). An explicit ``layers`` tuple replaces the range.
- End values past the last step or layer mean "to the last", so one UI default serves every
  model and step count; start values out of range are errors, since nothing would be controlled.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Tuple

DEFAULT_START_STEP = 4
DEFAULT_MASK_THRESHOLD = 0.1
START_STEP_SHARE = DEFAULT_START_STEP / 50
"""The paper starts control at step 4 of 50."""


def default_start_step(steps: int) -> int:
    """The first controlled step when the user leaves it to the step count: the paper's share of
    the steps, rounded to the nearest step, so that short schedules (LCM, Turbo, Lightning at 4-8
    steps) are controlled from their first or second step rather than not at all."""
    return int(steps * START_STEP_SHARE + 0.5)


def default_start_layer(layer_count: int) -> int:
    """The first controlled layer when the user leaves it to the model: 5/8 of the depth, which
    is the paper's 10 of 16 on SD1.x/SD2.x and the official example's 44 of 70 on SDXL."""
    return min(layer_count - 1, round(layer_count * 10 / 16))


class SettingsError(ValueError):
    """A setting the user gave cannot be used; the message names the value and what is allowed."""


class Choice(str, enum.Enum):
    """A setting with a fixed set of values, read from UI, API or infotext text."""

    @classmethod
    def noun(cls) -> str:
        """How error messages name the setting."""
        raise NotImplementedError

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise SettingsError(f"{cls.noun()} {value!r} is not known: use one of {allowed}") from None


class Mode(Choice):
    """Which keys and values a target's queries attend over in controlled layers."""

    MUTUAL = "mutual"
    """Only the source's keys and values (the paper's mutual self-attention)."""

    UNION = "union"
    """The source's keys and values followed by the target's own."""

    @classmethod
    def noun(cls) -> str:
        return "mode"


def _check_int(name: str, value: object, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    if value < 0:
        raise SettingsError(f"{name} must not be negative, got {value}")
    return value


def _word_list(text: str) -> Tuple[str, ...]:
    words = (word.strip() for word in text.split(","))
    return tuple(dict.fromkeys(word for word in words if word))


@dataclass(frozen=True)
class Schedule:
    """The steps and layers a validated settings object controls for one model and step count."""

    steps: range
    layers: frozenset

    def controls_step(self, step: int) -> bool:
        return step in self.steps

    def controls_layer(self, layer: int) -> bool:
        return layer in self.layers


@dataclass(frozen=True)
class MasaCtrlSettings:
    """What the user chose. Construction checks types and self-consistency; :meth:`schedule`
    checks the values against the loaded model and the step count."""

    mode: Mode = Mode.MUTUAL
    start_step: int | None = DEFAULT_START_STEP
    """``None``: :func:`default_start_step` of each pass's steps."""
    end_step: int | None = None
    start_layer: int | None = None
    end_layer: int | None = None
    layers: Tuple[int, ...] | None = None
    mask_words: str = ""
    """Subject words of the source prompt, comma separated: the source images' masks are made
    from their cross-attention maps (mask-guided MasaCtrl, :mod:`lib_masactrl.masks`)."""
    mask_target_words: str = ""
    """Subject words of the target prompt; empty means the same as ``mask_words``."""
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    """Min-max normalised cross-attention maps at or above this are foreground."""
    strength: float = 1.0
    """How much of the source a controlled target takes, from 0 (none: its own self-attention)
    to 1 (the paper's control); in between, the blend of :func:`~lib_masactrl.attention.strength_blend`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode.parse(self.mode))
        object.__setattr__(self, "start_step", _check_int("start step", self.start_step, allow_none=True))
        for name in ("start_layer", "end_step", "end_layer"):
            object.__setattr__(self, name, _check_int(name.replace("_", " "), getattr(self, name), allow_none=True))
        if self.end_step is not None and self.end_step <= (self.start_step or 0):
            raise SettingsError(
                f"end step {self.end_step} must be after start step {self.start_step} "
                "(the end step is exclusive)"
            )
        if self.end_layer is not None and self.end_layer <= (self.start_layer or 0):
            raise SettingsError(
                f"end layer {self.end_layer} must be after start layer {self.start_layer} "
                "(the end layer is exclusive)"
            )
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)):
                raise SettingsError(f"layers must be a list of whole numbers, got {self.layers!r}")
            checked = tuple(sorted({_check_int("layer", layer) for layer in self.layers}))
            if not checked:
                raise SettingsError("the explicit layer list is empty: give at least one layer")
            object.__setattr__(self, "layers", checked)
        for name in ("mask_words", "mask_target_words"):
            value = "" if getattr(self, name) is None else getattr(self, name)
            if not isinstance(value, str):
                raise SettingsError(f"{name.replace('_', ' ')} must be text, got {value!r}")
            object.__setattr__(self, name, value.strip())
        threshold = self.mask_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise SettingsError(f"mask threshold must be a number from 0 to 1, got {threshold!r}")
        object.__setattr__(self, "mask_threshold", float(threshold))
        strength = self.strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
            raise SettingsError(f"strength must be a number from 0 to 1, got {strength!r}")
        object.__setattr__(self, "strength", float(strength))
        if self.mode is not Mode.MUTUAL and (self.source_words or self.target_words):
            raise SettingsError(f"subject masks work with the mutual mode only, not with the {self.mode.value} mode")

    def for_steps(self, steps: int) -> "MasaCtrlSettings":
        """These settings for a pass of ``steps`` steps: an automatic start step resolved."""
        if self.start_step is not None:
            return self
        return dataclasses.replace(self, start_step=default_start_step(steps))

    @property
    def source_words(self) -> Tuple[str, ...]:
        """The source's subject words, each stripped, empty entries dropped."""
        return _word_list(self.mask_words)

    @property
    def target_words(self) -> Tuple[str, ...]:
        """The target's subject words (the source's when none are given)."""
        return _word_list(self.mask_target_words) or self.source_words

    def schedule(self, layer_count: int, total_steps: int | None = None, model_name: str = "this model") -> Schedule:
        """Resolve to concrete steps and layers, or raise :class:`SettingsError` naming the bad value
        and the range allowed for ``model_name`` with ``layer_count`` transformer blocks."""
        if layer_count <= 0:
            raise SettingsError(f"{model_name} has no transformer blocks with self-attention to control")
        last_layer = layer_count - 1
        layer_range = f"{model_name} has layers 0-{last_layer}"
        if self.layers is not None:
            bad = [layer for layer in self.layers if layer > last_layer]
            if bad:
                raise SettingsError(f"layer {bad[0]} is out of range: {layer_range}")
            layers = frozenset(self.layers)
        else:
            start_layer = default_start_layer(layer_count) if self.start_layer is None else self.start_layer
            if start_layer > last_layer:
                raise SettingsError(f"start layer {start_layer} is out of range: {layer_range}")
            end_layer = layer_count if self.end_layer is None else min(self.end_layer, layer_count)
            if end_layer <= start_layer:
                raise SettingsError(
                    f"end layer {end_layer} must be after start layer {start_layer} (the end layer is exclusive)"
                )
            layers = frozenset(range(start_layer, end_layer))

        start_step = self.start_step
        if total_steps is None:
            end_step = self.end_step if self.end_step is not None else 1 << 30
        else:
            start_step = self.for_steps(total_steps).start_step
            if start_step >= total_steps:
                raise SettingsError(
                    f"start step {start_step} is out of range: this generation has steps "
                    f"0-{total_steps - 1}, so MasaCtrl would never act"
                )
            end_step = total_steps if self.end_step is None else min(self.end_step, total_steps)
        # Without a step count an automatic start step cannot be resolved: such a schedule is for
        # its layers only, and controls no step.
        steps = range(start_step, end_step) if start_step is not None else range(0)
        return Schedule(steps=steps, layers=layers)
