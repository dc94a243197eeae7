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

from modules import shared

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


def refusal(reason: str, fix: str = "the setting") -> str:
    """The message of a refusal, named as MasaCtrl's and saying what to do, written to the console
    once: the only line a user's mistake adds there."""
    named = reason if reason.startswith("MasaCtrl") else f"MasaCtrl: {reason}"
    message = f"{named}. Nothing was generated; fix {fix} or disable MasaCtrl."
    logger.error(message)
    return message


def stop_in_the_ui(p: Any, message: str) -> None:
    """Stop a UI generation as Interrupt stops it (the WebUI then prints no traceback and shows no
    error box) and show ``message`` as its comment and a toast."""
    shared.state.interrupted = True
    tell_user(p, message)


def record_notes(p: Any, notes: Sequence[str]) -> None:
    """Put the notes so far into the infotext of the images still to be made, and so into the
    API's ``info``."""
    if notes:
        p.extra_generation_params[NOTES_KEY] = "; ".join(notes)
