"""Stand-in for modules/patches.py: replacing an attribute of a module or class (usually a function)
while remembering what was there, per patching party."""

from typing import Any, Dict, Tuple

_replaced: Dict[Tuple[Any, Any, str], Any] = {}
"""(patching party's key, patched object, attribute name) -> the value before the patch."""


def patch(key, obj, field, replacement):
    """patches.py patch: set ``obj.field`` to ``replacement`` and return what it was. ``key`` names who
    patches (a module's ``__name__`` or ``__file__``); the same party patching the same field twice
    without ``undo`` is an error (RuntimeError)."""
    slot = (key, obj, field)
    if slot in _replaced:
        raise RuntimeError(f"{key!r} has patched {field} already")
    before = _replaced[slot] = getattr(obj, field)
    setattr(obj, field, replacement)
    return before


def undo(key, obj, field):
    """patches.py undo: put back what ``patch`` replaced; RuntimeError if this party has no such patch."""
    if (key, obj, field) not in _replaced:
        raise RuntimeError(f"{key!r} has not patched {field}")
    setattr(obj, field, _replaced.pop((key, obj, field)))


def original(key, obj, field):
    """patches.py original: what ``patch`` replaced, or None when this party has not patched the field."""
    return _replaced.get((key, obj, field))
