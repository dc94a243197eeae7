"""Mirrors modules/txt2img.py: txt2img_create_processing and txt2img (the Generate button's function),
with the tail it shares with img2img.img2img in two helpers (run_script_or_process_images,
generation_outputs).

Stand-in addition: ``last_processed`` holds the Processed of the last txt2img() call (the real
function only returns images/infotext/HTML)."""

from contextlib import closing

import modules.scripts
import modules.shared as shared
from modules import processing
from modules.infotext_utils import create_override_settings_dict
from modules.shared import opts
from modules.ui import plaintext_to_html

last_processed = None


def txt2img_create_processing(
    id_task: str,
    request,
    prompt: str,
    negative_prompt: str,
    prompt_styles,
    n_iter: int,
    batch_size: int,
    cfg_scale: float,
    height: int,
    width: int,
    enable_hr: bool,
    denoising_strength: float,
    hr_scale: float,
    hr_upscaler: str,
    hr_second_pass_steps: int,
    hr_resize_x: int,
    hr_resize_y: int,
    hr_checkpoint_name: str,
    hr_sampler_name: str,
    hr_scheduler: str,
    hr_prompt: str,
    hr_negative_prompt,
    override_settings_texts,
    *args,
    force_enable_hr=False,
):
    # mirrors txt2img.txt2img_create_processing: p from the UI values; "Use same ..." become None; the
    # remaining args are the script args (p.scripts then p.script_args -> scripts' setup())
    override_settings = create_override_settings_dict(override_settings_texts)

    if force_enable_hr:
        enable_hr = True

    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model,
        outpath_samples=opts.outdir_samples or opts.outdir_txt2img_samples,
        outpath_grids=opts.outdir_grids or opts.outdir_txt2img_grids,
        prompt=prompt,
        styles=prompt_styles,
        negative_prompt=negative_prompt,
        batch_size=batch_size,
        n_iter=n_iter,
        cfg_scale=cfg_scale,
        width=width,
        height=height,
        enable_hr=enable_hr,
        denoising_strength=denoising_strength,
        hr_scale=hr_scale,
        hr_upscaler=hr_upscaler,
        hr_second_pass_steps=hr_second_pass_steps,
        hr_resize_x=hr_resize_x,
        hr_resize_y=hr_resize_y,
        hr_checkpoint_name=None if hr_checkpoint_name == "Use same checkpoint" else hr_checkpoint_name,
        hr_sampler_name=None if hr_sampler_name == "Use same sampler" else hr_sampler_name,
        hr_scheduler=None if hr_scheduler == "Use same scheduler" else hr_scheduler,
        hr_prompt=hr_prompt,
        hr_negative_prompt=hr_negative_prompt,
        override_settings=override_settings,
    )

    p.scripts = modules.scripts.scripts_txt2img
    p.script_args = args

    p.user = getattr(request, "username", None)

    if shared.opts.enable_console_prompts:
        print(f"\ntxt2img: {prompt}", file=shared.progress_print_out)

    return p


def txt2img(id_task: str, request, *args):
    # mirrors txt2img.txt2img: the selected script's run() or process_images, inside closing(p)
    global last_processed
    p = txt2img_create_processing(id_task, request, *args)

    last_processed = run_script_or_process_images(p, modules.scripts.scripts_txt2img, p.script_args)
    return generation_outputs(last_processed)


def run_script_or_process_images(p, script_runner, script_args):
    # what txt2img() and img2img.img2img() both do with p (the real functions repeat it): the selected
    # script's run(), or process_images when none is selected, inside closing(p)
    with closing(p):
        processed = script_runner.run(p, *script_args)
        if processed is None:
            processed = processing.process_images(p)
    shared.total_tqdm.clear()
    return processed


def generation_outputs(processed):
    # the Generate button's outputs in txt2img() and img2img.img2img(): images, generation info JSON, info
    # and comments HTML
    generation_info_js = processed.js()
    if opts.samples_log_stdout:
        print(generation_info_js)

    if opts.do_not_show_images:
        processed.images = []

    return (
        processed.images,
        generation_info_js,
        plaintext_to_html(processed.info),
        plaintext_to_html(processed.comments, classname="comments"),
    )
