"""Give each ControlNet unit to the sources, to the targets, or to both.

The paper applies a spatial control (T2I-Adapter, ControlNet) to the target only: the target
follows the new layout while the source keeps its own and lends its content through mutual
self-attention. The WebUI's ControlNet extension (Mikubill/sd-webui-controlnet) applies every unit
to every row. This module narrows each unit to the rows assigned to it, for whatever layout the
WebUI gives a U-Net call, without importing or patching any ControlNet code.

Where it intervenes. ControlNet replaces the U-Net's ``forward`` (``scripts/hook.py``,
``UnetHook.hook``); for each unit (a ``ControlParams`` in ``UnetHook.control_params``) that forward
calls ``param.control_model(x=..., hint=..., timesteps=..., context=..., y=..., control_type=...)``,
which returns one residual per skip connection plus one for the middle block, with one row per
row of the call. It then scales them (weight, soft injection, "ControlNet is more important",
advanced weighting, effective-region mask, global average pooling, "each unit for each image"),
sums the units and adds the sum to the U-Net's features. Each of those steps maps a zero row to a
zero row, and adding a zero row changes nothing, so zeroing a unit's unassigned rows as its
residuals come out of ``control_model`` removes the unit from those rows exactly and leaves all
the rest of ControlNet's behaviour, hires-fix hint switching and guidance start/end included, to
ControlNet.

Why the unit's ``control_model`` attribute and not the model object or the U-Net:

- units that load the same model share one model object (``Script.load_control_model`` returns the
  cached object; ``ControlModelType.allow_context_sharing``), so a hook on the model could not
  tell units apart, whereas every unit has its own ``ControlParams``;
- ``ControlParams`` objects are built anew for every generation (``controlnet_main_entry``) and
  dropped by ``UnetHook.restore``, so a replaced attribute can never reach a later generation or
  ControlNet's model cache, whichever of the two extensions cleans up first;
- after ``control_model`` returns, the units are summed inside ControlNet's forward, where nothing
  can separate them again.

The replacement is a transparent proxy: attribute reads and writes, method calls, ``isinstance``
and device moves reach the real model, because ControlNet reads ``control_model.control_model``,
``disable_memory_management``, ``fullvram``/``aggressive_lowvram``, moves the model with ``.to`` and
checks ``isinstance(param.control_model, torch.nn.Module)`` before moving it back to the CPU.

Which rows are sources and which are targets comes from the MasaCtrl controller: its forward
pre-hook on the U-Net (see :mod:`.patching`) places each U-Net call in the step's layout before
ControlNet's replacement ``forward`` runs, in whichever order the two were installed.

The same proxy gives a unit one control map per target (:class:`UnitMaps`): it swaps the ``hint``
of each ``control_model`` call for one hint row per row of the call, each target's own map and
the unit's hint for the other rows, at the size of the hint ControlNet hands it (the first pass's
or the hires pass's). Everything ControlNet does with the unit's output (weight, guidance
start/end, control mode) then applies as to its own hint. Only ControlNet-type models take a hint
per row: a T2I-Adapter computes its features once per generation and reuses them.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

from .controller import MasaCtrlController
from .layout import CallPlan
from .patching import PATCH_MARKER
from .settings import Choice, SettingsError

logger = logging.getLogger("masactrl")

# ``ControlModelType`` names (ControlNet's scripts/enums.py) whose units return per-row residuals
# from ``control_model``: the ``is_controlnet`` family, which hook.py adds to the skip and middle
# features, and T2I-Adapter, whose features it adds inside the encoder.
_RESIDUAL_TYPES = frozenset({"ControlNet", "ControlLoRA", "InstantID", "ControlNetUnion", "T2I_Adapter"})
# Units of this type rewrite self-attention (reference_only, reference_adain+attn) through
# ``BasicTransformerBlock._forward``, or GroupNorm statistics (reference_adain), after a reference.
_SELF_ATTENTION_TYPES = frozenset({"AttentionInjection"})
# Value of ``UnetHook.attention_auto_machine`` once the "[StyleAlign] Align image style in the
# batch" option is on: all rows then attend over one another.
_STYLE_ALIGN = "StyleAlign"


class Assignment(Choice):
    """The rows a ControlNet unit acts on."""

    TARGET = "target"
    """Only the targets (the paper's setting; the default)."""

    SOURCE = "source"
    """Only the sources."""

    BOTH = "both"
    """Every row, as ControlNet alone does."""

    @classmethod
    def noun(cls) -> str:
        return "ControlNet unit assignment"


DEFAULT_ASSIGNMENT = Assignment.TARGET


class UnitKind(enum.Enum):
    """What MasaCtrl can do with a ControlNet unit."""

    RESIDUAL = "residual"
    """Per-row residuals: restricted to the assigned rows."""

    SELF_ATTENTION = "self-attention"
    """Rewrites self-attention as MasaCtrl does (reference-only family): the user is told."""

    EVERY_ROW = "every-row"
    """Acts on every row in a way that cannot be narrowed (IP-Adapter, style adapter, ReVision,
    ControlLLLite, a T2I-Adapter that ControlNet repeats over the batch itself)."""


@dataclass
class UnitMaps:
    """Control maps for one enabled unit: per image of the batch, the number of its map, and how
    to make map ``number``'s hint at a size like a given hint tensor (ControlNet's own resizing)."""

    unit: int
    """The unit's place among the enabled units, from 0."""
    images: Mapping[int, int]
    hint: Callable[[int, Tuple[int, int], torch.Tensor], torch.Tensor]
    """``hint(number, (height, width), like)``: a ``(1, channels, height, width)`` tensor on
    ``like``'s device and in its dtype."""
    _made: Dict[Tuple[int, Tuple[int, int], Any, Any], torch.Tensor] = field(default_factory=dict, repr=False)

    def rows(self, images: Sequence[int], hint: torch.Tensor) -> torch.Tensor:
        """The hint of a call whose rows belong to ``images``: each mapped image's own map, the
        unit's ``hint`` for the other rows."""
        size = (int(hint.shape[-2]), int(hint.shape[-1]))
        pieces = []
        for row, image in enumerate(images):
            if image in self.images:
                key = (self.images[image], size, hint.device, hint.dtype)
                if key not in self._made:
                    self._made[key] = self.hint(self.images[image], size, hint)
                pieces.append(self._made[key])
            else:
                pieces.append(hint[row:row + 1] if hint.shape[0] == len(images) else hint[:1])
        return torch.cat(pieces)


def _type_name(param: Any) -> str:
    return str(getattr(getattr(param, "control_model_type", None), "name", ""))


def unit_kind(param: Any) -> UnitKind:
    """Classify a ControlNet ``ControlParams`` by its ``control_model_type``."""
    name = _type_name(param)
    if name in _SELF_ATTENTION_TYPES:
        return UnitKind.SELF_ATTENTION
    if name not in _RESIDUAL_TYPES:
        return UnitKind.EVERY_ROW
    if name == "T2I_Adapter" and getattr(param, "cfg_injection", False):
        # hook.py repeats a T2I-Adapter's single-row features over the call's rows itself in
        # this mode ("ControlNet is more important"), so they must leave control_model as one row.
        return UnitKind.EVERY_ROW
    return UnitKind.RESIDUAL


def _unit_name(param: Any) -> str:
    """A unit's preprocessor, or its model type where it has none."""
    preprocessor = getattr(param, "preprocessor", None)
    name = preprocessor.get("name") if isinstance(preprocessor, dict) else None
    return name or _type_name(param) or "unknown type"


def _unit_label(index: int, param: Any) -> str:
    """How notes name a unit: its place among the enabled units (``control_params`` holds only the
    enabled ones, in the order of the unit tabs) and its preprocessor."""
    return f"enabled ControlNet unit {index + 1} ({_unit_name(param)})"


def assigned_rows(plan: CallPlan, assignment: Assignment) -> Tuple[bool, ...]:
    """Per row of a U-Net call: whether a unit with ``assignment`` acts on it. A row that reads
    keys and values from another row is a target; every other row is a source. Cond and uncond
    rows are treated alike."""
    if assignment is Assignment.BOTH:
        return (True,) * plan.size
    targets = assignment is Assignment.TARGET
    return tuple((source is not None) == targets for source in plan.sources)


def _call_rows(args: tuple, kwargs: dict) -> int | None:
    x = kwargs.get("x", args[0] if args else None)
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else None


class _UnitProxy:
    """Stands in for one unit's ``control_model``: calls the real model and zeroes the residual
    rows its unit is not assigned to. Everything else reaches the real model."""

    def __init__(
        self, model: Any, restriction: "UnitRestriction", label: str, assignment: Assignment, maps: UnitMaps | None
    ) -> None:
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_restriction", restriction)
        object.__setattr__(self, "_label", label)
        object.__setattr__(self, "_assignment", assignment)
        object.__setattr__(self, "_maps", maps)

    @property
    def __class__(self) -> type:
        """``isinstance`` sees the real model's class (``unittest.mock`` does the same): ControlNet
        moves only ``torch.nn.Module`` control models back to the CPU."""
        return type(self._model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._model, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        restriction = self._restriction
        if restriction is not None and self._maps is not None and isinstance(kwargs.get("hint"), torch.Tensor):
            kwargs["hint"] = restriction._hint(self._label, self._maps, kwargs["hint"], _call_rows(args, kwargs))
        outputs = self._model(*args, **kwargs)
        if restriction is None or self._assignment is Assignment.BOTH:
            return outputs
        return restriction._restrict(self._label, self._assignment, _call_rows(args, kwargs), outputs)

    def __repr__(self) -> str:
        return f"<MasaCtrl {self._assignment.value}-only view of {self._model!r}>"


setattr(_UnitProxy, PATCH_MARKER, True)


def _is_ours(obj: Any) -> bool:
    # type(), not getattr(obj, ...): a foreign proxy around ours would forward the lookup to ours.
    return getattr(type(obj), PATCH_MARKER, False) is True


def _unwrap(param: Any) -> int:
    """Take every proxy of ours off the top of ``param.control_model``; returns how many."""
    removed = 0
    model = getattr(param, "control_model", None)
    while _is_ours(model):
        object.__setattr__(model, "_restriction", None)
        model = model._model
        param.control_model = model
        removed += 1
    return removed


@dataclass
class _Wrapped:
    param: Any
    proxy: _UnitProxy


class UnitRestriction:
    """ControlNet units narrowed to their rows for one sampling pass. Call :meth:`release` (or
    use it as a context manager) when the pass ends."""

    def __init__(self, controller: MasaCtrlController) -> None:
        self.controller = controller
        self._wrapped: List[_Wrapped] = []

    def _install(self, network: Any, assignments: Sequence[Assignment], maps: UnitMaps | None) -> None:
        params = list(getattr(network, "control_params", None) or [])
        for index, param in enumerate(params):
            stale = _unwrap(param)
            if stale:
                logger.debug("MasaCtrl: removed %d stale ControlNet unit views from unit %d", stale, index + 1)
            assignment = assignments[index]
            kind = unit_kind(param)
            label = _unit_label(index, param)
            if kind is UnitKind.SELF_ATTENTION:
                self.controller.note(
                    f"controlnet-self-attention-{index}",
                    f"{label} rewrites self-attention (or feature statistics) of every image after a reference "
                    "image, as MasaCtrl rewrites the targets' self-attention after the sources; the two mix "
                    "unpredictably. Disable that unit for MasaCtrl results",
                )
            elif kind is UnitKind.EVERY_ROW and assignment is not Assignment.BOTH:
                self.controller.note(
                    f"controlnet-every-row-{index}",
                    f"{label} cannot be limited to the {assignment.value} images; it acts on every image",
                )
            elif kind is UnitKind.RESIDUAL and (assignment is not Assignment.BOTH or maps is not None and maps.unit == index):
                unit_maps = maps if maps is not None and maps.unit == index else None
                proxy = _UnitProxy(param.control_model, self, label, assignment, unit_maps)
                param.control_model = proxy
                self._wrapped.append(_Wrapped(param, proxy))
        machine = getattr(getattr(network, "attention_auto_machine", None), "name", None)
        if machine == _STYLE_ALIGN:
            self.controller.note(
                "controlnet-style-align",
                "ControlNet's \"[StyleAlign] Align image style in the batch\" option makes every image attend "
                "to all the others, which leaves MasaCtrl nothing to control; turn it off for MasaCtrl results",
            )

    def _hint(self, label: str, maps: UnitMaps, hint: torch.Tensor, rows: int | None) -> torch.Tensor:
        images = self.controller.current_images
        if images is None or rows != len(images):
            self.controller.note(
                "controlnet-maps-rows-unknown",
                f"MasaCtrl could not tell the images of some U-Net calls; {label} used its own image there",
            )
            return hint
        return maps.rows(images, hint)

    def _restrict(self, label: str, assignment: Assignment, rows: int | None, outputs: Any) -> Any:
        plan = self.controller.current_plan
        if plan is None or rows != plan.size:
            self.controller.note(
                "controlnet-rows-unknown",
                "MasaCtrl could not tell sources from targets in some U-Net calls; "
                "ControlNet units acted on every image there",
            )
            return outputs
        keep = assigned_rows(plan, assignment)
        if all(keep):
            return outputs
        if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, torch.Tensor) for o in outputs):
            self.controller.note(
                f"controlnet-output-{label}",
                f"{label} returned control of an unexpected form; it acted on every image",
            )
            return outputs
        restricted = []
        for residual in outputs:
            if residual.shape[0] == 1 and rows > 1:
                # A T2I-Adapter computes its features once from the hint; hook.py broadcasts them.
                residual = residual.expand(rows, *residual.shape[1:])
            if residual.shape[0] != rows:
                self.controller.note(
                    f"controlnet-output-{label}",
                    f"{label} returned control for {residual.shape[0]} images where the U-Net call had {rows}; "
                    "it acted on every image",
                )
                return outputs
            row_mask = self.controller.indexes.flags(keep, residual.device).view(-1, *(1,) * (residual.dim() - 1))
            restricted.append(torch.where(row_mask, residual, residual.new_zeros(())))
        return restricted

    @property
    def restricted_units(self) -> int:
        """How many units are narrowed now (0 after :meth:`release`)."""
        return len(self._wrapped)

    def release(self) -> None:
        """Give every unit its real ``control_model`` back. Safe to call more than once and after
        ControlNet restored its own hook. A proxy that something else has since wrapped cannot be
        taken out from under it; it stops restricting instead."""
        for wrapped in self._wrapped:
            object.__setattr__(wrapped.proxy, "_restriction", None)
            if wrapped.param.control_model is wrapped.proxy:
                wrapped.param.control_model = wrapped.proxy._model
        self._wrapped.clear()

    def __enter__(self) -> "UnitRestriction":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


