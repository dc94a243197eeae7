"""Stand-in for modules/api/api.py of the WebUI: POST /sdapi/v1/txt2img and /sdapi/v1/img2img,
and the app's exception handling, without FastAPI or HTTP: ``Api.request(path, payload)`` answers
``(status_code, json_body)``.

Kept from the real routes (``Api.text2imgapi`` / ``Api.img2imgapi``): the body validated by the
request models (modules/api/models.py; a bad field is FastAPI's 422 ``{"detail": [...]}``); the
sampler and scheduler resolved from ``sampler_name`` / ``sampler_index`` / ``scheduler`` (an unknown
sampler: 400); ``do_not_save_*`` from ``save_images``; script arguments starting from each script's
UI defaults, ``script_name`` + ``script_args`` for a selectable script, ``alwayson_scripts``
``{"<title>": {"args": [...]}}`` laid positionally over the script's defaults; ``p.is_api``;
the generation under the queue lock as a ``shared.state`` job; images in and out as base64 PNG
(a string image passes through unchanged); ``info`` = ``Processed.js()``.
Kept from the real ``api_middleware``: any other exception becomes ``{"error", "detail", "body",
"errors"}`` with the exception's own ``status_code`` (500 without one), and only an exception that
is not an ``HTTPException`` is reported with its traceback.
Left out: the task queue (``force_task_id`` only reaches ``p``), fetching images from URLs,
JPEG/WebP output, and ``infotext`` (raises NotImplementedError)."""

from __future__ import annotations

import base64
import io
import threading
from contextlib import closing
from typing import Any, NamedTuple

import gradio as gr
from fastapi.exceptions import HTTPException
from PIL import PngImagePlugin
from pydantic import BaseModel, ValidationError

from modules import errors, images, processing, scripts, sd_samplers, shared
from modules.api import models


class _Route(NamedTuple):
    tab: str
    body_model: type[BaseModel]
    processing_class: type


_ROUTES = {
    f"/sdapi/v1/{route.tab}": route
    for route in (
        _Route("txt2img", models.StableDiffusionTxt2ImgProcessingAPI, processing.StableDiffusionProcessingTxt2Img),
        _Route("img2img", models.StableDiffusionImg2ImgProcessingAPI, processing.StableDiffusionProcessingImg2Img),
    )
}

_NOT_FOR_THE_CONSTRUCTOR = ("script_name", "script_args", "alwayson_scripts", "infotext", "send_images", "save_images",
                            "include_init_images")


def _runner(tab: str) -> scripts.ScriptRunner:
    return scripts.scripts_img2img if tab == "img2img" else scripts.scripts_txt2img


def script_name_to_index(name: str, candidates: list) -> int:
    """api.script_name_to_index: the script whose title matches ``name`` ignoring case, else 422."""
    titles = [script.title().lower() for script in candidates]
    if name.lower() not in titles:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found")
    return titles.index(name.lower())


def decode_base64_to_image(encoding: str):
    """api.decode_base64_to_image: plain base64 or a ``data:image/...;base64,`` URL; anything
    undecodable is a 500 "Invalid encoded image". The stand-in never fetches URLs."""
    if encoding.startswith(("http://", "https://")):
        raise HTTPException(status_code=500, detail="Requests not allowed")
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        return images.read(io.BytesIO(base64.b64decode(encoding)))
    except Exception as error:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from error


def encode_pil_to_base64(image) -> str:
    """api.encode_pil_to_base64 for the default PNG samples format: the image's text info goes into
    PNG text chunks. A string (an extension's ready-made base64 file) is returned as it is."""
    if isinstance(image, str):
        return image
    if shared.opts.samples_format.lower() != "png":
        raise NotImplementedError("the stand-in API encodes PNG only")
    texts = {key: value for key, value in image.info.items() if isinstance(key, str) and isinstance(value, str)}
    chunks = None
    if texts:
        chunks = PngImagePlugin.PngInfo()
        for key, value in texts.items():
            chunks.add_text(key, value)
    with io.BytesIO() as buffer:
        image.save(buffer, format="PNG", pnginfo=chunks)
        return base64.b64encode(buffer.getvalue()).decode()


def _exception_response(path: str, error: Exception) -> tuple[int, dict[str, Any]]:
    """api_middleware's handle_exception; call it inside the ``except`` so the report has the
    traceback. Only attributes of the exception object itself count (``vars``)."""
    own = vars(error)
    body = {"error": type(error).__name__, "detail": own.get("detail", ""), "body": own.get("body", ""), "errors": str(error)}
    if not isinstance(error, HTTPException):
        errors.report(f"API error: POST: {path} {body}", exc_info=True)
    return own.get("status_code", 500), body


