"""Mirrors modules/script_callbacks.py: callback registration, ordering, invocation and removal.

Every ``*_callback`` invoker catches an exception from one callback, reports it with
errors.report and goes on with the next one, as the real file does. Callbacks are owned by the
file that registered them (found by walking the stack past this file), which is what
``remove_current_script_callbacks`` uses."""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

from modules import errors, extensions, shared, timer, util


def report_exception(c, job):
    # mirrors script_callbacks.report_exception
    errors.report(f"Error executing callback {job} for {c.script}", exc_info=True)


class ImageSaveParams:
    # mirrors script_callbacks.ImageSaveParams
    def __init__(self, image, p, filename, pnginfo):
        self.image = image
        self.p = p
        self.filename = filename
        self.pnginfo = pnginfo


class ExtraNoiseParams:
    # mirrors script_callbacks.ExtraNoiseParams
    def __init__(self, noise, x, xi):
        self.noise = noise
        self.x = x
        self.xi = xi


class CFGDenoiserParams:
    # mirrors script_callbacks.CFGDenoiserParams: what CFGDenoiser.forward is about to send to the model
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    # mirrors script_callbacks.CFGDenoisedParams
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    # mirrors script_callbacks.AfterCFGCallbackParams
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


class UiTrainTabParams:
    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


class ImageGridLoopParams:
    def __init__(self, imgs, cols, rows):
        self.imgs = imgs
        self.cols = cols
        self.rows = rows


@dataclasses.dataclass
class BeforeTokenCounterParams:
    prompt: str
    steps: int
    styles: list
    is_positive: bool = True


@dataclasses.dataclass
class ScriptCallback:
    script: str
    callback: Any
    name: str = "unnamed"


def add_callback(callbacks, fun, *, name=None, category="unknown", filename=None):
    # mirrors script_callbacks.add_callback: the owner is the first stack frame outside this file; the
    # name is "<extension or base>/<file>/<category>[/<name>]" made unique with "-N" suffixes
    if filename is None:
        stack = [frame for frame in inspect.stack() if frame.filename != __file__]
        filename = stack[0].filename if stack else "unknown file"

    extension = extensions.find_extension(filename)
    extension_name = extension.canonical_name if extension else "base"

    callback_name = f"{extension_name}/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f"/{name}"

    unique_name = callback_name
    for index in range(1000):
        if not any(x.name == unique_name for x in callbacks):
            break
        unique_name = f"{callback_name}-{index + 1}"

    callbacks.append(ScriptCallback(filename, fun, unique_name))


def sort_callbacks(category, unordered_callbacks, *, enable_user_sort=True):
    # mirrors script_callbacks.sort_callbacks: metadata.ini [callbacks/...] Before/After, then the
    # user's prioritized_callbacks_<category> option
    callbacks = unordered_callbacks.copy()
    by_name = {x.name: x for x in callbacks}

    instructions = {}
    for extension in extensions.extensions:
        for instruction in extension.metadata.list_callback_order_instructions():
            if instruction.name in by_name:
                instructions.setdefault(instruction.name, []).append(instruction)

    if instructions:
        dependencies = {callback.name: [] for callback in callbacks}
        for callback in callbacks:
            for instruction in instructions.get(callback.name, []):
                for after in instruction.after:
                    if after in by_name:
                        dependencies[callback.name].append(after)
                for before in instruction.before:
                    if before in by_name:
                        dependencies[before].append(callback.name)
        callbacks = [by_name[x] for x in util.topological_sort(dependencies)]

    if enable_user_sort:
        for name in reversed(getattr(shared.opts, "prioritized_callbacks_" + category, [])):
            index = next((i for i, callback in enumerate(callbacks) if callback.name == name), None)
            if index is not None:
                callbacks.insert(0, callbacks.pop(index))

    return callbacks


def ordered_callbacks(category, unordered_callbacks=None, *, enable_user_sort=True):
    # mirrors script_callbacks.ordered_callbacks: the sorted list is cached per category and rebuilt
    # only when the number of registered callbacks changes
    if unordered_callbacks is None:
        unordered_callbacks = callback_map.get("callbacks_" + category, [])

    if not enable_user_sort:
        return sort_callbacks(category, unordered_callbacks, enable_user_sort=False)

    callbacks = ordered_callbacks_map.get(category)
    if callbacks is not None and len(callbacks) == len(unordered_callbacks):
        return callbacks

    callbacks = sort_callbacks(category, unordered_callbacks)
    ordered_callbacks_map[category] = callbacks
    return callbacks


