"""Stand-in for modules/util.py. None of the real file's helpers (file listing, natural sort, the
topological sort of script dependencies) is needed by the stand-in; it holds one small helper of its
own instead, for the many plain argument-holder classes of scripts.py and script_callbacks.py."""

from __future__ import annotations

from typing import Any, Mapping


def keep_arguments(owner: object, arguments: Mapping[str, Any]) -> None:
    """Store a constructor's arguments (``locals()`` at the top of ``__init__``) as attributes of the
    same names, so a holder class states its fields once, in its signature."""
    for name, value in arguments.items():
        if name != "self" and not name.startswith("__"):
            setattr(owner, name, value)
