"""Mirrors modules/api/api.py for /sdapi/v1/txt2img and /sdapi/v1/img2img, with the exception
middleware's error shape.

Simplified: there is no FastAPI app or HTTP; ``Api.request(path, payload)`` does what the route +
middleware do and returns ``(status_code, json_dict)``. Errors follow api_middleware.handle_exception:
{"error": type name, "detail": e.detail or "", "body": e.body or "", "errors": str(e)} with
e.status_code or 500 (non-HTTP exceptions are also reported with errors.report); request-validation
errors follow FastAPI's default handler: 422 {"detail": [...]}. Images are PNG base64 strings."""

import base64
import io
import threading
from contextlib import closing

import gradio as gr
from fastapi.exceptions import HTTPException
from PIL import PngImagePlugin

import modules.shared as shared
from modules import errors, images, infotext_utils, scripts, sd_samplers
from modules.api import models
from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img, process_images
from modules.shared import opts


def script_name_to_index(name, scripts_list):
    # mirrors api.script_name_to_index: case-insensitive title match, else 422
    try:
        return [script.title().lower() for script in scripts_list].index(name.lower())
    except Exception as e:
        raise HTTPException(status_code=422, detail=f"Script '{name}' not found") from e


def validate_sampler_name(name):
    config = sd_samplers.all_samplers_map.get(name, None)
    if config is None:
        raise HTTPException(status_code=400, detail="Sampler not found")
    return name


def decode_base64_to_image(encoding):
    # mirrors api.decode_base64_to_image (no URL fetching in the stand-in)
    if encoding.startswith("http://") or encoding.startswith("https://"):
        raise HTTPException(status_code=500, detail="Requests not allowed")
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        return images.read(io.BytesIO(base64.b64decode(encoding)))
    except Exception as e:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from e


def encode_pil_to_base64(image):
    # mirrors api.encode_pil_to_base64 for PNG (text info chunks kept)
    if isinstance(image, str):
        return image
    with io.BytesIO() as output_bytes:
        metadata = PngImagePlugin.PngInfo()
        use_metadata = False
        for key, value in image.info.items():
            if isinstance(key, str) and isinstance(value, str):
                metadata.add_text(key, value)
                use_metadata = True
        image.save(output_bytes, format="PNG", pnginfo=(metadata if use_metadata else None))
        return base64.b64encode(output_bytes.getvalue())


def handle_exception(e: Exception):
    # mirrors api_middleware.handle_exception (+ FastAPI's default handler for validation errors)
    if isinstance(e, models.RequestValidationError):
        return 422, {"detail": e.errors()}
    err = {
        "error": type(e).__name__,
        "detail": vars(e).get("detail", ""),
        "body": vars(e).get("body", ""),
        "errors": str(e),
    }
    if not isinstance(e, HTTPException):
        errors.report(f"API error: POST: {err}", exc_info=True)
    return vars(e).get("status_code", 500), err


