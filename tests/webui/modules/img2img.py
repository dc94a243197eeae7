"""Stand-in for ``modules/img2img.py`` of the WebUI v1.10.1: what the img2img tab's Generate button runs.

Simplified: the inpaint-sketch mode (3) raises NotImplementedError; the Batch tab (mode 5) takes
uploaded images only (no input, output, mask or PNG-info folders) and writes nothing. Images are PIL
images, or {"image", "mask"} for the inpaint editor, as gradio passes them.
Stand-in additions: ``last_processed`` holds the Processed of the last call, ``batch_results`` the
Processed of each image of the last Batch run."""

from __future__ import annotations

from modules import images, processing, scripts
from modules.infotext_utils import create_override_settings_dict
from modules.shared import opts
from modules.txt2img import generation_outputs, run_generation

last_processed = None
batch_results: list = []

PNG_INFO_PROPS = {"Prompt": "prompt", "Negative prompt": "negative_prompt", "Seed": "seed", "CFG scale": "cfg_scale",
                  "Steps": "steps", "Sampler": "sampler_name"}
"""The parameters the Batch tab may take from each image's own infotext, and the fields they set."""

# The tab's inputs ahead of the script inputs, in the order the UI sends them (modules/ui.py).
UI_FIELDS = (
    "mode prompt negative_prompt styles init_img sketch init_img_with_mask inpaint_color_sketch "
    "inpaint_color_sketch_orig init_img_inpaint init_mask_inpaint mask_blur mask_alpha inpainting_fill n_iter "
    "batch_size cfg_scale image_cfg_scale denoising_strength selected_scale_tab height width scale_by resize_mode "
    "inpaint_full_res inpaint_full_res_padding inpainting_mask_invert img2img_batch_input_dir img2img_batch_output_dir "
    "img2img_batch_inpaint_mask_dir override_settings_texts img2img_batch_use_png_info img2img_batch_png_info_props "
    "img2img_batch_png_info_dir img2img_batch_source_type img2img_batch_upload"
).split()

# the inputs that become processing fields of the same name
_PROCESSING_FIELDS = (
    "prompt negative_prompt styles n_iter batch_size cfg_scale image_cfg_scale denoising_strength height width "
    "resize_mode mask_blur inpainting_fill inpaint_full_res inpaint_full_res_padding inpainting_mask_invert"
).split()


def _picture_and_mask(values: dict):
    """The init image and mask of the selected mode: 0 img2img, 1 sketch, 2 inpaint (the editor's
    strokes as a binary mask), 4 inpaint upload."""
    mode = values["mode"]
    if mode == 3:
        raise NotImplementedError("stand-in: img2img mode 3 (inpaint sketch) is not implemented")
    if mode == 5:
        return None, None
    if mode == 2:
        editor = values["init_img_with_mask"]
        return editor["image"], processing.create_binary_mask(editor["mask"])
    inputs = {0: ("init_img", None), 1: ("sketch", None), 4: ("init_img_inpaint", "init_mask_inpaint")}
    picture, mask = inputs.get(mode, (None, None))
    return values.get(picture), values.get(mask)


def img2img(id_task: str, request, *args):
    """img2img.py ``img2img``: ``p`` from the tab's values, then the selected script's ``run()`` or
    ``process_images``, with ``p.close()`` afterwards."""
    global last_processed
    values = dict(zip(UI_FIELDS, args))
    picture, mask = (images.fix_image(item) for item in _picture_and_mask(values))
    if values["selected_scale_tab"] == 1:  # "Scale by" instead of a size
        assert picture, "Can't scale by because no image is selected"
        values["width"], values["height"] = int(picture.width * values["scale_by"]), int(picture.height * values["scale_by"])
    assert 0.0 <= values["denoising_strength"] <= 1.0, "can only work with strength in [0.0, 1.0]"

    p = processing.StableDiffusionProcessingImg2Img(
        outpath_samples=opts.outdir_samples or opts.outdir_img2img_samples,
        outpath_grids=opts.outdir_grids or opts.outdir_img2img_grids,
        init_images=[picture],
        mask=mask,
        override_settings=create_override_settings_dict(values["override_settings_texts"]),
        **{name: values[name] for name in _PROCESSING_FIELDS},
    )
    p.scripts = scripts.scripts_img2img
    p.script_args = args[len(UI_FIELDS):]
    p.user = getattr(request, "username", None)
    if values["mode"] == 5:
        last_processed = _run_batch(p, values)
    else:
        last_processed = run_generation(p, scripts.scripts_img2img)
    return generation_outputs(last_processed)


def _run_batch(p, values: dict) -> processing.Processed:
    """img2img.py ``process_batch`` for uploaded images: one generation per image on the same ``p``
    (its init images that image, repeated over the batch), the image's own infotext lending the
    chosen parameters; it stops when the user interrupts. The result shown is empty (the real one
    writes the images to the output folder)."""
    from contextlib import closing

    from modules import shared
    from modules.infotext_utils import parse_generation_parameters

    batch_results.clear()
    uploads = list(values["img2img_batch_upload"])
    base = {field: getattr(p, field) for field in PNG_INFO_PROPS.values()}
    shared.state.job_count = len(uploads) * p.n_iter
    with closing(p):
        for upload in uploads:
            if shared.state.interrupted:
                break
            picture = images.fix_image(upload)
            p.init_images = [picture] * p.batch_size
            for field, value in base.items():
                setattr(p, field, value)
            if values["img2img_batch_use_png_info"]:
                own = parse_generation_parameters(upload.info.get("parameters", ""))
                for key in values["img2img_batch_png_info_props"]:
                    if key in own:
                        field = PNG_INFO_PROPS[key]
                        setattr(p, field, type(base[field])(own[key]) if base[field] is not None else own[key])
            processed = scripts.scripts_img2img.run(p, *p.script_args)
            batch_results.append(processed if processed is not None else processing.process_images(p))
    return processing.Processed(p, [], p.seed, "")
