"""Stand-in for modules/script_callbacks.py: the host-wide registry of extension callbacks.

Every kind of event (a *category*) keeps its registrations in ``callback_map["callbacks_<category>"]``,
in registration order. For each category the module offers ``on_<category>(callback, *, name=None)``
to register and ``<category>_callback(...)`` to fire (the real file's names, including its one odd
pair: category ``on_reload`` is registered with ``on_before_reload`` and fired by
``app_reload_callback``). Both families are generated from the table ``_CATEGORIES`` below instead of
being written out one by one.

Firing calls every callback in turn; an exception is reported with ``errors.report`` (with the
traceback) and the next callback still runs, as in the real host. ``script_unloaded`` and
``before_ui`` run newest first, as the real invokers do; ``list_optimizers`` / ``list_unets`` hand every
callback the same list to append to and return it; ``ui_tabs`` joins the lists the callbacks return.

Simplified: the real host orders each category by the extensions' metadata.ini ``[callbacks/...]``
sections and the user's ``prioritized_callbacks_*`` settings; no extension used here has either, so
registration order is kept as is.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable

from modules import errors, extensions
from modules.util import keep_arguments


@dataclasses.dataclass
class ScriptCallback:
    """modules/script_callbacks.py ScriptCallback: a registered function with the file that registered
    it (``script``, named in error reports) and a name unique within its category."""

    script: str
    callback: Callable
    name: str = "unnamed"


class ImageSaveParams:
    """script_callbacks.py ImageSaveParams: an image about to be saved (before_image_saved) or just saved
    (image_saved); ``pnginfo`` is the dict of text chunks."""

    def __init__(self, image, p, filename, pnginfo):
        keep_arguments(self, locals())


class ExtraNoiseParams:
    """script_callbacks.py ExtraNoiseParams: the noise a sampler is about to add for img2img's extra noise
    (``x`` the latent, ``xi`` the noised one); a callback may replace ``noise``."""

    def __init__(self, noise, x, xi):
        keep_arguments(self, locals())


class CFGDenoiserParams:
    """script_callbacks.py CFGDenoiserParams: what CFGDenoiser.forward is about to send to the model (one
    batch of cond and uncond rows); callbacks may replace any field, ``denoiser`` is the CFGDenoiser."""

    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        keep_arguments(self, locals())


class CFGDenoisedParams:
    """script_callbacks.py CFGDenoisedParams: the model's output for all rows, before they are combined."""

    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        keep_arguments(self, locals())


class AfterCFGCallbackParams:
    """script_callbacks.py AfterCFGCallbackParams: the guided (combined) prediction of one step."""

    def __init__(self, x, sampling_step, total_sampling_steps):
        keep_arguments(self, locals())


class ImageGridLoopParams:
    """script_callbacks.py ImageGridLoopParams: the images of a grid and its shape, before it is drawn."""

    def __init__(self, imgs, cols, rows):
        keep_arguments(self, locals())


class BeforeTokenCounterParams:
    """script_callbacks.py BeforeTokenCounterParams: a prompt the UI's token counter is about to count
    (a dataclass in the real file)."""

    def __init__(self, prompt: str, steps: int, styles: list, is_positive: bool = True):
        keep_arguments(self, locals())


# category -> how its callbacks are fired (see the module docstring)
_CATEGORIES: dict[str, str] = {
    **dict.fromkeys("app_started model_loaded ui_settings infotext_pasted on_reload".split(), "each"),
    **dict.fromkeys("cfg_denoiser cfg_denoised cfg_after_cfg extra_noise".split(), "each"),
    **dict.fromkeys("before_image_saved image_saved image_grid before_token_counter".split(), "each"),
    **dict.fromkeys("before_component after_component".split(), "each"),
    **dict.fromkeys("script_unloaded before_ui".split(), "newest first"),
    **dict.fromkeys("list_optimizers list_unets".split(), "fill a list"),
    "ui_tabs": "join lists",
}
_PUBLIC_NAMES = {"on_reload": ("on_before_reload", "app_reload_callback")}

callback_map: dict[str, list[ScriptCallback]] = {f"callbacks_{category}": [] for category in _CATEGORIES}


def _registering_file() -> str:
    """The file of the innermost caller outside this module: the script that registers a callback."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else "unknown file"


def _register(category: str, callback: Callable, name: str | None) -> None:
    """modules/script_callbacks.py add_callback: the callback's name is
    ``<extension or "base">/<file>/<category>[/<name>]``, with ``-1``, ``-2``... added while taken."""
    filename = _registering_file()
    extension = extensions.find_extension(filename)
    stem = "/".join([extension.canonical_name if extension else "base", os.path.basename(filename), category])
    if name is not None:
        stem += f"/{name}"
    registered = callback_map[f"callbacks_{category}"]
    taken = {existing.name for existing in registered}
    unique, counter = stem, 0
    while unique in taken:
        counter += 1
        unique = f"{stem}-{counter}"
    registered.append(ScriptCallback(filename, callback, unique))


def _fire(category: str, job: str, *args: Any, **kwargs: Any) -> Any:
    """One invoker of the real file: call each registered callback, report and skip a failing one."""
    style = _CATEGORIES[category]
    callbacks = list(callback_map[f"callbacks_{category}"])
    if style == "newest first":
        callbacks.reverse()
    gathered: list = []
    if style == "fill a list":
        args = (gathered,)
    for entry in callbacks:
        try:
            returned = entry.callback(*args, **kwargs)
        except Exception:
            errors.report(f"Error executing callback {job} for {entry.script}", exc_info=True)
            continue
        if style == "join lists":
            gathered += returned or []
    return gathered if style in ("fill a list", "join lists") else None


def _publish(category: str) -> None:
    register_name, fire_name = _PUBLIC_NAMES.get(category, (f"on_{category}", f"{category}_callback"))

    def register(callback: Callable, *, name: str | None = None) -> None:
        _register(category, callback, name)

    def fire(*args: Any, **kwargs: Any) -> Any:
        return _fire(category, fire_name, *args, **kwargs)

    register.__doc__ = f"modules/script_callbacks.py {register_name}: add ``callback`` to the {category!r} callbacks."
    fire.__doc__ = f"modules/script_callbacks.py {fire_name}: run the {category!r} callbacks ({_CATEGORIES[category]})."
    for function, public in ((register, register_name), (fire, fire_name)):
        function.__name__ = function.__qualname__ = public
        globals()[public] = function


for _category in _CATEGORIES:
    _publish(_category)


def clear_callbacks() -> None:
    """modules/script_callbacks.py clear_callbacks: forget every registration (load_scripts starts so)."""
    for registered in callback_map.values():
        registered.clear()


def remove_callbacks_for_function(callback_func: Callable) -> None:
    """modules/script_callbacks.py remove_callbacks_for_function: drop every registration of
    ``callback_func`` in any category. Compared with ``==``, so another bound method of the same
    function and instance matches too."""
    for registered in callback_map.values():
        registered[:] = [entry for entry in registered if entry.callback != callback_func]
