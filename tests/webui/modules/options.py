"""Mirrors modules/options.py: OptionInfo, OptionHTML, options_section, Options, categories."""

import json
from dataclasses import dataclass

from modules import errors
from modules.shared_cmd_options import cmd_opts


class OptionInfo:
    # mirrors modules/options.py OptionInfo: a setting's default, label, gradio component and section
    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    # the chainable decorators of the real OptionInfo: each appends HTML to a comment and returns self
    def link(self, label, url):
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label, js_func):
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html):
        self.comment_after += html
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    # mirrors modules/options.py OptionHTML: a text-only, never saved entry
    def __init__(self, text):
        super().__init__(str(text).strip(), label="", component=None)
        self.do_not_save = True


def options_section(section_identifier, options_dict):
    # mirrors modules/options.py options_section: a 2-tuple is (id, label); a 3-tuple adds a category id
    for info in options_dict.values():
        if len(section_identifier) == 2:
            info.section = section_identifier
        elif len(section_identifier) == 3:
            info.section = section_identifier[0:2]
            info.category_id = section_identifier[2]
    return options_dict


options_builtin_fields = {"data_labels", "data", "restricted_opts", "typemap"}


class Options:
    # mirrors modules/options.py Options: attribute access reads/writes ``data`` for known keys, falling
    # back to the registered default; unknown attributes raise AttributeError. The freeze checks read
    # cmd_opts like the real one.
    typemap = {int: float}

    def __init__(self, data_labels, restricted_opts):
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in self.data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts

    def __setattr__(self, key, value):
        if key in options_builtin_fields:
            return super().__setattr__(key, value)

        if self.data is not None and (key in self.data or key in self.data_labels):
            assert not cmd_opts.freeze_settings, "changing settings is disabled"
            info = self.data_labels.get(key, None)
            if info is not None and info.do_not_save:
                return
            component_args = info.component_args if info else None
            if isinstance(component_args, dict) and component_args.get("visible", True) is False:
                raise RuntimeError(f"not possible to set '{key}' because it is restricted")
            if cmd_opts.hide_ui_dir_config and key in self.restricted_opts:
                raise RuntimeError(f"not possible to set '{key}' because it is restricted with --hide_ui_dir_config")
            self.data[key] = value
            return

        return super().__setattr__(key, value)

    def __getattr__(self, item):
        if item in options_builtin_fields:
            return super().__getattribute__(item)
        if self.data is not None and item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        return super().__getattribute__(item)

    def set(self, key, value, is_api=False, run_callbacks=True):
        # mirrors modules/options.py Options.set: returns whether the value changed; onchange errors revert
        previous = self.data.get(key, None)
        if previous == value:
            return False
        option = self.data_labels[key]
        if option.do_not_save:
            return False
        if is_api and option.restrict_api:
            return False
        try:
            setattr(self, key, value)
        except RuntimeError:
            return False
        if run_callbacks and option.onchange is not None:
            try:
                option.onchange()
            except Exception as e:
                errors.display(e, f"changing setting {key} to {value}")
                setattr(self, key, previous)
                return False
        return True

    def get_default(self, key):
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def same_type(self, x, y):
        if x is None or y is None:
            return True
        return self.typemap.get(type(x), type(x)) == self.typemap.get(type(y), type(y))

    def onchange(self, key, func, call=True):
        self.data_labels.get(key).onchange = func
        if call:
            func()

    def add_option(self, key, info):
        # mirrors modules/options.py Options.add_option: registers the label; keeps an existing value
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def dumpjson(self):
        return json.dumps({k: self.data.get(k, v.default) for k, v in self.data_labels.items()}, default=str)

    def reorder(self):
        pass  # simplified: the settings page order is irrelevant to the stand-in

    def cast_value(self, key, value):
        # mirrors modules/options.py Options.cast_value: converts to the type of the default ("False" -> False)
        if value is None:
            return None
        default_value = self.data_labels[key].default
        if default_value is None:
            default_value = getattr(self, key, None)
        if default_value is None:
            return None
        expected_type = type(default_value)
        if expected_type is bool and value == "False":
            return False
        return expected_type(value)


@dataclass
class OptionsCategory:
    id: str
    label: str


class OptionsCategories:
    # mirrors modules/options.py OptionsCategories
    def __init__(self):
        self.mapping = {}

    def register_category(self, category_id, label):
        if category_id in self.mapping:
            return category_id
        self.mapping[category_id] = OptionsCategory(category_id, label)


categories = OptionsCategories()
