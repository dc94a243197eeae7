"""Stand-in for modules/ui_components.py of the WebUI: its gradio 3 component subclasses.

Only the ones something here builds are kept: the form-friendly row and group, the small tool
button, the always-multiselect dropdown, the row with a resize handle, and InputAccordion (the
accordion that is also a checkbox input, which extensions use as their on/off switch). The real
file also points ``gr.Dropdown.get_expected_parent`` at the form; here
modules/gradio_extensons.py does that in ``install()``, so the harness can undo it."""

from __future__ import annotations

import gradio as gr


class _KeepsGradioName:
    """gradio 3 picks a block's front-end template by ``get_block_name()``, which defaults to the
    class name: a subclass must answer with the name of the gradio class it extends."""

    def get_block_name(self) -> str:
        gradio_class = next(k for k in type(self).__mro__ if k.__module__.startswith("gradio."))
        return gradio_class.__name__.lower()


class FormComponent(_KeepsGradioName):
    """ui_components.FormComponent: a block gradio may place inside a ``Form`` (the grey box gradio
    wraps around consecutive inputs) instead of closing the form before it."""

    def get_expected_parent(self):
        return gr.components.Form


class FormRow(FormComponent, gr.Row):
    """ui_components.FormRow: a ``gr.Row`` that does not break the surrounding form."""


class FormGroup(FormComponent, gr.Group):
    """ui_components.FormGroup: a ``gr.Group`` that does not break the surrounding form."""


class ToolButton(FormComponent, gr.Button):
    """ui_components.ToolButton: the small one-emoji button; it carries the ``tool`` CSS class
    in front of any classes the caller gives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, elem_classes=["tool", *kwargs.pop("elem_classes", [])], **kwargs)


class DropdownMulti(FormComponent, gr.Dropdown):
    """ui_components.DropdownMulti: a dropdown that always allows several values."""

    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)


class ResizeHandleRow(_KeepsGradioName, gr.Row):
    """ui_components.ResizeHandleRow: a row whose columns the page's JavaScript lets the user
    resize (found by its ``resize-handle-row`` class)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")


class InputAccordion(_KeepsGradioName, gr.Checkbox):
    """ui_components.InputAccordion: an accordion usable as an input that is True while open.

    The input is a hidden checkbox (``<id>-checkbox``); ``with`` enters a separate ``gr.Accordion``
    (elem_id ``<id>``, class ``input-accordion``, open as the value says) that holds the content.
    The page's JavaScript keeps the two in step: the checkbox's change handler has only a ``_js``
    part that opens or closes the accordion. Without an elem_id the id is a running number."""

    global_index = 0

    def __init__(self, value, **kwargs):
        given_id = kwargs.get("elem_id")
        if given_id is None:
            given_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1
        self.accordion_id = given_id

        super().__init__(value, **{**kwargs, "elem_id": f"{given_id}-checkbox", "visible": False})
        self.change(fn=None, _js=f'function(checked){{ inputAccordionChecked("{given_id}", checked); }}', inputs=[self])

        accordion_options = {"label": "Accordion", **kwargs}
        accordion_options.update(elem_id=given_id, elem_classes=["input-accordion"], open=value)
        self.accordion = gr.Accordion(**accordion_options)

    def extra(self) -> gr.Column:
        """InputAccordion.extra: a column shown in the accordion's title bar (``with acc.extra():``)."""
        return gr.Column(elem_id=f"{self.accordion_id}-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.accordion.__exit__(*exc_info)
