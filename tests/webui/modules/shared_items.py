"""Stand-in for modules/shared_items.py: the list of UI sections for the "UI item order" setting, and
the ``Shared`` module class that makes ``shared.sd_model`` a property."""

import sys

import modules.shared  # noqa: F401 - importing shared_items from shared: the module being set up

_BUILTIN_SECTIONS = tuple(
    "prompt image inpaint sampler accordions checkboxes dimensions cfg denoising seed batch override_settings".split()
)


def ui_reorder_categories():
    """shared_items.py ui_reorder_categories: the built-in sections of the txt2img/img2img settings
    column in their default order, then each new ``Script.section`` the loaded scripts name, then
    "scripts" (the section-less script UIs)."""
    from modules import scripts

    yield from _BUILTIN_SECTIONS
    named = [script.section for script in scripts.scripts_txt2img.scripts + scripts.scripts_img2img.scripts]
    yield from dict.fromkeys(name for name in named if isinstance(name, str) and name not in _BUILTIN_SECTIONS)
    yield "scripts"


class Shared(type(sys.modules["modules.shared"])):
    """shared_items.py Shared: the class of the ``modules.shared`` module object, so that reading
    ``shared.sd_model`` asks sd_models for the loaded model (None before one is loaded) and assigning it
    makes a model the loaded one."""

    @property
    def sd_model(self):
        from modules import sd_models

        return sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        from modules import sd_models

        sd_models.model_data.set_sd_model(value)


sys.modules["modules.shared"].__class__ = Shared