def enumerate_callbacks():
    for category, callbacks in callback_map.items():
        if category.startswith("callbacks_"):
            category = category[len("callbacks_") :]
        yield category, callbacks


callback_map = dict(
    callbacks_app_started=[],
    callbacks_model_loaded=[],
    callbacks_ui_tabs=[],
    callbacks_ui_train_tabs=[],
    callbacks_ui_settings=[],
    callbacks_before_image_saved=[],
    callbacks_image_saved=[],
    callbacks_extra_noise=[],
    callbacks_cfg_denoiser=[],
    callbacks_cfg_denoised=[],
    callbacks_cfg_after_cfg=[],
    callbacks_before_component=[],
    callbacks_after_component=[],
    callbacks_image_grid=[],
    callbacks_infotext_pasted=[],
    callbacks_script_unloaded=[],
    callbacks_before_ui=[],
    callbacks_on_reload=[],
    callbacks_list_optimizers=[],
    callbacks_list_unets=[],
    callbacks_before_token_counter=[],
)

ordered_callbacks_map = {}


def clear_callbacks():
    # mirrors script_callbacks.clear_callbacks
    for callback_list in callback_map.values():
        callback_list.clear()
    ordered_callbacks_map.clear()


def _invoke(category, job, *args, reverse=False):
    # the shared loop of the real invokers: call each, report and continue on an exception
    callbacks = ordered_callbacks(category)
    for c in reversed(callbacks) if reverse else callbacks:
        try:
            c.callback(*args)
        except Exception:
            report_exception(c, job)


def app_started_callback(demo, app):
    # mirrors script_callbacks.app_started_callback
    for c in ordered_callbacks("app_started"):
        try:
            c.callback(demo, app)
            timer.startup_timer.record(os.path.basename(c.script))
        except Exception:
            report_exception(c, "app_started_callback")


def app_reload_callback():
    _invoke("on_reload", "callbacks_on_reload")  # mirrors script_callbacks.app_reload_callback


def model_loaded_callback(sd_model):
    _invoke("model_loaded", "model_loaded_callback", sd_model)  # mirrors script_callbacks.model_loaded_callback


def ui_tabs_callback():
    # mirrors script_callbacks.ui_tabs_callback: concatenates the returned tab lists
    result = []
    for c in ordered_callbacks("ui_tabs"):
        try:
            result += c.callback() or []
        except Exception:
            report_exception(c, "ui_tabs_callback")
    return result


def ui_train_tabs_callback(params: UiTrainTabParams):
    _invoke("ui_train_tabs", "callbacks_ui_train_tabs", params)


def ui_settings_callback():
    _invoke("ui_settings", "ui_settings_callback")  # mirrors script_callbacks.ui_settings_callback


def before_image_saved_callback(params: ImageSaveParams):
    _invoke("before_image_saved", "before_image_saved_callback", params)


def image_saved_callback(params: ImageSaveParams):
    _invoke("image_saved", "image_saved_callback", params)


def extra_noise_callback(params: ExtraNoiseParams):
    _invoke("extra_noise", "callbacks_extra_noise", params)


def cfg_denoiser_callback(params: CFGDenoiserParams):
    _invoke("cfg_denoiser", "cfg_denoiser_callback", params)  # mirrors script_callbacks.cfg_denoiser_callback


def cfg_denoised_callback(params: CFGDenoisedParams):
    _invoke("cfg_denoised", "cfg_denoised_callback", params)  # mirrors script_callbacks.cfg_denoised_callback


def cfg_after_cfg_callback(params: AfterCFGCallbackParams):
    _invoke("cfg_after_cfg", "cfg_after_cfg_callback", params)  # mirrors script_callbacks.cfg_after_cfg_callback


def before_component_callback(component, **kwargs):
    # mirrors script_callbacks.before_component_callback
    for c in ordered_callbacks("before_component"):
        try:
            c.callback(component, **kwargs)
        except Exception:
            report_exception(c, "before_component_callback")


