"""The ControlNet extension (Mikubill/sd-webui-controlnet), found without importing any of its
code: by its script file and title, and through the attributes its script keeps."""

from __future__ import annotations

import os
from typing import Any

from modules import scripts

from ..controlnet_rows import Assignment, release_units

# ControlNet's batch option that gives unit i to image i (its scripts/enums.py, BatchOption.SEPARATE)
SEPARATE = "Each ControlNet unit for each image in a batch"


def installed() -> bool:
    """Whether the ControlNet extension is loaded, judged from the loaded script files."""
    return any(os.path.basename(data.path) == "controlnet.py" for data in scripts.scripts_data)


def script_of(p: Any) -> Any:
    """The ControlNet extension's script in this generation's runner (found by title, as
    ControlNet's own API does), or ``None``."""
    runner = getattr(p, "scripts", None)
    for script in getattr(runner, "alwayson_scripts", None) or ():
        if script.title().lower() == "controlnet":
            return script
    return None


def network_of(p: Any) -> Any:
    """ControlNet's hooked network of the pass about to sample (its ``UnetHook``), or ``None``."""
    return getattr(script_of(p), "latest_network", None)


def own_assignment(p: Any) -> Assignment | None:
    """:data:`Assignment.BOTH` when the user already gave each image its unit with ControlNet's
    own batch option, which MasaCtrl then leaves alone; otherwise ``None``."""
    if SEPARATE in (getattr(script_of(p), "ui_batch_option_state", None) or ()):
        return Assignment.BOTH
    return None


def release(p: Any) -> None:
    """Take MasaCtrl's views off ControlNet's units, if any are left."""
    network = network_of(p)
    if network is not None:
        release_units(network)
