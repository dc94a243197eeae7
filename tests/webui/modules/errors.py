"""Stand-in for modules/errors.py: how the host reports an exception it catches and carries on from.

Both functions write to stderr as the real ones do. Stand-in addition: each call also appends
``(message, exception or None)`` to ``reports``, so tests can check that an extension's error was
caught and reported rather than silently lost or raised."""

from __future__ import annotations

import sys
import textwrap
import traceback
from typing import List, Tuple

reports: List[Tuple[str, BaseException | None]] = []


def report(message: str, *, exc_info: bool = False) -> None:
    """errors.py report: each line of ``message`` after "*** "; with ``exc_info`` the exception being
    handled follows, indented, and a "---" line. (The real one also keeps the last few exceptions for
    the sysinfo page, which the stand-in has not.)"""
    handled = sys.exc_info()[1] if exc_info else None
    reports.append((message, handled))
    lines = [f"*** {line}" for line in message.splitlines()]
    if exc_info:
        lines += [textwrap.indent(traceback.format_exc(), "    "), "---"]
    print("\n".join(lines), file=sys.stderr)


def display(e: Exception, task, *, full_traceback: bool = False) -> None:
    """errors.py display: "<task>: <exception type>", then the exception's traceback. ``full_traceback``
    (the frames above the handler) is accepted and ignored."""
    headline = f"{task or 'error'}: {type(e).__name__}"
    reports.append((headline, e))
    print(headline, "".join(traceback.format_exception(e)), sep="\n", end="", file=sys.stderr)
