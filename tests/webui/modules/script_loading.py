"""Stand-in for modules/script_loading.py: running a script file as a module of its own."""

import importlib.util
import os
from types import ModuleType


def load_module(path: str) -> ModuleType:
    """script_loading.py load_module: execute the file as a new module named after the file ("x.py"),
    which is not entered in sys.modules; each call runs the file again (Reload UI relies on that)."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
