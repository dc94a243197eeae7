"""The *Settings > MasaCtrl* section."""

from __future__ import annotations

import gradio as gr

from modules import shared

SECTION = ("masactrl", "MasaCtrl")
CACHE_OPTION = "masactrl_inversion_cache_size"
DEFAULT_CACHE_SIZE = 4
SAVE_MASKS_OPTION = "masactrl_save_masks"


def on_ui_settings() -> None:
    shared.opts.add_option(CACHE_OPTION, shared.OptionInfo(
        DEFAULT_CACHE_SIZE, "Inverted init images kept in memory for reuse (0: none)", gr.Slider,
        {"minimum": 0, "maximum": 32, "step": 1}, section=SECTION,
    ))
    shared.opts.add_option(SAVE_MASKS_OPTION, shared.OptionInfo(
        False, "Save the mask previews ('Show masks') with the images", section=SECTION,
    ))


def cache_size() -> int:
    return int(shared.opts.data.get(CACHE_OPTION, DEFAULT_CACHE_SIZE))


def save_masks() -> bool:
    return bool(shared.opts.data.get(SAVE_MASKS_OPTION, False))
