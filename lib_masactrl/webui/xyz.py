"""Axes for the WebUI's built-in X/Y/Z plot (scripts/xyz_grid.py): each overrides one of the
accordion's values for the cells of its row or column."""

from __future__ import annotations

from typing import Any, Callable, Dict

from modules import scripts

from ..settings import Mode

PREFIX = "[MasaCtrl] "
OVERRIDES_ATTRIBUTE = "masactrl_overrides"


def overrides(p: Any) -> Dict[str, Any]:
    """The values the plot's axes set for this cell, by field name."""
    return getattr(p, OVERRIDES_ATTRIBUTE, {})


def _override(name: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, _xs: Any) -> None:
        setattr(p, OVERRIDES_ATTRIBUTE, {**overrides(p), name: value})

    return apply


def register_axes() -> None:
    """Add the axes once: the plot script's module outlives *Reload UI* of this extension."""
    xyz = next(
        (data.module for data in scripts.scripts_data if data.script_class.__module__ in ("xyz_grid.py", "xy_grid.py")),
        None,
    )
    if xyz is None or any(option.label.startswith(PREFIX) for option in xyz.axis_options):
        return
    xyz.axis_options.extend([
        xyz.AxisOption(f"{PREFIX}Start step", int, _override("start_step")),
        xyz.AxisOption(f"{PREFIX}Start layer", int, _override("start_layer")),
        xyz.AxisOption(f"{PREFIX}Mode", str, _override("mode"), choices=lambda: [m.value for m in Mode]),
    ])
