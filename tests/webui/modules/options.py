"""Stand-in for modules/options.py: settings declarations (``OptionInfo``) and the settings object
(``Options``, which is ``shared.opts``).

Simplified: no saving to / loading from config.json, no settings-page ordering or categories, and
none of the real checks that only apply with command-line flags the stand-in does not have
(--freeze-settings, --hide-ui-dir-config) or to HTML-only entries."""

from __future__ import annotations

from typing import Any, Callable, Dict

from modules import errors
from modules.util import keep_arguments


class OptionInfo:
    """options.py OptionInfo: one setting's default, settings-page label and component, settings
    section, change callback, and ``infotext`` (the infotext key that carries it: pasting or overriding
    that key sets the setting)."""

    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None, *,
                 infotext: str | None = None, category_id: str | None = None):
        keep_arguments(self, locals())
        self.comment_after = ""

    def info(self, info: str) -> OptionInfo:
        """options.py OptionInfo.info: an explanation shown after the label (chainable)."""
        self.comment_after += f"<span class='info'>({info})</span>"
        return self


def options_section(section_identifier: tuple, options_dict: Dict[str, OptionInfo]) -> Dict[str, OptionInfo]:
    """options.py options_section: put every option of ``options_dict`` in the section ``(id, label)``;
    a third item of the identifier is the settings category. Returns the dict."""
    section, category = tuple(section_identifier[:2]), (section_identifier[2:] or (None,))[0]
    for info in options_dict.values():
        info.section = section
        if category is not None:
            info.category_id = category
    return options_dict


class Options:
    """options.py Options: ``opts.<key>`` reads the value set for a declared setting or else its
    default; assigning ``opts.<key>`` for a declared setting stores it in ``data``. Any other attribute
    behaves normally (an unknown name raises AttributeError)."""

    typemap = {int: float}

    def __init__(self, data_labels: Dict[str, OptionInfo]):
        object.__setattr__(self, "data_labels", data_labels)
        object.__setattr__(self, "data", {key: info.default for key, info in data_labels.items()})

    def __setattr__(self, key, value):
        if key in self.data or key in self.data_labels:
            self.data[key] = value
        else:
            object.__setattr__(self, key, value)

    def __getattr__(self, item):
        # only reached for names that are not ordinary attributes
        if item in ("data", "data_labels"):
            raise AttributeError(item)
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(f"'Options' object has no attribute '{item}'")

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """options.py Options.set, as the settings page uses it: False when the value is unchanged;
        otherwise store it and run the option's onchange, which on an exception is displayed and the
        old value put back (False again)."""
        previous = self.data.get(key)
        if previous == value:
            return False
        setattr(self, key, value)
        onchange = self.data_labels[key].onchange
        if not run_callbacks or onchange is None:
            return True
        try:
            onchange()
        except Exception as e:
            errors.display(e, f"changing setting {key} to {value}")
            setattr(self, key, previous)
            return False
        return True

    def get_default(self, key: str) -> Any:
        """options.py Options.get_default: the declared default, None for an undeclared key."""
        info = self.data_labels.get(key)
        return None if info is None else info.default

    def same_type(self, x: Any, y: Any) -> bool:
        """options.py Options.same_type: whether a new value fits a setting (None fits anything; an int
        fits a float setting)."""
        if x is None or y is None:
            return True
        return self.typemap.get(type(x), type(x)) == self.typemap.get(type(y), type(y))

    def onchange(self, key: str, func: Callable, call: bool = True) -> None:
        """options.py Options.onchange: make ``func`` the setting's change callback (and call it now)."""
        self.data_labels[key].onchange = func
        if call:
            func()

    def add_option(self, key: str, info: OptionInfo) -> None:
        """options.py Options.add_option (what extensions call from on_ui_settings): declare the setting;
        a value already set for it is kept."""
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def cast_value(self, key: str, value: Any) -> Any:
        """options.py Options.cast_value: an infotext string converted to the setting's type (that of its
        default, else of its current value); "False" is False for a bool setting."""
        candidates = (self.data_labels[key].default, getattr(self, key, None))
        reference = next((candidate for candidate in candidates if candidate is not None), None)
        if value is None or reference is None:
            return None
        kind = type(reference)
        return False if kind is bool and value == "False" else kind(value)
