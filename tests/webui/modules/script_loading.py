"""Mirrors modules/script_loading.py: load_module executes a file as a fresh, unregistered module."""

import importlib.util
import os

loaded_scripts = {}


def load_module(path):
    # mirrors script_loading.load_module: the module is named after the file name ("x.py") and is not
    # put into sys.modules; every call executes the file again
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module
