"""Mirrors modules/gradio_extensons.py (sic): the WebUI's patches of gradio component constructors.

IOComponent.__init__ pops ``tooltip=`` (stored as ``webui_tooltip``) and calls the before/after
component hooks of the current ScriptRunner and of script_callbacks around the original constructor;
BlockContext.__init__ does the same minus the tooltip. The stand-in applies them in install() and
removes them in uninstall() instead of at import."""

import gradio as gr

from modules import script_callbacks, scripts

_originals = {}


def add_classes_to_gradio_component(comp):
    # mirrors gradio_extensons.add_classes_to_gradio_component
    comp.elem_classes = [f"gradio-{comp.get_block_name()}", *(comp.elem_classes or [])]
    if getattr(comp, "multiselect", False):
        comp.elem_classes.append("multiselect")


def IOComponent_init(self, *args, **kwargs):
    # mirrors gradio_extensons.IOComponent_init
    self.webui_tooltip = kwargs.pop("tooltip", None)
    if scripts.scripts_current is not None:
        scripts.scripts_current.before_component(self, **kwargs)
    script_callbacks.before_component_callback(self, **kwargs)
    result = _originals["IOComponent.__init__"](self, *args, **kwargs)
    add_classes_to_gradio_component(self)
    script_callbacks.after_component_callback(self, **kwargs)
    if scripts.scripts_current is not None:
        scripts.scripts_current.after_component(self, **kwargs)
    return result


def BlockContext_init(self, *args, **kwargs):
    # mirrors gradio_extensons.BlockContext_init
    if scripts.scripts_current is not None:
        scripts.scripts_current.before_component(self, **kwargs)
    script_callbacks.before_component_callback(self, **kwargs)
    result = _originals["BlockContext.__init__"](self, *args, **kwargs)
    add_classes_to_gradio_component(self)
    script_callbacks.after_component_callback(self, **kwargs)
    if scripts.scripts_current is not None:
        scripts.scripts_current.after_component(self, **kwargs)
    return result


def install():
    if _originals:
        return
    from modules.ui_components import FormComponent

    _originals["IOComponent.__init__"] = gr.components.IOComponent.__init__
    _originals["BlockContext.__init__"] = gr.blocks.BlockContext.__init__
    _originals["Dropdown.get_expected_parent"] = gr.Dropdown.__dict__.get("get_expected_parent")
    gr.components.IOComponent.__init__ = IOComponent_init
    gr.blocks.BlockContext.__init__ = BlockContext_init
    gr.Dropdown.get_expected_parent = FormComponent.get_expected_parent  # mirrors modules/ui_components.py


def uninstall():
    if not _originals:
        return
    gr.components.IOComponent.__init__ = _originals.pop("IOComponent.__init__")
    gr.blocks.BlockContext.__init__ = _originals.pop("BlockContext.__init__")
    previous = _originals.pop("Dropdown.get_expected_parent")
    if previous is None:
        del gr.Dropdown.get_expected_parent
    else:
        gr.Dropdown.get_expected_parent = previous
