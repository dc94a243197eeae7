"""The *Settings > MasaCtrl* section."""

from __future__ import annotations

import gradio as gr

from modules import shared

from ..inversion import InversionLevel

SECTION = ("masactrl", "MasaCtrl")
CACHE_OPTION = "masactrl_inversion_cache_size"
DEFAULT_CACHE_SIZE = 4
SAVE_MASKS_OPTION = "masactrl_save_masks"
READS_OPTION = "masactrl_inversion_reads"
READS_INFOTEXT = "MasaCtrl inversion reads"
"""Written for every inverted image; pasting it sets the option (the WebUI maps an option's
``infotext`` key to an override setting, infotext_utils.py)."""
READS_BEFORE = InversionLevel.CURRENT
"""What inverted images made before the option existed used (the default still)."""


def on_ui_settings() -> None:
    shared.opts.add_option(CACHE_OPTION, shared.OptionInfo(
        DEFAULT_CACHE_SIZE, "Inverted init images kept in memory for reuse (0: none)", gr.Slider,
        {"minimum": 0, "maximum": 32, "step": 1}, section=SECTION,
    ))
    shared.opts.add_option(SAVE_MASKS_OPTION, shared.OptionInfo(
        False, "Save the mask previews ('Show masks') with the images", section=SECTION,
    ))
    shared.opts.add_option(READS_OPTION, shared.OptionInfo(
        InversionLevel.CURRENT.value, "Inversion reads the model at", gr.Radio,
        {"choices": [level.value for level in InversionLevel]}, section=SECTION, infotext=READS_INFOTEXT,
    ).info("current level: where each inversion step starts; next level: where it climbs to, as DDIM inversion "
           "and the official MasaCtrl code do"))


def cache_size() -> int:
    return int(shared.opts.data.get(CACHE_OPTION, DEFAULT_CACHE_SIZE))


def save_masks() -> bool:
    return bool(shared.opts.data.get(SAVE_MASKS_OPTION, False))


def inversion_reads() -> InversionLevel:
    return InversionLevel.parse(shared.opts.data.get(READS_OPTION, InversionLevel.CURRENT.value))
