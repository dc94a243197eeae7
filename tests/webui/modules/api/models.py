"""Stand-in for modules/api/models.py of the WebUI: the request bodies of /sdapi/v1/txt2img and
/sdapi/v1/img2img, and the description of a script's arguments.

As in the real file, a request model is generated from the processing class's constructor: every
parameter of the class and of its bases (a base's default winning for a name both have), less the
ones the API does not take, becomes an optional field with the constructor's default; then the
API-only fields are added. Unknown keys are ignored. Simplified: the real models are pydantic v1
(field aliases, ``inflection`` names); these are pydantic v2 models, with numbers accepted for
text fields as v1 did."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img

NOT_IN_THE_API = frozenset(
    "self kwargs sd_model outpath_samples outpath_grids sampler_index extra_generation_params overlay_images "
    "do_not_reload_embeddings seed_enable_extras prompt_for_display sampler_noise_scheduler_override ddim_discretize".split()
)
"""api/models.py API_NOT_ALLOWED: constructor parameters a client cannot set."""

_ANNOTATION_NAMES = {"Any": Any, "str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict, "tuple": tuple}


def _field_type(annotation: Any) -> Any:
    """The field type for a constructor annotation (the stand-in's are strings): images travel as
    base64 text; what cannot be resolved is taken as it comes."""
    if annotation == "Image":
        return str
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"__builtins__": {}}, _ANNOTATION_NAMES)  # "list[str]", "dict[str, Any]"
        except Exception:
            return Any
    return Any if annotation is inspect.Parameter.empty else annotation


def _constructor_fields(processing_class: type) -> dict[str, tuple[Any, Any]]:
    merged: dict[str, inspect.Parameter] = {}
    for klass in inspect.getmro(processing_class)[:-1]:  # the class, then its bases; not object
        merged.update(inspect.signature(klass.__init__).parameters)
    fields = {}
    for name, parameter in merged.items():
        if name in NOT_IN_THE_API:
            continue
        default = parameter.default
        if isinstance(default, property) or default is inspect.Parameter.empty:
            default = None
        fields[name] = (_field_type(parameter.annotation) | None, default)
    return fields


_API_ONLY = {
    "sampler_index": (str, "Euler"), "script_name": (str | None, None), "script_args": (list, []),
    "send_images": (bool, True), "save_images": (bool, False), "alwayson_scripts": (dict, {}),
    "force_task_id": (str | None, None), "infotext": (str | None, None),
}
_IMG2IMG_ONLY = {
    "init_images": (list | None, None), "denoising_strength": (float, 0.75), "mask": (str | None, None),
    "include_init_images": (bool, False),
}

_REQUEST_CONFIG = ConfigDict(extra="ignore", coerce_numbers_to_str=True, arbitrary_types_allowed=True)

StableDiffusionTxt2ImgProcessingAPI = create_model(
    "StableDiffusionProcessingTxt2Img",
    __config__=_REQUEST_CONFIG,
    **{**_constructor_fields(StableDiffusionProcessingTxt2Img), **_API_ONLY},
)
StableDiffusionImg2ImgProcessingAPI = create_model(
    "StableDiffusionProcessingImg2Img",
    __config__=_REQUEST_CONFIG,
    **{**_constructor_fields(StableDiffusionProcessingImg2Img), **_API_ONLY, **_IMG2IMG_ONLY},
)


class ScriptArg(BaseModel):
    """api/models.py ScriptArg: one UI component of a script as /sdapi/v1/script-info lists it
    (ScriptRunner.create_script_ui_inner fills in the values after construction)."""

    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    """api/models.py ScriptInfo: a script's name, kind and arguments."""

    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg]
