"""Mirrors the parts of modules/shared_items.py the UI uses, and its ``Shared`` module class that makes
``shared.sd_model`` a property over ``sd_models.model_data``."""

import sys

import modules.shared  # noqa: F401 - the module whose class is replaced below (may be partially imported)

ui_reorder_categories_builtin_items = [
    "prompt",
    "image",
    "inpaint",
    "sampler",
    "accordions",
    "checkboxes",
    "dimensions",
    "cfg",
    "denoising",
    "seed",
    "batch",
    "override_settings",
]


def ui_reorder_categories():
    # mirrors shared_items.ui_reorder_categories: built-in sections, then new sections named by scripts,
    # then "scripts"
    from modules import scripts

    yield from ui_reorder_categories_builtin_items

    sections = {}
    for script in scripts.scripts_txt2img.scripts + scripts.scripts_img2img.scripts:
        if isinstance(script.section, str) and script.section not in ui_reorder_categories_builtin_items:
            sections[script.section] = 1

    yield from sections

    yield "scripts"


def sd_unet_items():
    # mirrors shared_items.sd_unet_items
    import modules.sd_unet

    return ["Automatic"] + [x.label for x in modules.sd_unet.unet_options] + ["None"]


def refresh_unet_list():
    # mirrors shared_items.refresh_unet_list
    import modules.sd_unet

    modules.sd_unet.list_unets()


def list_checkpoint_tiles(use_short=False):
    import modules.sd_models

    return modules.sd_models.checkpoint_tiles(use_short)


def list_samplers():
    import modules.sd_samplers

    return modules.sd_samplers.all_samplers


def reload_hypernetworks():
    pass


class Shared(sys.modules["modules.shared"].__class__):
    # mirrors shared_items.Shared: shared.sd_model reads and writes sd_models.model_data
    sd_model_val = None

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules["modules.shared"].__class__ = Shared
