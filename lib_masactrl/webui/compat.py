"""Whether this WebUI is one MasaCtrl can drive.

The adapter drives the AUTOMATIC1111 WebUI's ldm/sgm U-Net. WebUI Forge loads the same kind of
extension but runs its own U-Net and gradio 4, so there MasaCtrl must load without touching
anything, say once that it does nothing, and refuse a generation that asks for it; a Forge adapter
is a later step. Forge is told by its ``modules_forge`` package, which A1111 does not have.
"""

from __future__ import annotations

import importlib.util
import logging

logger = logging.getLogger("masactrl")

UNSUPPORTED_HOST = (
    "MasaCtrl does not support WebUI Forge yet: it needs the AUTOMATIC1111 WebUI (v1.7 or newer) and does nothing "
    "here; Forge users can follow the extension's page for the Forge version"
)


def host_problem() -> str | None:
    """Why MasaCtrl cannot run in this WebUI, or ``None``."""
    return UNSUPPORTED_HOST if importlib.util.find_spec("modules_forge") is not None else None


def announce() -> None:
    """Tell the console once, when the script loads, that MasaCtrl will do nothing here."""
    problem = host_problem()
    if problem:
        logger.warning("%s.", problem)
