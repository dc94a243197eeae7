"""Mirrors modules/paths.py + modules/paths_internal.py: the WebUI root directory and friends.

Simplified: the stand-in's root is tests/webui (it holds this ``modules`` package, a ``scripts``
directory with only the X/Y/Z plot script, and no models)."""

import os

script_path = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
data_path = script_path
models_path = os.path.join(script_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
