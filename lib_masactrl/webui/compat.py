"""Which WebUI this is, and whether MasaCtrl can drive it.

MasaCtrl drives the AUTOMATIC1111 WebUI's ldm/sgm U-Net by patching its attention modules, and
WebUI Forge's own U-Net through Forge's model patcher (:mod:`lib_masactrl.forge`). Forge is told by
its ``modules_forge`` package, which A1111 does not have; the patcher MasaCtrl uses is Forge's
``backend`` package (Forge since August 2024). An older Forge, which kept its U-Net in
``ldm_patched``, must load MasaCtrl without any effect, say so once, and refuse a generation that
asks for it.
"""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger("masactrl")

UNSUPPORTED_HOST = (
    "MasaCtrl does not support this version of WebUI Forge: it needs a Forge with the 'backend' package "
    "(August 2024 or newer); update Forge, or use the AUTOMATIC1111 WebUI (v1.7 or newer)"
)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def is_forge() -> bool:
    """Whether this WebUI is WebUI Forge."""
    return _has("modules_forge")


def host_problem() -> str | None:
    """Why MasaCtrl cannot run in this WebUI, or ``None``."""
    if is_forge() and not _has("backend.patcher.unet"):
        return UNSUPPORTED_HOST
    return None


def announce() -> None:
    """Tell the console once, when the script loads, whether MasaCtrl will do nothing here."""
    problem = host_problem()
    if problem:
        logger.warning("%s.", problem)
    elif is_forge():
        logger.info("MasaCtrl: running in WebUI Forge")
