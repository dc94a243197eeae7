"""How a test reads a generation that MasaCtrl refused in the UI: stopped as Interrupt stops one,
with no image and the message as the generation's comment (and a toast), never an error box."""

from __future__ import annotations

from typing import Any


def ui_refusal(processed: Any) -> str:
    """The message of a refused UI generation; fails if it was not refused that way."""
    from modules import call_queue

    assert call_queue.last_ui_exception is None, f"the UI showed an error box: {call_queue.last_ui_exception}"
    assert processed is not None and processed.images == [], "a refused generation must show no image"
    assert "Nothing was generated" in processed.comments, processed.comments
    return processed.comments
