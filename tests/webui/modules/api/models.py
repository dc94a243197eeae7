"""Mirrors modules/api/models.py: the request models generated from the processing classes'
constructor parameters (plus the API-only fields), and ScriptArg/ScriptInfo.

Simplified: the real file builds pydantic v1 models; here the request "model" is a field table
(name -> (type, default)) validated by ``parse_request`` with pydantic v2's TypeAdapter in lax mode.
Unknown keys are ignored (pydantic's default). Type errors produce FastAPI's 422 validation
response shape ({"detail": [{"loc", "msg", "type"}, ...]})."""

import inspect
from typing import Any, Optional

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img

API_NOT_ALLOWED = [
    "self",
    "kwargs",
    "sd_model",
    "outpath_samples",
    "outpath_grids",
    "sampler_index",
    "extra_generation_params",
    "overlay_images",
    "do_not_reload_embeddings",
    "seed_enable_extras",
    "prompt_for_display",
    "sampler_noise_scheduler_override",
    "ddim_discretize",
]

_type_names = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "Image": str,
    "list[str]": list[str],
    "dict[str, Any]": dict[str, Any],
    "Any": Any,
    "torch.Tensor": Any,
    "tuple": tuple,
}


class RequestValidationError(Exception):
    """Stand-in for fastapi.exceptions.RequestValidationError (handled by FastAPI's default 422 handler)."""

    def __init__(self, errors, body):
        super().__init__(errors)
        self._errors = errors
        self.body = body

    def errors(self):
        return self._errors


def _field_table(class_, additional_fields):
    # mirrors PydanticModelGenerator: every constructor parameter of the class and its bases (minus
    # API_NOT_ALLOWED) as an Optional field with the constructor default, then the additional fields
    parameters = {}
    for klass in [k for k in inspect.getmro(class_) if k is not object]:
        parameters = {**parameters, **inspect.signature(klass.__init__).parameters}
    table = {}
    for name, parameter in parameters.items():
        if name in API_NOT_ALLOWED:
            continue
        annotation = parameter.annotation
        field_type = _type_names.get(annotation, Any) if isinstance(annotation, str) else annotation
        default = None if isinstance(parameter.default, property) else parameter.default
        if default is inspect.Parameter.empty:
            default = None
        table[name] = (Optional[field_type], default)  # noqa: UP045 (a runtime type object)
    for item in additional_fields:
        table[item["key"]] = (item["type"], item["default"])
    return table


StableDiffusionTxt2ImgProcessingAPI = _field_table(
    StableDiffusionProcessingTxt2Img,
    [
        {"key": "sampler_index", "type": str, "default": "Euler"},
        {"key": "script_name", "type": str, "default": None},
        {"key": "script_args", "type": list, "default": []},
        {"key": "send_images", "type": bool, "default": True},
        {"key": "save_images", "type": bool, "default": False},
        {"key": "alwayson_scripts", "type": dict, "default": {}},
        {"key": "force_task_id", "type": str, "default": None},
        {"key": "infotext", "type": str, "default": None},
    ],
)

StableDiffusionImg2ImgProcessingAPI = _field_table(
    StableDiffusionProcessingImg2Img,
    [
        {"key": "sampler_index", "type": str, "default": "Euler"},
        {"key": "init_images", "type": list, "default": None},
        {"key": "denoising_strength", "type": float, "default": 0.75},
        {"key": "mask", "type": str, "default": None},
        {"key": "include_init_images", "type": bool, "default": False},
        {"key": "script_name", "type": str, "default": None},
        {"key": "script_args", "type": list, "default": []},
        {"key": "send_images", "type": bool, "default": True},
        {"key": "save_images", "type": bool, "default": False},
        {"key": "alwayson_scripts", "type": dict, "default": {}},
        {"key": "force_task_id", "type": str, "default": None},
        {"key": "infotext", "type": str, "default": None},
    ],
)


class ParsedRequest:
    """The validated request: attributes per field, plus the set of fields the client sent."""

    def __init__(self, values, fields_set):
        self.__dict__.update(values)
        self.__dict__["_fields_set"] = set(fields_set)

    def fields(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def parse_request(table, payload):
    values = {}
    errors = []
    for name, (field_type, default) in table.items():
        if name not in payload:
            values[name] = default.copy() if isinstance(default, (list, dict)) else default
            continue
        try:
            values[name] = TypeAdapter(field_type).validate_python(payload[name])
        except ValidationError as e:
            for error in e.errors():
                errors.append({"loc": ["body", name, *error.get("loc", ())], "msg": error.get("msg"), "type": error.get("type")})
    if errors:
        raise RequestValidationError(errors, payload)
    return ParsedRequest(values, [k for k in payload if k in table])


class ScriptArg(BaseModel):
    label: str = Field(default=None, title="Label")
    value: Any | None = Field(default=None, title="Value")
    minimum: Any | None = Field(default=None, title="Minimum")
    maximum: Any | None = Field(default=None, title="Minimum")
    step: Any | None = Field(default=None, title="Minimum")
    choices: list[str] | None = Field(default=None, title="Choices")


class ScriptInfo(BaseModel):
    name: str = Field(default=None, title="Name")
    is_alwayson: bool = Field(default=None, title="IsAlwayson")
    is_img2img: bool = Field(default=None, title="IsImg2img")
    args: list[ScriptArg] = Field(title="Arguments")
