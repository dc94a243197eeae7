"""The one table of user-facing settings: UI order (which is the API's positional order),
labels, infotext keys, defaults and parsing all come from it. Tooltips live in
``javascript/masactrl.js``, keyed by the same field names."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

from .settings import DEFAULT_START_STEP, MasaCtrlSettings, Mode, SettingsError

MAX_STEPS = 150
MAX_LAYERS = 70
AUTO_LAYER = -1


@dataclass(frozen=True)
class ScriptArgs:
    """The script's arguments, checked. Field order is the positional API order."""

    enabled: bool = False
    source_prompt: str = ""
    mode: str = Mode.MUTUAL.value
    start_step: int = DEFAULT_START_STEP
    end_step: int = MAX_STEPS
    start_layer: int = AUTO_LAYER
    end_layer: int = MAX_LAYERS
    hires: bool = False

    def settings(self) -> MasaCtrlSettings:
        return MasaCtrlSettings(
            mode=self.mode,
            start_step=self.start_step,
            end_step=self.end_step,
            start_layer=None if self.start_layer == AUTO_LAYER else self.start_layer,
            end_layer=self.end_layer,
        )

    def infotext(self, resolved_start_layer: int | None = None) -> Dict[str, Any]:
        """Infotext entries: every setting that differs from its default, and the start layer
        actually used, so that pasting reproduces the image on the same model."""
        values = {field.name: getattr(self, field.name) for field in FIELDS}
        if resolved_start_layer is not None:
            values["start_layer"] = resolved_start_layer
        return {
            field.infotext: values[field.name]
            for field in FIELDS
            if field.name == "enabled" or values[field.name] != field.default
        }


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    infotext: str

    @property
    def default(self) -> Any:
        return getattr(ScriptArgs(), self.name)


FIELDS: Tuple[Field, ...] = (
    Field("enabled", "MasaCtrl", "MasaCtrl"),
    Field("source_prompt", "Source prompt", "MasaCtrl source prompt"),
    Field("mode", "Mode", "MasaCtrl mode"),
    Field("start_step", "Start step", "MasaCtrl start step"),
    Field("end_step", "End step", "MasaCtrl end step"),
    Field("start_layer", "Start layer", "MasaCtrl start layer"),
    Field("end_layer", "End layer", "MasaCtrl end layer"),
    Field("hires", "Apply during hires fix", "MasaCtrl hires fix"),
)

FIELD_NAMES = tuple(field.name for field in FIELDS)


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


def _as_str(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SettingsError(f"{name} must be text, got {value!r}")
    return value


def parse_args(args: Union[Sequence[Any], Mapping[str, Any]]) -> ScriptArgs:
    """Accept the UI's/API's positional args (missing trailing ones take their defaults), or a
    dict keyed by field name or infotext key, alone or as the first positional arg (the API's
    ``"args": [{...}]``). Raises :class:`SettingsError` naming the bad value."""
    if not isinstance(args, Mapping) and args and isinstance(args[0], Mapping):
        args = args[0]
    if isinstance(args, Mapping):
        by_key = {field.infotext: field.name for field in FIELDS}
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
    return ScriptArgs(
        enabled=_as_bool("enabled", values["enabled"]),
        source_prompt=_as_str("source prompt", values["source_prompt"]),
        mode=mode,
        start_step=_as_int("start step", values["start_step"], 0, MAX_STEPS - 1),
        end_step=_as_int("end step", values["end_step"], 1, MAX_STEPS),
        start_layer=_as_int("start layer", values["start_layer"], AUTO_LAYER, MAX_LAYERS - 1),
        end_layer=_as_int("end layer", values["end_layer"], 1, MAX_LAYERS),
        hires=_as_bool("apply during hires fix", values["hires"]),
    )
