"""The one table of user-facing settings: UI order (which is the API's positional order),
labels, infotext keys, defaults and parsing all come from it. Tooltips live in
``javascript/masactrl.js``, keyed by the same field names."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

from .controlnet_rows import Assignment
from .pairing import Layout
from .settings import DEFAULT_MASK_THRESHOLD, DEFAULT_START_STEP, Choice, MasaCtrlSettings, Mode, SettingsError

MAX_STEPS = 150
MAX_LAYERS = 70
AUTO_LAYER = -1
AUTO_STEP = -1
MAX_INVERSION_CFG = 30.0
MAX_FPS = 60
MAX_CONTROLNET_UNITS = 20


class MaskMode(Choice):
    """Where the foreground/background masks of mask-guided control come from."""

    NONE = "none"
    WORDS = "subject words"
    UPLOADED = "uploaded masks"

    @classmethod
    def noun(cls) -> str:
        return "mask mode"


class Animation(Choice):
    """The file a one-source sequence's targets are put together in."""

    NONE = "none"
    WEBP = "webp"
    GIF = "gif"

    @classmethod
    def noun(cls) -> str:
        return "animation"


class ControlNetScope(Choice):
    """Which images the enabled ControlNet units act on, as the accordion offers it."""

    TARGETS = "targets"
    BOTH = "both"
    PER_UNIT = "per unit"

    @classmethod
    def noun(cls) -> str:
        return "ControlNet units apply to"


@dataclass(frozen=True)
class ScriptArgs:
    """The script's arguments, checked. Field order is the positional API order."""

    enabled: bool = False
    source_prompt: str = ""
    mode: str = Mode.MUTUAL.value
    start_step: int = AUTO_STEP
    end_step: int = MAX_STEPS
    start_layer: int = AUTO_LAYER
    end_layer: int = MAX_LAYERS
    hires: bool = False
    controlnet: str = ControlNetScope.TARGETS.value
    controlnet_units: str = ""
    invert: bool = True
    inversion_cfg: float = 1.0
    show_reconstruction: bool = True
    mask_mode: str = MaskMode.NONE.value
    mask_words: str = ""
    mask_target_words: str = ""
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    show_masks: bool = False
    source_mask: Any = None
    target_mask: Any = None
    follow_inversion: bool = True
    layout: str = Layout.PAIRS.value
    target_prompts: str = ""
    show_every_source: bool = False
    control_maps: Any = None
    control_maps_folder: str = ""
    control_maps_unit: int = 1
    animation: str = Animation.WEBP.value
    fps: int = 8
    strength: float = 1.0

    @property
    def target_prompt_lines(self) -> Tuple[str, ...]:
        """The target prompts, one per non-empty line."""
        return tuple(line.strip() for line in self.target_prompts.splitlines() if line.strip())

    @property
    def uses_control_maps(self) -> bool:
        return bool(self.control_maps) or bool(self.control_maps_folder.strip())

    def controlnet_assignments(self) -> Tuple[Assignment, ...] | Assignment:
        """What each enabled ControlNet unit acts on: one value for all, or one per unit."""
        if self.controlnet == ControlNetScope.PER_UNIT:
            return _unit_assignments(self.controlnet_units)
        return Assignment.BOTH if self.controlnet == ControlNetScope.BOTH else Assignment.TARGET

    def settings(self) -> MasaCtrlSettings:
        return MasaCtrlSettings(
            mode=self.mode,
            start_step=None if self.start_step == AUTO_STEP else self.start_step,
            end_step=self.end_step,
            start_layer=None if self.start_layer == AUTO_LAYER else self.start_layer,
            end_layer=self.end_layer,
            mask_words=self.mask_words if self.mask_mode == MaskMode.WORDS else "",
            mask_target_words=self.mask_target_words if self.mask_mode == MaskMode.WORDS else "",
            mask_threshold=self.mask_threshold,
            strength=self.strength,
        )

    @property
    def user_masks(self) -> Tuple[Any, Any]:
        """The uploaded source and target masks, when the mask mode uses them."""
        if self.mask_mode != MaskMode.UPLOADED:
            return None, None
        return self.source_mask, self.target_mask

    def infotext(
        self,
        resolved_start_layer: int | None = None,
        layer_count: int | None = None,
        inverted: bool = False,
        source_prompt: str | None = None,
    ) -> Dict[str, Any]:
        """Infotext entries: every setting that differs from its default, the start layer
        actually used, so that pasting reproduces the image on the same model, the start step
        whatever its value and, when the init image was inverted (img2img), the inversion settings
        whatever their values: infotexts made before a setting existed (or before its default
        changed) lack its key, and pasting them must give the old behaviour (see
        :meth:`Field.absent`). An end layer at or past ``layer_count`` means "through the last"
        like the default and is left out. ``source_prompt`` records the source prompt as used,
        where the setting's own value (empty: the main prompt) would not remake the image."""
        values = {field.name: getattr(self, field.name) for field in FIELDS}
        if resolved_start_layer is not None:
            values["start_layer"] = resolved_start_layer
        if layer_count is not None and values["end_layer"] >= layer_count:
            values["end_layer"] = FIELD_BY_NAME["end_layer"].default
        if source_prompt is not None:
            values["source_prompt"] = source_prompt
        return {
            field.infotext: values[field.name]
            for field in FIELDS
            if field.infotext
            and (field.name in ALWAYS_RECORDED or (field.name in INVERSION_FIELDS and inverted)
                 or values[field.name] != field.default)
        }