class Api:
    # mirrors api.Api (the two generation routes)
    def __init__(self, queue_lock=None):
        self.queue_lock = queue_lock or threading.RLock()
        self.default_script_arg_txt2img = []
        self.default_script_arg_img2img = []

        txt2img_script_runner = scripts.scripts_txt2img
        img2img_script_runner = scripts.scripts_img2img

        if not txt2img_script_runner.scripts or not img2img_script_runner.scripts:
            from modules import ui

            ui.create_ui()

        if not txt2img_script_runner.scripts:
            txt2img_script_runner.initialize_scripts(False)
        if not self.default_script_arg_txt2img:
            self.default_script_arg_txt2img = self.init_default_script_args(txt2img_script_runner)

        if not img2img_script_runner.scripts:
            img2img_script_runner.initialize_scripts(True)
        if not self.default_script_arg_img2img:
            self.default_script_arg_img2img = self.init_default_script_args(img2img_script_runner)

    def request(self, path, payload):
        """Stand-in for an HTTP POST through the middleware: returns (status_code, json_dict)."""
        routes = {"/sdapi/v1/txt2img": self.text2imgapi, "/sdapi/v1/img2img": self.img2imgapi}
        try:
            return 200, routes[path](payload)
        except Exception as e:
            return handle_exception(e)

    def get_selectable_script(self, script_name, script_runner):
        if script_name is None or script_name == "":
            return None, None
        script_idx = script_name_to_index(script_name, script_runner.selectable_scripts)
        return script_runner.selectable_scripts[script_idx], script_idx

    def get_scripts_list(self):
        return {
            "txt2img": [s.name for s in scripts.scripts_txt2img.scripts if s.name is not None],
            "img2img": [s.name for s in scripts.scripts_img2img.scripts if s.name is not None],
        }

    def get_script_info(self):
        result = []
        for script_list in [scripts.scripts_txt2img.scripts, scripts.scripts_img2img.scripts]:
            result += [script.api_info for script in script_list if script.api_info is not None]
        return result

    def get_script(self, script_name, script_runner):
        if script_name is None or script_name == "":
            return None, None
        return script_runner.scripts[script_name_to_index(script_name, script_runner.scripts)]

    def init_default_script_args(self, script_runner):
        # mirrors Api.init_default_script_args: [0, None, ...] with each script's ui() called AGAIN (twice)
        # inside a throwaway gr.Blocks to read its components' default values
        last_arg_index = 1
        for script in script_runner.scripts:
            if last_arg_index < script.args_to:
                last_arg_index = script.args_to
        script_args = [None] * last_arg_index
        script_args[0] = 0

        with gr.Blocks():
            for script in script_runner.scripts:
                if script.ui(script.is_img2img):
                    ui_default_values = [elem.value for elem in script.ui(script.is_img2img)]
                    script_args[script.args_from : script.args_to] = ui_default_values
        return script_args

    def init_script_args(
        self, request, default_script_args, selectable_scripts, selectable_idx, script_runner, *, input_script_args=None
    ):
        # mirrors Api.init_script_args: alwayson_scripts {"<title>": {"args": [...]}} fill the script's slice
        # positionally (at most args_to - args_from values); unknown titles -> 422 (from get_script)
        script_args = default_script_args.copy()

        if input_script_args is not None:
            for index, value in input_script_args.items():
                script_args[index] = value

        if selectable_scripts:
            script_args[selectable_scripts.args_from : selectable_scripts.args_to] = request.script_args
            script_args[0] = selectable_idx + 1

        if request.alwayson_scripts:
            for alwayson_script_name in request.alwayson_scripts.keys():
                alwayson_script = self.get_script(alwayson_script_name, script_runner)
                if alwayson_script is None:
                    raise HTTPException(status_code=422, detail=f"always on script {alwayson_script_name} not found")
                if alwayson_script.alwayson is False:
                    raise HTTPException(status_code=422, detail="Cannot have a selectable script in the always on scripts params")
                if "args" in request.alwayson_scripts[alwayson_script_name]:
                    given = request.alwayson_scripts[alwayson_script_name]["args"]
                    for idx in range(0, min((alwayson_script.args_to - alwayson_script.args_from), len(given))):
                        script_args[alwayson_script.args_from + idx] = given[idx]
        return script_args

    def apply_infotext(self, request, tabname, table, *, script_runner=None, mentioned_script_args=None):
        # mirrors Api.apply_infotext: fields not sent by the client are taken from the infotext
        if not request.infotext:
            return {}

        possible_fields = infotext_utils.paste_fields[tabname]["fields"]
        set_fields = request._fields_set
        params = infotext_utils.parse_generation_parameters(request.infotext)

        def get_field_value(field, params):
            value = field.function(params) if field.function else params.get(field.label)
            if value is None:
                return None
            if field.api in table:
                target_type = table[field.api][0].__args__[0] if hasattr(table[field.api][0], "__args__") else table[field.api][0]
            else:
                target_type = type(field.component.value)
            if target_type is type(None):
                return None
            if isinstance(value, dict) and value.get("__type__") == "generic_update":
                value = value.get("value")
            if value is not None and isinstance(target_type, type) and not isinstance(value, target_type):
                value = target_type(value)
            return value

        for field in possible_fields:
            if not field.api or field.api in set_fields:
                continue
            value = get_field_value(field, params)
            if value is not None:
                setattr(request, field.api, value)

        if request.override_settings is None:
            request.override_settings = {}

        for _, setting_name, value in infotext_utils.get_override_settings(params):
            if setting_name not in request.override_settings:
                request.override_settings[setting_name] = value

        if script_runner is not None and mentioned_script_args is not None:
            indexes = {v: i for i, v in enumerate(script_runner.inputs)}
            for field in possible_fields:
                if field.component in indexes:
                    value = get_field_value(field, params)
                    if value is not None:
                        mentioned_script_args[indexes[field.component]] = value

        return params

    def _populate(self, request, table, extra_updates):
        # mirrors the request.copy(update=...) + vars(...) + pops of text2imgapi/img2imgapi
        sampler, scheduler = sd_samplers.get_sampler_and_scheduler(
            request.sampler_name or request.sampler_index, request.scheduler
        )
        args = request.fields()
        args.update(
            {
                "sampler_name": validate_sampler_name(sampler),
                "do_not_save_samples": not request.save_images,
                "do_not_save_grid": not request.save_images,
            }
        )
        args.update(extra_updates)
        if args["sampler_name"]:
            args["sampler_index"] = None
        if not args.get("scheduler") and scheduler != "Automatic":
            args["scheduler"] = scheduler
        for key in ("script_name", "script_args", "alwayson_scripts", "infotext"):
            args.pop(key, None)
        return args

    def text2imgapi(self, payload: dict):
        # mirrors Api.text2imgapi
        table = models.StableDiffusionTxt2ImgProcessingAPI
        request = models.parse_request(table, payload)
        processed, b64images = self._generate(request, table, "txt2img", StableDiffusionProcessingTxt2Img, {})
        return {"images": b64images, "parameters": request.fields(), "info": processed.js()}

    def img2imgapi(self, payload: dict):
        # mirrors Api.img2imgapi
        table = models.StableDiffusionImg2ImgProcessingAPI
        request = models.parse_request(table, payload)

        init_images = request.init_images
        if init_images is None:
            raise HTTPException(status_code=404, detail="Init image not found")

        mask = request.mask
        if mask:
            mask = decode_base64_to_image(mask)

        def set_init_images(p):
            p.init_images = [decode_base64_to_image(x) for x in init_images]

        processed, b64images = self._generate(
            request, table, "img2img", StableDiffusionProcessingImg2Img, {"mask": mask}, prepare=set_init_images
        )
        parameters = request.fields()
        if not request.include_init_images:
            parameters["init_images"] = None
            parameters["mask"] = None
        return {"images": b64images, "parameters": parameters, "info": processed.js()}

    def _generate(self, request, table, tab, processing_class, extra_updates, prepare=None):
        # the part text2imgapi and img2imgapi share (the real methods repeat it): infotext and script
        # args, p built from the request, the selected script's run() or process_images under the queue
        # lock, the images base64-encoded (when send_images)
        script_runner = scripts.scripts_img2img if tab == "img2img" else scripts.scripts_txt2img

        infotext_script_args = {}
        self.apply_infotext(request, tab, table, script_runner=script_runner, mentioned_script_args=infotext_script_args)

        selectable_scripts, selectable_script_idx = self.get_selectable_script(request.script_name, script_runner)

        args = self._populate(request, table, extra_updates)
        args.pop("include_init_images", None)
        script_args = self.init_script_args(
            request,
            self.default_script_arg_img2img if tab == "img2img" else self.default_script_arg_txt2img,
            selectable_scripts,
            selectable_script_idx,
            script_runner,
            input_script_args=infotext_script_args,
        )

        send_images = args.pop("send_images", True)
        args.pop("save_images", None)

        with self.queue_lock:
            with closing(processing_class(sd_model=shared.sd_model, **args)) as p:
                if prepare is not None:
                    prepare(p)
                p.is_api = True
                p.scripts = script_runner
                p.outpath_grids = getattr(opts, f"outdir_{tab}_grids")
                p.outpath_samples = getattr(opts, f"outdir_{tab}_samples")

                try:
                    shared.state.begin(job=f"scripts_{tab}")
                    if selectable_scripts is not None:
                        p.script_args = script_args
                        processed = script_runner.run(p, *p.script_args)
                    else:
                        p.script_args = tuple(script_args)
                        processed = process_images(p)
                finally:
                    shared.state.end()
                    shared.total_tqdm.clear()

        b64images = (
            [x.decode() if isinstance(x, bytes) else x for x in map(encode_pil_to_base64, processed.images)]
            if send_images
            else []
        )
        self.last_processed = processed  # stand-in only
        return processed, b64images
