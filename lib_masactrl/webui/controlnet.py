"""The ControlNet extension (Mikubill/sd-webui-controlnet), found without importing any of its
code: by its script file and title, and through the attributes its script keeps; and the control
maps a sequence gives one of its units, one per target."""

from __future__ import annotations

import base64
import io
import os
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from modules import scripts, shared

from ..controlnet_rows import Assignment, UnitMaps, maps_unit_missing, release_units
from ..fields import ScriptArgs
from ..pairing import Pairing
from ..settings import SettingsError

MAP_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

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


def enabled_unit_count(p: Any) -> int:
    """How many of this generation's ControlNet units are on, read from the ControlNet script's own
    arguments (objects or dicts with ``enabled``): Forge's built-in ControlNet keeps no hooked
    network to ask, so this is how a Forge generation learns of its units."""
    script = script_of(p)
    if script is None:
        return 0
    units = (getattr(p, "script_args", None) or ())[script.args_from:script.args_to]
    return sum(bool(unit.get("enabled") if isinstance(unit, dict) else getattr(unit, "enabled", False)) for unit in units)


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


def load_maps(args: ScriptArgs, from_api: bool = False) -> List[np.ndarray]:
    """The control maps as RGB arrays, in order: the uploads (files from the UI, base64 images from
    the API), else the folder's images in file name order. Raises :class:`SettingsError` for a
    map that cannot be read, a missing or empty folder, or maps of more than one size.

    Files on the server are read for the UI's user only, who runs the server (and not with
    ``--hide-ui-dir-config``, under which the WebUI keeps its own folders from the UI too): an API
    request gives its maps as base64 images, as the WebUI's own API takes images, so that no caller
    makes the server open its files."""
    if from_api and (args.control_maps_folder.strip() or any(not _is_base64(item) for item in args.control_maps or ())):
        raise SettingsError(
            "through the API, control maps are given as base64-encoded images (arg 24, control_maps); "
            "the server does not read its own files or folders for an API request"
        )
    if args.control_maps:
        maps = [(f"map {number}", _read(item, from_api)) for number, item in enumerate(args.control_maps, 1)]
    else:
        if shared.cmd_opts.hide_ui_dir_config:
            raise SettingsError("this WebUI runs with --hide-ui-dir-config, which keeps folders out of reach: "
                                "upload the control maps instead of naming their folder")
        folder = os.path.expanduser(args.control_maps_folder.strip())
        if not os.path.isdir(folder):
            raise SettingsError(f"the control maps folder {folder!r} does not exist")
        names = sorted(name for name in os.listdir(folder) if name.lower().endswith(MAP_EXTENSIONS))
        if not names:
            raise SettingsError(f"the control maps folder {folder!r} holds no images ({', '.join(MAP_EXTENSIONS)})")
        maps = [(name, _read(os.path.join(folder, name))) for name in names]
    sizes = {image.size for _, image in maps}
    if len(sizes) > 1:
        listed = "; ".join(f"{name}: {image.width}x{image.height}" for name, image in maps)
        raise SettingsError(f"the control maps must all have one size, as the frames of one sequence: {listed}")
    return [np.asarray(image.convert("RGB")) for _, image in maps]


def _is_base64(item: Any) -> bool:
    """Whether a map is given as base64 image data (a data URL or bare), not as a path."""
    if not isinstance(item, str):
        return False
    data = item.split(",", 1)[-1] if item.startswith("data:") else item
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        return False
    return not os.path.isabs(item)


def _read(item: Any, from_api: bool = False) -> Image.Image:
    """One map: a PIL image, a file from gradio's upload box (it has the file's ``name``), a path,
    or a base64 image (with or without a data URL prefix); from the API, base64 only."""
    if isinstance(item, Image.Image):
        return item
    path = None if from_api else getattr(item, "name", None) or (item.get("name") if isinstance(item, dict) else None)
    try:
        if isinstance(path, str):
            return Image.open(path)
        if isinstance(item, str):
            if not from_api and os.path.isfile(item):
                return Image.open(item)
            return Image.open(io.BytesIO(base64.b64decode(item.split(",", 1)[-1])))
    except (OSError, ValueError):
        pass
    raise SettingsError("a control map must be an image file or a base64-encoded image")


def check_map_count(maps: Sequence[np.ndarray], pairing: Pairing, images: int) -> str | None:
    """Refuses too few maps for the targets of a generation of ``images`` images; returns a note
    when some maps go unused."""
    targets = pairing.targets_in(images)
    if len(maps) < targets:
        raise SettingsError(
            f"{_maps(len(maps))} given for the {targets} targets of this generation (batch size x batch "
            "count): give one map per target, or make fewer targets"
        )
    if len(maps) > targets:
        unused = f"map {len(maps)} is" if len(maps) == targets + 1 else f"maps {targets + 1}-{len(maps)} are"
        return f"{_maps(len(maps))} given for {targets} targets: {unused} not used"
    return None


def _maps(count: int) -> str:
    return f"{count} control map{'s were' if count != 1 else ' was'}"


def unit_maps(p: Any, pairing: Pairing, args: ScriptArgs, maps: Sequence[np.ndarray]) -> UnitMaps:
    """The maps of this batch's targets for the chosen unit, resized as that unit resizes its own
    image: ControlNet's ``detectmap_proc`` with the unit's preprocessor and resize mode, at the size
    of the hint it uses in each pass."""
    script = script_of(p)
    index = args.control_maps_unit - 1
    units = getattr(script, "enabled_units", None) or []
    resize = getattr(script, "detectmap_proc", None)
    if script is None:
        raise SettingsError("control maps need the ControlNet extension, which is not installed")
    if resize is None:
        raise SettingsError("this version of the ControlNet extension cannot resize control maps (no detectmap_proc)")
    if index >= len(units):
        raise maps_unit_missing(index, len(units))
    unit = units[index]
    batch = getattr(p, "iteration", 0) * len(pairing)
    images = {image: pairing.target_number(batch + image) for image in pairing.targets}

    def hint(number: int, size: Tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        control, _ = resize(maps[number], unit.module, unit.resize_mode, size[0], size[1])
        return control.to(device=like.device, dtype=like.dtype)

    return UnitMaps(index, images, hint)