_UNSET = object()


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    infotext: str | None
    """Its key in the PNG info; ``None`` for images, which the infotext cannot hold."""
    absent_before: Any = _UNSET
    """What a pasted MasaCtrl infotext that lacks this key means, when it is not the default: the
    behaviour before the setting existed, or before its default changed."""
    inversion_only: bool = False
    """``absent_before`` holds for inverted images only (an inversion setting)."""

    @property
    def default(self) -> Any:
        return getattr(ScriptArgs(), self.name)

    def absent(self, inverted: bool) -> Any:
        """The value for a pasted MasaCtrl infotext without this key."""
        if self.absent_before is _UNSET or (self.inversion_only and not inverted):
            return self.default
        return self.absent_before


FIELDS: Tuple[Field, ...] = (
    Field("enabled", "MasaCtrl", "MasaCtrl"),
    Field("source_prompt", "Source prompt", "MasaCtrl source prompt"),
    Field("mode", "Mode", "MasaCtrl mode"),
    Field("start_step", "Start step", "MasaCtrl start step", absent_before=DEFAULT_START_STEP),
    Field("end_step", "End step", "MasaCtrl end step"),
    Field("start_layer", "Start layer", "MasaCtrl start layer"),
    Field("end_layer", "End layer", "MasaCtrl end layer"),
    Field("hires", "Apply during hires fix", "MasaCtrl hires fix"),
    Field("controlnet", "ControlNet units apply to", "MasaCtrl ControlNet"),
    Field("controlnet_units", "Per enabled unit", "MasaCtrl ControlNet units"),
    Field("invert", "Invert the init image", "MasaCtrl inversion"),
    Field("inversion_cfg", "Inversion CFG scale", "MasaCtrl inversion CFG"),
    Field("show_reconstruction", "Show reconstruction", "MasaCtrl show reconstruction"),
    Field("mask_mode", "Masks from", "MasaCtrl masks"),
    Field("mask_words", "Source subject words", "MasaCtrl source subject"),
    Field("mask_target_words", "Target subject words", "MasaCtrl target subject"),
    Field("mask_threshold", "Mask threshold", "MasaCtrl mask threshold"),
    Field("show_masks", "Show masks", "MasaCtrl show masks"),
    Field("source_mask", "Source mask", None),
    Field("target_mask", "Target mask", None),
    Field("follow_inversion", "Source follows the inversion", "MasaCtrl source follows inversion", absent_before=False,
          inversion_only=True),
    Field("layout", "Layout", "MasaCtrl layout"),
    Field("target_prompts", "Target prompts, one per line", "MasaCtrl target prompts"),
    Field("show_every_source", "Show the source of every batch", "MasaCtrl every source"),
    Field("control_maps", "Control maps, one per target", None),
    Field("control_maps_folder", "Control maps folder", None),
    Field("control_maps_unit", "ControlNet unit for the maps", "MasaCtrl control maps unit"),
    Field("animation", "Animation", "MasaCtrl animation"),
    Field("fps", "Frames per second", "MasaCtrl fps"),
    Field("strength", "Strength", "MasaCtrl strength"),
)
"""The img2img-only fields (invert ... show reconstruction, follow inversion) exist on both tabs,
hidden in txt2img, so that the API's positional order is the same everywhere. New fields go at
the end, so that existing positional API calls keep their meaning."""

INVERSION_FIELDS = ("invert", "follow_inversion")
"""Written to the infotext of an inverted image whatever their values."""

ALWAYS_RECORDED = ("enabled", "start_step")
"""Written to every MasaCtrl infotext whatever their values: the start step's default changed (from
step 4 to automatic), so an infotext without it means step 4."""

FIELD_NAMES = tuple(field.name for field in FIELDS)
FIELD_BY_NAME = {field.name: field for field in FIELDS}


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _as_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise SettingsError(f"{name} {number} is out of range: allowed are {low} to {high}")
    return number


def _as_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise SettingsError(f"{name} {value} is out of range: allowed are {low} to {high}")
    return float(value)


