"""How MasaCtrl tells the WebUI user something, and the error that stops an API generation.

A note must reach UI and API users alike. ``p.comment`` shows under the generation info in the UI
only: the API's ``info`` is ``Processed.js()``, which has no comments (modules/processing.py), but
it holds every image's infotext. So notes go to the comments, to a toast, and to the infotext key
:data:`NOTES_KEY`, which the API returns in ``info`` and the PNG keeps.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import gradio as gr
from fastapi.exceptions import HTTPException

logger = logging.getLogger("masactrl")

NOTES_KEY = "MasaCtrl notes"


class MasaCtrlInputError(HTTPException):
    """A setting or batch MasaCtrl cannot run with. The API answers an ``HTTPException`` with its
    ``status_code`` and ``detail`` and, unlike any other exception, without printing a traceback
    (modules/api/api.py, ``handle_exception``): the user's mistake gets the one log line MasaCtrl
    writes and a 422 carrying the message. The UI's error box shows ``str()`` of it: the message."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=422, detail=message)

    def __str__(self) -> str:
        return self.detail


def is_api(p: Any) -> bool:
    """Whether the generation came through the API (modules/api/api.py sets ``p.is_api``)."""
    return bool(getattr(p, "is_api", False))


def tell_user(p: Any, message: str) -> None:
    """Show ``message`` under the generation info and, in the UI, as a toast. An API request has no
    page to show a toast on: there gradio would only add a Python warning to the console."""
    p.comment(message)
    if not is_api(p):
        gr.Warning(message)


def record_notes(p: Any, notes: Sequence[str]) -> None:
    """Put the notes so far into the infotext of the images still to be made, and so into the
    API's ``info``."""
    if notes:
        p.extra_generation_params[NOTES_KEY] = "; ".join(notes)
