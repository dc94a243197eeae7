"""The shape of the WebUI glue: the adapter package is the only code besides the script that
imports the WebUI, importing it registers nothing, and the script's bootstrap lines register each
callback once per load, Reload UI included."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "lib_masactrl" / "webui"


def imports_webui(path: pathlib.Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        if any(name.split(".")[0] in ("modules", "launch") for name in names):
            return True
    return False


def test_only_the_script_and_the_adapter_import_the_webui():
    """install.py, which the WebUI runs before loading extensions, uses its launch helpers."""
    files = [*ROOT.glob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "lib_masactrl").rglob("*.py")]
    importers = {path.relative_to(ROOT).as_posix() for path in files if imports_webui(path)}
    adapter = {path.relative_to(ROOT).as_posix() for path in ADAPTER.glob("*.py")}
    assert importers - adapter == {"install.py", "scripts/masactrl.py"}
    assert "lib_masactrl/webui/generation.py" in importers


def test_importing_the_adapter_registers_nothing():
    code = "\n".join([
        "import importlib, pkgutil, lib_masactrl.webui as adapter",
        "from modules import script_callbacks",
        "for module in pkgutil.iter_modules(adapter.__path__):",
        "    importlib.import_module(f'lib_masactrl.webui.{module.name}')",
        "registered = [c for callbacks in script_callbacks.callback_map.values() for c in callbacks]",
        "assert registered == [], registered",
    ])
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "webui")])
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": path})


def masactrl_callbacks():
    from modules import script_callbacks

    return sorted(
        (category, callback.callback.__qualname__)
        for category, callbacks in script_callbacks.callback_map.items()
        for callback in callbacks
        if callback.callback.__module__.startswith("lib_masactrl")
    )


def test_reload_ui_registers_each_callback_once_and_leaves_no_patch(host, sd15):
    from engine_helpers import module_state

    expected = [
        ("callbacks_before_ui", "register_axes"),
        ("callbacks_cfg_denoiser", "on_cfg_denoiser"),
        ("callbacks_infotext_pasted", "on_infotext_pasted"),
        ("callbacks_model_loaded", "on_model_loaded"),
        ("callbacks_script_unloaded", "on_script_unloaded"),
        ("callbacks_ui_settings", "on_ui_settings"),
    ]
    assert masactrl_callbacks() == expected
    before = module_state(sd15)
    for _ in range(2):
        host.reload_scripts()
        assert masactrl_callbacks() == expected
    processed = host.txt2img("a corgi", steps=2, batch_size=2, width=64, height=64, script_args={"MasaCtrl": [True, "a cat"]})
    assert processed.all_prompts == ["a cat", "a corgi"]
    assert module_state(sd15) == before
    labels = [option.label for option in host.script("X/Y/Z plot").current_axis_options]
    assert labels.count("[MasaCtrl] Start step") == 1