def _as_str(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SettingsError(f"{name} must be text, got {value!r}")
    return value


def _as_list(name: str, value: Any) -> Tuple[Any, ...] | None:
    """Files from the UI's upload box, or base64 images from the API: a list, or nothing."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        return tuple(value) or None
    raise SettingsError(f"{name} must be a list of images, got {type(value).__name__}")


def fill_pasted_defaults(params: Dict[str, Any]) -> None:
    """Pasted generation parameters leave a control unchanged when its key is missing, and the
    infotext omits settings at their defaults: give those keys their defaults so that pasting
    restores every setting, not just the ones that differed."""
    if FIELDS[0].infotext not in params:
        return
    inverted = recorded_inversion(params)
    for field in FIELDS:
        if field.infotext:
            params.setdefault(field.infotext, field.absent(inverted))


def recorded_inversion(params: Mapping[str, Any]) -> bool:
    """Whether pasted generation parameters are those of an image whose init image was inverted."""
    return str(params.get(FIELD_BY_NAME["invert"].infotext, "")).strip().lower() == "true"


def _unit_assignments(text: str) -> Tuple[Assignment, ...]:
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise SettingsError(
            "ControlNet units apply 'per unit' but no assignment was given: list source, target or both "
            "for each enabled unit, for example 'source, target'"
        )
    return tuple(Assignment.parse(entry) for entry in entries)


def parse_args(args: Union[Sequence[Any], Mapping[str, Any]]) -> ScriptArgs:
    """Accept the UI's/API's positional args (missing trailing ones take their defaults), or a
    dict keyed by field name or infotext key, alone or as the first positional arg (the API's
    ``"args": [{...}]``). Raises :class:`SettingsError` naming the bad value."""
    if not isinstance(args, Mapping) and args and isinstance(args[0], Mapping):
        args = args[0]
    if isinstance(args, Mapping):
        by_key = {field.infotext: field.name for field in FIELDS if field.infotext}
        values = {}
        for key, value in args.items():
            name = by_key.get(key, key)
            if name not in FIELD_NAMES:
                raise SettingsError(f"unknown MasaCtrl argument {key!r}: use {', '.join(FIELD_NAMES)}")
            values[name] = value
    else:
        if len(args) > len(FIELDS):
            raise SettingsError(f"MasaCtrl takes at most {len(FIELDS)} arguments ({', '.join(FIELD_NAMES)}), got {len(args)}")
        values = dict(zip(FIELD_NAMES, args))

    defaults = {field.name: field.default for field in dataclass_fields(ScriptArgs)}
    values = {**defaults, **values}
    if not _as_bool("enabled", values["enabled"]):
        return ScriptArgs()
    mode = Mode.parse(values["mode"]).value
    parsed = ScriptArgs(
        enabled=_as_bool("enabled", values["enabled"]),
        source_prompt=_as_str("source prompt", values["source_prompt"]),
        mode=mode,
        start_step=_as_int("start step", values["start_step"], AUTO_STEP, MAX_STEPS - 1),
        end_step=_as_int("end step", values["end_step"], 1, MAX_STEPS),
        start_layer=_as_int("start layer", values["start_layer"], AUTO_LAYER, MAX_LAYERS - 1),
        end_layer=_as_int("end layer", values["end_layer"], 1, MAX_LAYERS),
        hires=_as_bool("apply during hires fix", values["hires"]),
        controlnet=ControlNetScope.parse(values["controlnet"]).value,
        controlnet_units=_as_str("ControlNet per-unit assignment", values["controlnet_units"]),
        invert=_as_bool("invert the init image", values["invert"]),
        inversion_cfg=_as_float("inversion CFG scale", values["inversion_cfg"], 1.0, MAX_INVERSION_CFG),
        show_reconstruction=_as_bool("show reconstruction", values["show_reconstruction"]),
        mask_mode=MaskMode.parse(values["mask_mode"]).value,
        mask_words=_as_str("source subject words", values["mask_words"]),
        mask_target_words=_as_str("target subject words", values["mask_target_words"]),
        mask_threshold=_as_float("mask threshold", values["mask_threshold"], 0.0, 1.0),
        show_masks=_as_bool("show masks", values["show_masks"]),
        source_mask=values["source_mask"],
        target_mask=values["target_mask"],
        follow_inversion=_as_bool("source follows the inversion", values["follow_inversion"]),
        layout=Layout.parse(values["layout"]).value,
        target_prompts=_as_str("target prompts", values["target_prompts"]),
        show_every_source=_as_bool("show the source of every batch", values["show_every_source"]),
        control_maps=_as_list("control maps", values["control_maps"]),
        control_maps_folder=_as_str("control maps folder", values["control_maps_folder"]),
        control_maps_unit=_as_int("ControlNet unit for the maps", values["control_maps_unit"], 1, MAX_CONTROLNET_UNITS),
        animation=Animation.parse(values["animation"]).value,
        fps=_as_int("frames per second", values["fps"], 1, MAX_FPS),
        strength=_as_float("strength", values["strength"], 0.0, 1.0),
    )
    parsed.controlnet_assignments()
    if parsed.mask_mode == MaskMode.WORDS and not parsed.mask_words.strip():
        raise SettingsError("masks from subject words need at least one source subject word, for example 'corgi'")
    if parsed.mask_mode == MaskMode.UPLOADED and (parsed.source_mask is None or parsed.target_mask is None):
        raise SettingsError("uploaded masks need both a source mask and a target mask")
    return parsed
