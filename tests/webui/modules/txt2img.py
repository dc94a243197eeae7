"""Stand-in for ``modules/txt2img.py`` of the WebUI v1.10.1: what the txt2img tab's Generate button
runs. ``run_generation`` and ``generation_outputs`` are what txt2img and img2img (modules/img2img.py)
both do after building ``p``.

Stand-in addition: ``last_processed`` holds the Processed of the last call (the real function returns
only the gallery, the generation info and HTML)."""

from __future__ import annotations

from contextlib import closing

from modules import processing, scripts
from modules.infotext_utils import create_override_settings_dict
from modules.shared import opts
from modules.ui import plaintext_to_html

last_processed = None

# The tab's inputs ahead of the script inputs, in the order the UI sends them (modules/ui.py).
UI_FIELDS = (
    "prompt negative_prompt styles n_iter batch_size cfg_scale height width enable_hr denoising_strength hr_scale "
    "hr_upscaler hr_second_pass_steps hr_resize_x hr_resize_y hr_checkpoint_name hr_sampler_name hr_scheduler "
    "hr_prompt hr_negative_prompt override_settings_texts"
).split()

# "Use same ..." in the hires dropdowns means: the first pass's value (None on p)
_SAME_AS_FIRST_PASS = {"hr_checkpoint_name": "Use same checkpoint", "hr_sampler_name": "Use same sampler",
                       "hr_scheduler": "Use same scheduler"}


def txt2img_create_processing(id_task: str, request, *args, force_enable_hr: bool = False):
    """txt2img.py ``txt2img_create_processing``: ``p`` from the tab's values; the remaining arguments are
    the script inputs (assigning them runs the scripts' ``setup()``)."""
    values = dict(zip(UI_FIELDS, args))
    override_settings = create_override_settings_dict(values.pop("override_settings_texts"))
    for name, same in _SAME_AS_FIRST_PASS.items():
        if values[name] == same:
            values[name] = None
    values["enable_hr"] = values["enable_hr"] or force_enable_hr
    p = processing.StableDiffusionProcessingTxt2Img(
        outpath_samples=opts.outdir_samples or opts.outdir_txt2img_samples,
        outpath_grids=opts.outdir_grids or opts.outdir_txt2img_grids,
        override_settings=override_settings,
        **values,
    )
    p.scripts = scripts.scripts_txt2img
    p.script_args = args[len(UI_FIELDS):]
    p.user = getattr(request, "username", None)
    return p


def txt2img(id_task: str, request, *args):
    """txt2img.py ``txt2img``."""
    global last_processed
    p = txt2img_create_processing(id_task, request, *args)
    last_processed = run_generation(p, scripts.scripts_txt2img)
    return generation_outputs(last_processed)


def run_generation(p, runner):
    """The selected script's ``run()``, or ``process_images`` when it returns nothing (no script
    selected), with ``p.close()`` afterwards whatever happens."""
    with closing(p):
        processed = runner.run(p, *p.script_args)
        return processed if processed is not None else processing.process_images(p)


def generation_outputs(processed):
    """The Generate button's outputs: gallery images, generation info JSON, info and comments HTML."""
    if opts.do_not_show_images:
        processed.images = []
    html_info = plaintext_to_html(processed.info)
    return processed.images, processed.js(), html_info, plaintext_to_html(processed.comments, classname="comments")
