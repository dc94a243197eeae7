"""How MasaCtrl tells the WebUI user something, and the error that stops a generation."""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

logger = logging.getLogger("masactrl")


class MasaCtrlInputError(ValueError):
    """A setting or batch MasaCtrl cannot run with. The WebUI API turns an exception's
    ``status_code`` and ``detail`` attributes into the HTTP response (modules/api/api.py,
    ``handle_exception``), so API clients get a 422 with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.status_code = 422
        self.detail = message


def tell_user(p: Any, message: str) -> None:
    """Show ``message`` under the generation info and as a toast in the UI."""
    p.comment(message)
    gr.Warning(message)
