"""The WebUI's built-in X/Y/Z plot (scripts/xyz_grid.py): MasaCtrl's axes, each overriding one of
the accordion's values for the cells of its row or column, and cells that show what MasaCtrl made.

The plot puts ``processed.images[0]`` of each cell into its grid. With a batch grid (the UI's
default) that is the batch side by side; without one (the API, which sets ``do_not_save_grid``
unless ``save_images``) it would be the first source, the image MasaCtrl leaves unchanged, and a
sweep would look like it did nothing. Such a cell gets the first batch side by side in front,
made as the WebUI makes its batch grid, so the plot shows sources and targets through UI and API
alike.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from modules import images, scripts

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


PLOT_MODULES = ("xyz_grid.py", "xy_grid.py")
"""The plot script's module names: the WebUI loads script files under their file names."""


def register_axes() -> None:
    """Add the axes once: the plot script's module outlives *Reload UI* of this extension."""
    xyz = next((data.module for data in scripts.scripts_data if data.script_class.__module__ in PLOT_MODULES), None)
    if xyz is None or any(option.label.startswith(PREFIX) for option in xyz.axis_options):
        return
    xyz.axis_options.extend([
        xyz.AxisOption(f"{PREFIX}Start step", int, _override("start_step")),
        xyz.AxisOption(f"{PREFIX}Start layer", int, _override("start_layer")),
        xyz.AxisOption(f"{PREFIX}Mode", str, _override("mode"), choices=lambda: [m.value for m in Mode]),
        xyz.AxisOption(f"{PREFIX}Strength", float, _override("strength")),
    ])


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
