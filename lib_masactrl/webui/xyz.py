"""The WebUI's built-in X/Y/Z plot (scripts/xyz_grid.py): MasaCtrl's axes, each overriding one of
the accordion's values for the cells of its row or column, and cells that show what MasaCtrl made.

The plot checks each axis's values with the axis's ``confirm`` before its first cell runs, and
runs every cell inside a ``try`` that turns an error into a blank cell and a console traceback. So
MasaCtrl's axes confirm every value against the accordion's other settings, the batch and the
loaded model's real layer range up front, and a bad one stops the whole plot with its message.

The plot puts ``processed.images[0]`` of each cell into its grid. With a batch grid (the UI's
default) that is the batch side by side; without one (the API, which sets ``do_not_save_grid``
unless ``save_images``) it would be the first source, the image MasaCtrl leaves unchanged, and a
sweep would look like it did nothing. Such a cell gets the first batch side by side in front,
made as the WebUI makes its batch grid, so the plot shows sources and targets through UI and API
alike.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Sequence

from modules import images, scripts

from ..fields import AUTO_LAYER, FIELD_BY_NAME, FIELDS, ScriptArgs, parse_args
from ..layers import LayerMap
from ..layout import LayoutError
from ..session import GenerationSession
from ..settings import MasaCtrlSettings, Mode, SettingsError
from . import model
from .messages import MasaCtrlInputError, is_api, record_notes, refusal, stop_in_the_ui

logger = logging.getLogger("masactrl")

PREFIX = "[MasaCtrl] "
OVERRIDES_ATTRIBUTE = "masactrl_overrides"
SCRIPT_TITLE = "MasaCtrl"

AXES = (
    ("start_step", int, None),
    ("start_layer", int, None),
    ("mode", str, lambda: [mode.value for mode in Mode]),
    ("strength", float, None),
)
"""The fields the plot can sweep: name, value type, choices."""


def overrides(p: Any) -> Dict[str, Any]:
    """The values the plot's axes set for this cell, by field name."""
    return getattr(p, OVERRIDES_ATTRIBUTE, {})


def _override(name: str) -> Callable[[Any, Any, Any], None]:
    def apply(p: Any, value: Any, _xs: Any) -> None:
        setattr(p, OVERRIDES_ATTRIBUTE, {**overrides(p), name: value})

    return apply


def _accordion_args(p: Any) -> List[Any] | None:
    """MasaCtrl's own arguments in the plot's ``p``: its slice of ``p.script_args``."""
    runner = getattr(p, "scripts", None)
    script = next((s for s in getattr(runner, "alwayson_scripts", None) or () if s.title() == SCRIPT_TITLE), None)
    if script is None or script.args_from is None:
        return None
    return list(getattr(p, "script_args", None) or ())[script.args_from:script.args_to]


def _confirm(name: str) -> Callable[[Any, Sequence[Any]], None]:
    """The axis's ``confirm``: every value must make a generation MasaCtrl can run."""
    label = f"{PREFIX}{FIELD_BY_NAME[name].label}"

    def confirm(p: Any, values: Sequence[Any]) -> None:
        args = _accordion_args(p)
        try:
            accordion = parse_args(args) if args is not None else ScriptArgs()
        except SettingsError:
            return  # the accordion itself is wrong: the first cell says so
        if not accordion.enabled:
            return
        unet = model.loaded_unet()
        layers = LayerMap.from_unet(unet) if unet is not None else None
        current = {field.name: getattr(accordion, field.name) for field in FIELDS}
        for value in values:
            try:
                if name == "start_layer" and layers is not None and isinstance(value, int) and value != AUTO_LAYER:
                    # the loaded model's own range, which is narrower than what any model allows
                    MasaCtrlSettings(start_layer=max(value, 0)).schedule(len(layers), None, layers.family)
                cell = parse_args({**current, name: value})
                if unet is not None:
                    GenerationSession(cell, p.batch_size, unet)
            except (SettingsError, LayoutError) as error:
                _stop_plot(p, f"MasaCtrl: the X/Y/Z plot's {label} value {value!r} cannot be used: {error}")
                return

    return confirm


def _stop_plot(p: Any, reason: str) -> None:
    """Stop the plot before its first cell: through the API with a 422; in the UI as Interrupt stops
    it, with the message as the comment and a toast (no traceback, no error box)."""
    message = refusal(reason, "the axis values")
    if is_api(p):
        raise MasaCtrlInputError(message)
    stop_in_the_ui(p, message)


PLOT_MODULES = ("xyz_grid.py", "xy_grid.py")
"""The plot script's module names: the WebUI loads script files under their file names."""


def register_axes() -> None:
    """Add the axes once: the plot script's module outlives *Reload UI* of this extension."""
    xyz = next((data.module for data in scripts.scripts_data if data.script_class.__module__ in PLOT_MODULES), None)
    if xyz is None or any(option.label.startswith(PREFIX) for option in xyz.axis_options):
        return
    xyz.axis_options.extend(
        xyz.AxisOption(f"{PREFIX}{FIELD_BY_NAME[name].label}", kind, _override(name), confirm=_confirm(name),
                       choices=choices)
        for name, kind, choices in AXES
    )


def note_ignored(p: Any, cell: Dict[str, Any]) -> None:
    """A cell whose MasaCtrl axes act on nothing because MasaCtrl is off: say so in its infotext."""
    names = ", ".join(f"{PREFIX}{FIELD_BY_NAME[name].label}" for name in cell)
    note = f"the X/Y/Z plot's {names} did nothing: MasaCtrl is off in the accordion"
    logger.warning("MasaCtrl: %s", note)
    record_notes(p, [note])


def _is_plot_cell(p: Any) -> bool:
    """Whether ``p`` is a cell of the X/Y/Z plot: the plot is the selected script, whose index is
    the first script argument (modules/scripts.py, ``ScriptRunner.run``), and each cell is a copy
    of ``p``."""
    args = getattr(p, "script_args", None) or (0,)
    index = args[0] if isinstance(args[0], int) else 0
    selectable = getattr(getattr(p, "scripts", None), "selectable_scripts", None) or []
    return 0 < index <= len(selectable) and type(selectable[index - 1]).__module__ in PLOT_MODULES


def show_batch_in_cell(p: Any, processed: Any, shown: Sequence[bool]) -> None:
    """Give a plot cell without a batch grid the first batch side by side as its first image.
    ``shown`` tells, per image a batch shows, whether it is a target."""
    first = processed.index_of_first_image
    batch = processed.images[first:first + len(shown)]
    if not _is_plot_cell(p) or first > 0 or len(batch) < 2:
        return
    target = next((i for i, is_target in enumerate(shown) if is_target), 0)
    processed.images.insert(0, images.image_grid(batch, len(batch)))
    processed.infotexts.insert(0, processed.infotexts[target])
