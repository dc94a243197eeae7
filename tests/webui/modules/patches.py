"""Mirrors modules/patches.py: replace a function in a module or class, remembering the original per
caller key (patch / undo / original)."""

from collections import defaultdict


def patch(key, obj, field, replacement):
    # mirrors patches.patch: raises if this key already patched obj.field; returns the original
    patch_key = (obj, field)
    if patch_key in originals[key]:
        raise RuntimeError(f"patch for {field} is already applied")

    original_func = getattr(obj, field)
    originals[key][patch_key] = original_func

    setattr(obj, field, replacement)

    return original_func


def undo(key, obj, field):
    # mirrors patches.undo: raises if there is no such patch
    patch_key = (obj, field)

    if patch_key not in originals[key]:
        raise RuntimeError(f"there is no patch for {field} to undo")

    original_func = originals[key].pop(patch_key)
    setattr(obj, field, original_func)

    return None


def original(key, obj, field):
    # mirrors patches.original
    patch_key = (obj, field)

    return originals[key].get(patch_key, None)


originals = defaultdict(dict)
