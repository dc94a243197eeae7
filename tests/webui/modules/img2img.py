"""Mirrors modules/img2img.py img2img (the Generate button's function of the img2img tab).

Simplified: batch mode (mode 5, directories/uploads) raises NotImplementedError; images are PIL
images (or dicts with "image"/"mask" for the inpaint editor) as gradio would pass them.
Stand-in addition: ``last_processed`` holds the Processed of the last call."""

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

import modules.scripts
import modules.shared as shared
from modules import images, processing
from modules.infotext_utils import create_override_settings_dict
from modules.processing import Processed, StableDiffusionProcessingImg2Img, process_images  # noqa: F401
from modules.shared import opts
from modules.txt2img import generation_outputs, run_script_or_process_images

last_processed = None


def img2img(
    id_task: str,
    request,
    mode: int,
    prompt: str,
    negative_prompt: str,
    prompt_styles,
    init_img,
    sketch,
    init_img_with_mask,
    inpaint_color_sketch,
    inpaint_color_sketch_orig,
    init_img_inpaint,
    init_mask_inpaint,
    mask_blur: int,
    mask_alpha: float,
    inpainting_fill: int,
    n_iter: int,
    batch_size: int,
    cfg_scale: float,
    image_cfg_scale: float,
    denoising_strength: float,
    selected_scale_tab: int,
    height: int,
    width: int,
    scale_by: float,
    resize_mode: int,
    inpaint_full_res: bool,
    inpaint_full_res_padding: int,
    inpainting_mask_invert: int,
    img2img_batch_input_dir: str,
    img2img_batch_output_dir: str,
    img2img_batch_inpaint_mask_dir: str,
    override_settings_texts,
    img2img_batch_use_png_info: bool,
    img2img_batch_png_info_props: list,
    img2img_batch_png_info_dir: str,
    img2img_batch_source_type: str,
    img2img_batch_upload: list,
    *args,
):
    # mirrors img2img.img2img: picks image/mask by mode (0 img2img, 1 sketch, 2 inpaint, 3 inpaint sketch,
    # 4 inpaint upload), builds p, runs the selected script or process_images inside closing(p)
    global last_processed
    override_settings = create_override_settings_dict(override_settings_texts)

    is_batch = mode == 5
    if is_batch:
        raise NotImplementedError("stand-in: img2img batch mode is not implemented")

    if mode == 0:
        image = init_img
        mask = None
    elif mode == 1:
        image = sketch
        mask = None
    elif mode == 2:
        image, mask = init_img_with_mask["image"], init_img_with_mask["mask"]
        mask = processing.create_binary_mask(mask)
    elif mode == 3:
        image = inpaint_color_sketch
        orig = inpaint_color_sketch_orig or inpaint_color_sketch
        pred = np.any(np.array(image) != np.array(orig), axis=-1)
        mask = Image.fromarray(pred.astype(np.uint8) * 255, "L")
        mask = ImageEnhance.Brightness(mask).enhance(1 - mask_alpha / 100)
        blur = ImageFilter.GaussianBlur(mask_blur)
        image = Image.composite(image.filter(blur), orig, mask.filter(blur))
    elif mode == 4:
        image = init_img_inpaint
        mask = init_mask_inpaint
    else:
        image = None
        mask = None

    image = images.fix_image(image)
    mask = images.fix_image(mask)

    if selected_scale_tab == 1 and not is_batch:
        assert image, "Can't scale by because no image is selected"
        width = int(image.width * scale_by)
        height = int(image.height * scale_by)

    assert 0.0 <= denoising_strength <= 1.0, "can only work with strength in [0.0, 1.0]"

    p = StableDiffusionProcessingImg2Img(
        sd_model=shared.sd_model,
        outpath_samples=opts.outdir_samples or opts.outdir_img2img_samples,
        outpath_grids=opts.outdir_grids or opts.outdir_img2img_grids,
        prompt=prompt,
        negative_prompt=negative_prompt,
        styles=prompt_styles,
        batch_size=batch_size,
        n_iter=n_iter,
        cfg_scale=cfg_scale,
        width=width,
        height=height,
        init_images=[image],
        mask=mask,
        mask_blur=mask_blur,
        inpainting_fill=inpainting_fill,
        resize_mode=resize_mode,
        denoising_strength=denoising_strength,
        image_cfg_scale=image_cfg_scale,
        inpaint_full_res=inpaint_full_res,
        inpaint_full_res_padding=inpaint_full_res_padding,
        inpainting_mask_invert=inpainting_mask_invert,
        override_settings=override_settings,
    )

    p.scripts = modules.scripts.scripts_img2img
    p.script_args = args

    p.user = getattr(request, "username", None)

    if shared.opts.enable_console_prompts:
        print(f"\nimg2img: {prompt}", file=shared.progress_print_out)

    last_processed = run_script_or_process_images(p, modules.scripts.scripts_img2img, args)
    return generation_outputs(last_processed)