class Api:
    """api.Api, reduced to the two generation routes."""

    def __init__(self, queue_lock=None):
        """Like the real constructor: a WebUI started without its UI (``--nowebui``) has script
        runners with no scripts yet, so the UI is built here; then every script's ``ui()`` runs
        again to read the default value of each argument."""
        self.queue_lock = queue_lock or threading.RLock()
        if not (scripts.scripts_txt2img.scripts and scripts.scripts_img2img.scripts):
            from modules import ui

            ui.create_ui()
        self.default_script_args = {}
        for tab in ("txt2img", "img2img"):
            runner = _runner(tab)
            if not runner.scripts:
                runner.initialize_scripts(tab == "img2img")
            self.default_script_args[tab] = self._ui_defaults(runner)

    @staticmethod
    def _ui_defaults(runner) -> list:
        """Api.init_default_script_args: index 0 (no selectable script) and each script's slice
        filled with its components' values. As in the real one, ``ui()`` is called twice per script
        (once to see whether it has a UI, once for the values), inside a throwaway gr.Blocks."""
        values: list[Any] = [None] * max([1, *(script.args_to for script in runner.scripts)])
        values[0] = 0
        with gr.Blocks():
            for script in runner.scripts:
                if script.ui(script.is_img2img):
                    values[script.args_from : script.args_to] = [component.value for component in script.ui(script.is_img2img)]
        return values

    def request(self, path: str, payload: Any) -> tuple[int, Any]:
        """A POST of ``payload`` (the JSON body) to ``path``, as the client sees the answer."""
        route = _ROUTES.get(path)
        if route is None:
            return 404, {"detail": "Not Found"}
        try:
            body = route.body_model.model_validate(payload)
        except ValidationError as error:
            return 422, {"detail": [{"loc": ["body", *issue["loc"]], "msg": issue["msg"], "type": issue["type"]}
                                    for issue in error.errors()]}
        try:
            return 200, self._generate(route, body)
        except Exception as error:
            return _exception_response(path, error)

    def _generate(self, route: _Route, body: BaseModel) -> dict[str, Any]:
        """What text2imgapi and img2imgapi do with a valid body."""
        img2img = route.tab == "img2img"
        mask = None
        if img2img:
            if body.init_images is None:
                raise HTTPException(status_code=404, detail="Init image not found")
            mask = decode_base64_to_image(body.mask) if body.mask else body.mask
        if body.infotext:
            raise NotImplementedError("the stand-in API does not apply 'infotext'")
        runner = _runner(route.tab)
        selected = None
        if body.script_name:
            index = script_name_to_index(body.script_name, runner.selectable_scripts)
            selected = (runner.selectable_scripts[index], index)

        constructor_args = body.model_dump()
        sampler, scheduler = sd_samplers.get_sampler_and_scheduler(body.sampler_name or body.sampler_index, body.scheduler)
        if sd_samplers.all_samplers_map.get(sampler) is None:
            raise HTTPException(status_code=400, detail="Sampler not found")
        constructor_args.update(sampler_name=sampler, sampler_index=None, do_not_save_samples=not body.save_images,
                                do_not_save_grid=not body.save_images)
        if not constructor_args["scheduler"] and scheduler != "Automatic":
            constructor_args["scheduler"] = scheduler
        if img2img:
            constructor_args["mask"] = mask
        for name in _NOT_FOR_THE_CONSTRUCTOR:
            constructor_args.pop(name, None)
        script_args = self._script_args(body, runner, self.default_script_args[route.tab], selected)

        with self.queue_lock, closing(route.processing_class(sd_model=shared.sd_model, **constructor_args)) as p:
            if img2img:
                p.init_images = [decode_base64_to_image(encoded) for encoded in body.init_images]
            p.is_api = True
            p.scripts = runner
            p.outpath_grids = getattr(shared.opts, f"outdir_{route.tab}_grids")
            p.outpath_samples = getattr(shared.opts, f"outdir_{route.tab}_samples")
            try:
                shared.state.begin(job=f"scripts_{route.tab}")
                if selected is not None:
                    p.script_args = script_args
                    processed = runner.run(p, *p.script_args)
                else:
                    p.script_args = tuple(script_args)
                    processed = processing.process_images(p)
            finally:
                shared.state.end()
                shared.total_tqdm.clear()

        parameters = body.model_dump()
        if img2img and not body.include_init_images:
            parameters.update(init_images=None, mask=None)
        encoded_images = [encode_pil_to_base64(image) for image in processed.images] if body.send_images else []
        return {"images": encoded_images, "parameters": parameters, "info": processed.js()}

    @staticmethod
    def _script_args(body: BaseModel, runner, defaults: list, selected: tuple | None) -> list:
        """Api.init_script_args. The selectable script's slice is *replaced* by ``script_args``
        (a shorter list shifts what follows, as in the real one); an always-on script's given args
        overwrite its first values, never more than it has; a selectable script named there is a 422."""
        values = list(defaults)
        if selected is not None:
            script, index = selected
            values[script.args_from : script.args_to] = body.script_args
            values[0] = index + 1
        for title, settings in (body.alwayson_scripts or {}).items():
            script = runner.scripts[script_name_to_index(title, runner.scripts)]
            if not script.alwayson:
                raise HTTPException(status_code=422, detail="Cannot have a selectable script in the always on scripts params")
            if "args" in settings:
                given = settings["args"][: script.args_to - script.args_from]
                values[script.args_from : script.args_from + len(given)] = given
        return values
