"""Mirrors modules/paths_internal.py: same names as modules/paths.py in the stand-in."""

from modules.paths import data_path, extensions_builtin_dir, extensions_dir, models_path, script_path  # noqa: F401