def maps_unit_missing(unit: int, enabled: int) -> SettingsError:
    """The error for control maps sent to enabled unit ``unit`` (from 0) of ``enabled`` units."""
    return SettingsError(
        f"the control maps go to ControlNet unit {unit + 1}, but {enabled} unit{'s are' if enabled != 1 else ' is'} "
        "enabled: enable that unit (with any of the maps as its image) or choose another"
    )


def restrict_units(
    network: Any,
    controller: MasaCtrlController,
    assignments: Assignment | str | Sequence[Assignment | str] = DEFAULT_ASSIGNMENT,
    maps: UnitMaps | None = None,
) -> UnitRestriction:
    """Narrow the units of a hooked ControlNet ``network`` (its ``UnetHook``, duck-typed: its
    ``control_params`` and ``attention_auto_machine`` are read) to their rows.

    ``assignments`` is one value for every unit or exactly one per enabled unit, in
    ``control_params`` order. Units that cannot be narrowed, and units or options that rewrite
    self-attention, are reported once through ``controller.note``. Views left on the units by an
    earlier call are replaced, never stacked. ``maps`` gives one unit a control map per target.
    Raises :class:`SettingsError` for an unknown assignment, a list that does not match the
    enabled units one to one (naming them), or maps for a unit that is missing or cannot take a
    hint per row, before changing anything."""
    params = list(getattr(network, "control_params", None) or [])
    if isinstance(assignments, (str, Assignment)):
        parsed = [Assignment.parse(assignments)] * len(params)
    else:
        parsed = [Assignment.parse(value) for value in assignments]
        if len(parsed) != len(params):
            units = ", ".join(f"unit {index + 1}: {_unit_name(param)}" for index, param in enumerate(params))
            raise SettingsError(
                f"'per unit' lists {len(parsed)} ControlNet assignment{'s' * (len(parsed) != 1)} "
                f"({', '.join(value.value for value in parsed)}) for {len(params)} enabled ControlNet "
                f"unit{'s' * (len(params) != 1)}{f' ({units})' if units else ''}: give one entry per enabled unit, "
                "in tab order"
            )
    if maps is not None:
        if maps.unit >= len(params):
            raise maps_unit_missing(maps.unit, len(params))
        param = params[maps.unit]
        if unit_kind(param) is not UnitKind.RESIDUAL or _type_name(param) == "T2I_Adapter":
            raise SettingsError(
                f"the control maps go to {_unit_label(maps.unit, param)}, which cannot take a map per image: "
                "give them to a ControlNet model's unit"
            )
    restriction = UnitRestriction(controller)
    try:
        restriction._install(network, parsed, maps)
    except BaseException:
        restriction.release()
        raise
    return restriction


def release_units(network: Any) -> int:
    """Take every MasaCtrl view off the units of ``network``, including ones from a pass that
    never reached its cleanup. Returns how many were removed."""
    return sum(_unwrap(param) for param in (getattr(network, "control_params", None) or []))
