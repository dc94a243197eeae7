"""Stand-in for modules/gradio_extensons.py (sic) of the WebUI: what the host changes in gradio 3
classes at import time, here applied by ``install()`` and taken back by ``uninstall()`` so that a
test process can start and stop hosts.

The changes that anything here relies on:
- every input component and every layout block, when constructed, is announced to the current
  ScriptRunner's and to script_callbacks' before/after-component hooks (the real
  ``IOComponent_init`` / ``BlockContext_init``) and gets the ``gradio-<kind>`` CSS class;
- an input component accepts ``tooltip=``, kept as ``webui_tooltip``;
- ``gr.Dropdown`` may sit inside a form (set at import by the real modules/ui_components.py).
Left out: the page-config patches (``Block_get_config`` sending the tooltip to the page, where the
WebUI's JavaScript shows it, and ``Blocks_get_config_file``): nothing here serves a page."""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from modules import script_callbacks, scripts

_saved: dict[tuple[type, str], Any] = {}
"""(class, attribute) -> what the class itself held before install(); _ABSENT when it inherited it."""

_ABSENT = object()


def _announced(original_init: Callable, takes_tooltip: bool) -> Callable:
    """A constructor that runs ``original_init`` between the component hooks, in the real order:
    ScriptRunner before, callbacks before, construction, CSS class, callbacks after, ScriptRunner
    after. The hooks see the constructor's keyword arguments (elem_id among them)."""

    def init(self, *args, **kwargs):
        if takes_tooltip:
            self.webui_tooltip = kwargs.pop("tooltip", None)
        runner = scripts.scripts_current
        if runner is not None:
            runner.before_component(self, **kwargs)
        script_callbacks.before_component_callback(self, **kwargs)
        result = original_init(self, *args, **kwargs)
        _add_css_classes(self)
        script_callbacks.after_component_callback(self, **kwargs)
        if runner is not None:
            runner.after_component(self, **kwargs)
        return result

    return init


def _add_css_classes(block) -> None:
    """gradio_extensons.add_classes_to_gradio_component: ``gradio-<block name>`` first, then the
    block's own classes, plus ``multiselect`` for a multiselect dropdown."""
    block.elem_classes = [f"gradio-{block.get_block_name()}", *(block.elem_classes or [])]
    if getattr(block, "multiselect", False):
        block.elem_classes.append("multiselect")


def _form_parent(_original) -> Callable:
    from modules.ui_components import FormComponent

    return FormComponent.get_expected_parent


_PATCHES = (
    (gr.components.IOComponent, "__init__", lambda original: _announced(original, takes_tooltip=True)),
    (gr.blocks.BlockContext, "__init__", lambda original: _announced(original, takes_tooltip=False)),
    (gr.Dropdown, "get_expected_parent", _form_parent),
)


def install() -> None:
    """Apply the patches (once; a second call does nothing)."""
    if _saved:
        return
    for owner, name, make in _PATCHES:
        _saved[owner, name] = owner.__dict__.get(name, _ABSENT)
        setattr(owner, name, make(getattr(owner, name)))


def uninstall() -> None:
    """Give every patched class back exactly what it had."""
    for (owner, name), before in _saved.items():
        if before is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, before)
    _saved.clear()
