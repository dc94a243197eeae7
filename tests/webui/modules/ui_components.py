"""Mirrors modules/ui_components.py: the WebUI's gradio component subclasses.

The real file also sets ``gr.Dropdown.get_expected_parent`` at import; the stand-in does that in
modules/gradio_extensons.py install() so the harness can undo it."""

import gradio as gr


class FormComponent:
    # mirrors ui_components.FormComponent: lets the component sit inside a gradio Form
    def get_expected_parent(self):
        return gr.components.Form


class ToolButton(FormComponent, gr.Button):
    # mirrors ui_components.ToolButton: a small emoji button
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"


class ResizeHandleRow(gr.Row):
    # mirrors ui_components.ResizeHandleRow
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.elem_classes.append("resize-handle-row")

    def get_block_name(self):
        return "row"


class FormRow(FormComponent, gr.Row):
    def get_block_name(self):
        return "row"


class FormColumn(FormComponent, gr.Column):
    def get_block_name(self):
        return "column"


class FormGroup(FormComponent, gr.Group):
    def get_block_name(self):
        return "group"


class FormHTML(FormComponent, gr.HTML):
    def get_block_name(self):
        return "html"


class FormColorPicker(FormComponent, gr.ColorPicker):
    def get_block_name(self):
        return "colorpicker"


class DropdownMulti(FormComponent, gr.Dropdown):
    # mirrors ui_components.DropdownMulti: always multiselect
    def __init__(self, **kwargs):
        super().__init__(multiselect=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class DropdownEditable(FormComponent, gr.Dropdown):
    # mirrors ui_components.DropdownEditable: allows a custom value
    def __init__(self, **kwargs):
        super().__init__(allow_custom_value=True, **kwargs)

    def get_block_name(self):
        return "dropdown"


class InputAccordion(gr.Checkbox):
    # mirrors ui_components.InputAccordion: really a hidden checkbox (so it is an input whose value is
    # True when open), plus a gr.Accordion that the "with" statement enters; elem_id goes to the
    # accordion and "<elem_id>-checkbox" to the checkbox
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id")
        if self.accordion_id is None:
            self.accordion_id = f"input-accordion-{InputAccordion.global_index}"
            InputAccordion.global_index += 1

        checkbox_kwargs = {**kwargs, "elem_id": f"{self.accordion_id}-checkbox", "visible": False}
        super().__init__(value, **checkbox_kwargs)

        self.change(
            fn=None, _js='function(checked){ inputAccordionChecked("' + self.accordion_id + '", checked); }', inputs=[self]
        )

        accordion_kwargs = {
            **kwargs,
            "elem_id": self.accordion_id,
            "label": kwargs.get("label", "Accordion"),
            "elem_classes": ["input-accordion"],
            "open": value,
        }
        self.accordion = gr.Accordion(**accordion_kwargs)

    def extra(self):
        # mirrors InputAccordion.extra: a column shown in the accordion's label
        return gr.Column(elem_id=self.accordion_id + "-extra", elem_classes="input-accordion-extra", min_width=0)

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)

    def get_block_name(self):
        return "checkbox"