def after_component_callback(component, **kwargs):
    # mirrors script_callbacks.after_component_callback
    for c in ordered_callbacks("after_component"):
        try:
            c.callback(component, **kwargs)
        except Exception:
            report_exception(c, "after_component_callback")


def image_grid_callback(params: ImageGridLoopParams):
    _invoke("image_grid", "image_grid", params)


def infotext_pasted_callback(infotext: str, params: dict[str, Any]):
    _invoke("infotext_pasted", "infotext_pasted", infotext, params)  # mirrors script_callbacks.infotext_pasted_callback


def script_unloaded_callback():
    # mirrors script_callbacks.script_unloaded_callback: last registered runs first
    _invoke("script_unloaded", "script_unloaded", reverse=True)


def before_ui_callback():
    # mirrors script_callbacks.before_ui_callback: also in reverse registration order, as in the real file
    _invoke("before_ui", "before_ui", reverse=True)


def list_optimizers_callback():
    result = []
    _invoke("list_optimizers", "list_optimizers", result)
    return result


def list_unets_callback():
    result = []
    _invoke("list_unets", "list_unets", result)
    return result


def before_token_counter_callback(params: BeforeTokenCounterParams):
    _invoke("before_token_counter", "before_token_counter", params)


def remove_current_script_callbacks():
    # mirrors script_callbacks.remove_current_script_callbacks: drops every callback registered from the
    # calling file, from both the registry and the ordered cache
    stack = [frame for frame in inspect.stack() if frame.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    if filename == "unknown file":
        return
    for callback_list in list(callback_map.values()) + list(ordered_callbacks_map.values()):
        for callback in [cb for cb in callback_list if cb.script == filename]:
            callback_list.remove(callback)


def remove_callbacks_for_function(callback_func):
    # mirrors script_callbacks.remove_callbacks_for_function: compares with ==, so a bound method
    # matches another bound method of the same function and instance
    for callback_list in list(callback_map.values()) + list(ordered_callbacks_map.values()):
        for callback in [cb for cb in callback_list if cb.callback == callback_func]:
            callback_list.remove(callback)


def _register(category, callback, name):
    add_callback(callback_map["callbacks_" + category], callback, name=name, category=category)


# registration functions, each mirroring the same-named function of script_callbacks.py
def on_app_started(callback, *, name=None):
    _register("app_started", callback, name)


def on_before_reload(callback, *, name=None):
    _register("on_reload", callback, name)


def on_model_loaded(callback, *, name=None):
    _register("model_loaded", callback, name)


def on_ui_tabs(callback, *, name=None):
    _register("ui_tabs", callback, name)


def on_ui_train_tabs(callback, *, name=None):
    _register("ui_train_tabs", callback, name)


def on_ui_settings(callback, *, name=None):
    _register("ui_settings", callback, name)


def on_before_image_saved(callback, *, name=None):
    _register("before_image_saved", callback, name)


def on_image_saved(callback, *, name=None):
    _register("image_saved", callback, name)


def on_extra_noise(callback, *, name=None):
    _register("extra_noise", callback, name)


def on_cfg_denoiser(callback, *, name=None):
    _register("cfg_denoiser", callback, name)


def on_cfg_denoised(callback, *, name=None):
    _register("cfg_denoised", callback, name)


def on_cfg_after_cfg(callback, *, name=None):
    _register("cfg_after_cfg", callback, name)


def on_before_component(callback, *, name=None):
    _register("before_component", callback, name)


def on_after_component(callback, *, name=None):
    _register("after_component", callback, name)


def on_image_grid(callback, *, name=None):
    _register("image_grid", callback, name)


def on_infotext_pasted(callback, *, name=None):
    _register("infotext_pasted", callback, name)


def on_script_unloaded(callback, *, name=None):
    _register("script_unloaded", callback, name)


def on_before_ui(callback, *, name=None):
    _register("before_ui", callback, name)


def on_list_optimizers(callback, *, name=None):
    _register("list_optimizers", callback, name)


def on_list_unets(callback, *, name=None):
    _register("list_unets", callback, name)


def on_before_token_counter(callback, *, name=None):
    _register("before_token_counter", callback, name)
