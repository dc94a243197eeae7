"""Stand-in for modules/extensions.py: the installed extensions and the lookup of the extension a file
belongs to.

Simplified: the real host lists the folders under extensions/ and extensions-builtin/ and reads each
one's metadata.ini and git state; here the harness (or a test) registers extension folders with
``register_extension``, and no metadata.ini is read (no extension used with the stand-in has one)."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List

extensions: List[Extension] = []
"""Registered extensions, in registration order: the order their scripts load in."""
_by_path: Dict[str, Extension] = {}


@dataclasses.dataclass
class Extension:
    """extensions.py Extension: an extension folder. ``canonical_name`` is the folder's name in lower
    case, which the real host uses to name callbacks and dependencies."""

    name: str
    path: str
    enabled: bool = True
    is_builtin: bool = False

    @property
    def canonical_name(self) -> str:
        return self.name.lower()


def register_extension(path: str, *, name: str | None = None, is_builtin: bool = False) -> Extension:
    """Stand-in for the real extensions.list_extensions finding one folder: append it to ``extensions``."""
    path = os.path.realpath(path)
    extension = Extension(name or os.path.basename(path), path, is_builtin=is_builtin)
    extensions.append(extension)
    _by_path[path] = extension
    return extension


def clear_extensions() -> None:
    """Forget every registered extension (harness teardown)."""
    extensions.clear()
    _by_path.clear()


def active() -> List[Extension]:
    """extensions.py active: the enabled extensions (the real one also honours the settings and command
    line flags that disable all or all non-builtin extensions, which the stand-in does not offer)."""
    return [extension for extension in extensions if extension.enabled]


def find_extension(filename: str) -> Extension | None:
    """extensions.py find_extension: the registered extension whose folder holds ``filename``, looking in
    each parent folder in turn; None for a file of the WebUI itself."""
    folder = os.path.dirname(os.path.realpath(filename))
    while True:
        if folder in _by_path:
            return _by_path[folder]
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
