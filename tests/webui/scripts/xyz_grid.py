"""Mirrors scripts/xyz_grid.py of the WebUI root (the built-in "X/Y/Z plot" script). The stand-in's
scripts.load_scripts loads this file like every root script (script_loading.load_module: the module is
named "xyz_grid.py", not put in sys.modules, executed again on every load), so extensions find it as
the real one: ``[x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"][0].module``,
and add their axes to its ``axis_options`` (usually from an on_before_ui callback, which runs before the
UI calls Script.ui, where the per-tab axis list is taken).

Same as the real file: the axis types and their apply/format/confirm functions, the value parsing
(comma lists with CSV quoting, int ranges "1-5", "1-10 (+3)", "1-10 [4]", float ranges alike,
permutations), the cell order by axis cost, one copy(p) + process_images per cell, fixed seeds, the
grids with legends, the grid infotexts, SharedSettingsStackHelper (reload of the configured checkpoint
afterwards). Simplified: the UI has the same inputs (and infotext fields) but none of the change/click
handlers (swap axes, fill values, switching between text and dropdown input)."""

import csv
import os.path
import random
import re
from collections import namedtuple
from copy import copy
from io import StringIO
from itertools import chain, permutations, product

import gradio as gr
import numpy as np
from PIL import Image

import modules.scripts as scripts
import modules.sd_models
import modules.sd_vae
import modules.shared as shared
from modules import errors, images, processing, sd_models, sd_samplers, sd_schedulers, sd_vae
from modules.processing import Processed, StableDiffusionProcessingTxt2Img, process_images
from modules.shared import opts, state
from modules.ui_components import ToolButton

fill_values_symbol = "\U0001f4d2"  # 📒

AxisInfo = namedtuple("AxisInfo", ["axis", "values"])


def apply_field(field):
    def fun(p, x, xs):
        setattr(p, field, x)

    return fun


def apply_prompt(p, x, xs):
    if xs[0] not in p.prompt and xs[0] not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {xs[0]} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(xs[0], x)
    p.negative_prompt = p.negative_prompt.replace(xs[0], x)


def apply_order(p, x, xs):
    # the tokens of x, found in the prompt in their current order, are put back in the order of x
    token_order = sorted(((p.prompt.find(token), token) for token in x), key=lambda t: t[0])
    prompt_parts = []
    for _, token in token_order:
        n = p.prompt.find(token)
        prompt_parts.append(p.prompt[0:n])
        p.prompt = p.prompt[n + len(token) :]
    p.prompt = "".join(part + x[idx] for idx, part in enumerate(prompt_parts)) + p.prompt


def confirm_samplers(p, xs):
    for x in xs:
        if x.lower() not in sd_samplers.samplers_map:
            raise RuntimeError(f"Unknown sampler: {x}")


def apply_checkpoint(p, x, xs):
    info = modules.sd_models.get_closet_checkpoint_match(x)
    if info is None:
        raise RuntimeError(f"Unknown checkpoint: {x}")
    p.override_settings["sd_model_checkpoint"] = info.name


def confirm_checkpoints(p, xs):
    for x in xs:
        if modules.sd_models.get_closet_checkpoint_match(x) is None:
            raise RuntimeError(f"Unknown checkpoint: {x}")


def confirm_checkpoints_or_none(p, xs):
    for x in xs:
        if x in (None, "", "None", "none"):
            continue
        if modules.sd_models.get_closet_checkpoint_match(x) is None:
            raise RuntimeError(f"Unknown checkpoint: {x}")


def confirm_range(min_val, max_val, axis_label):
    """An AxisOption.confirm() function checking that all values are within [min_val, max_val]."""

    def confirm_range_fun(p, xs):
        for x in xs:
            if not (max_val >= x >= min_val):
                raise ValueError(f'{axis_label} value "{x}" out of range [{min_val}, {max_val}]')

    return confirm_range_fun


def apply_size(p, x: str, xs) -> None:
    try:
        width, _, height = x.partition("x")
        p.width = int(width.strip())
        p.height = int(height.strip())
    except ValueError:
        print(f"Invalid size in XYZ plot: {x}")


def find_vae(name: str):
    if (name := name.strip().lower()) in ("auto", "automatic"):
        return "Automatic"
    elif name == "none":
        return "None"
    return next(
        (k for k in modules.sd_vae.vae_dict if k.lower() == name),
        print(f"No VAE found for {name}; using Automatic") or "Automatic",
    )


def apply_vae(p, x, xs):
    p.override_settings["sd_vae"] = find_vae(x)


def apply_styles(p: StableDiffusionProcessingTxt2Img, x: str, _):
    p.styles.extend(x.split(","))


def apply_uni_pc_order(p, x, xs):
    p.override_settings["uni_pc_order"] = min(x, p.steps - 1)


def apply_face_restore(p, opt, x):
    opt = opt.lower()
    if opt == "codeformer":
        is_active = True
        p.face_restoration_model = "CodeFormer"
    elif opt == "gfpgan":
        is_active = True
        p.face_restoration_model = "GFPGAN"
    else:
        is_active = opt in ("true", "yes", "y", "1")
    p.restore_faces = is_active


def apply_override(field, boolean: bool = False):
    def fun(p, x, xs):
        if boolean:
            x = True if x.lower() == "true" else False
        p.override_settings[field] = x

    return fun


def boolean_choice(reverse: bool = False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def format_value_join_list(p, opt, x):
    return ", ".join(x)


def do_nothing(p, x, xs):
    pass


def format_nothing(p, opt, x):
    return ""


def format_remove_path(p, opt, x):
    return os.path.basename(x)


def str_permutations(x):
    """dummy function for specifying it in AxisOption's type when you want to get a list of permutations"""
    return x


def list_to_csv_string(data_list):
    with StringIO() as o:
        csv.writer(o).writerow(data_list)
        return o.getvalue().strip()


def csv_string_to_list_strip(data_str):
    return list(map(str.strip, chain.from_iterable(csv.reader(StringIO(data_str), skipinitialspace=True))))


class AxisOption:
    # mirrors xyz_grid.AxisOption: type converts each value (int/float get range parsing), apply(p, x, xs)
    # sets it on the cell's p, cost orders the loops (costly axes outermost)
    def __init__(
        self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None, prepare=None
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


def _visible_samplers(samplers):
    return lambda: [x.name for x in samplers() if x.name not in opts.hide_samplers]


def _checkpoint_choices():
    return sorted(sd_models.checkpoints_list, key=str.casefold)


axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    AxisOption("Seed", int, apply_field("seed")),
    AxisOption("Var. seed", int, apply_field("subseed")),
    AxisOption("Var. strength", float, apply_field("subseed_strength")),
    AxisOption("Steps", int, apply_field("steps")),
    AxisOptionTxt2Img("Hires steps", int, apply_field("hr_second_pass_steps")),
    AxisOption("CFG Scale", float, apply_field("cfg_scale")),
    AxisOptionImg2Img("Image CFG Scale", float, apply_field("image_cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOption("Prompt order", str_permutations, apply_order, format_value=format_value_join_list),
    AxisOptionTxt2Img(
        "Sampler",
        str,
        apply_field("sampler_name"),
        format_value=format_value,
        confirm=confirm_samplers,
        choices=_visible_samplers(lambda: sd_samplers.samplers),
    ),
    AxisOptionTxt2Img(
        "Hires sampler",
        str,
        apply_field("hr_sampler_name"),
        confirm=confirm_samplers,
        choices=_visible_samplers(lambda: sd_samplers.samplers_for_img2img),
    ),
    AxisOptionImg2Img(
        "Sampler",
        str,
        apply_field("sampler_name"),
        format_value=format_value,
        confirm=confirm_samplers,
        choices=_visible_samplers(lambda: sd_samplers.samplers_for_img2img),
    ),
    AxisOption(
        "Checkpoint name",
        str,
        apply_checkpoint,
        format_value=format_remove_path,
        confirm=confirm_checkpoints,
        cost=1.0,
        choices=_checkpoint_choices,
    ),
    AxisOption("Negative Guidance minimum sigma", float, apply_field("s_min_uncond")),
    AxisOption("Sigma Churn", float, apply_field("s_churn")),
    AxisOption("Sigma min", float, apply_field("s_tmin")),
    AxisOption("Sigma max", float, apply_field("s_tmax")),
    AxisOption("Sigma noise", float, apply_field("s_noise")),
    AxisOption("Schedule type", str, apply_field("scheduler"), choices=lambda: [x.label for x in sd_schedulers.schedulers]),
    AxisOption("Schedule min sigma", float, apply_override("sigma_min")),
    AxisOption("Schedule max sigma", float, apply_override("sigma_max")),
    AxisOption("Schedule rho", float, apply_override("rho")),
    AxisOption("Beta schedule alpha", float, apply_override("beta_dist_alpha")),
    AxisOption("Beta schedule beta", float, apply_override("beta_dist_beta")),
    AxisOption("Eta", float, apply_field("eta")),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    AxisOption("Denoising", float, apply_field("denoising_strength")),
    AxisOption("Initial noise multiplier", float, apply_field("initial_noise_multiplier")),
    AxisOption("Extra noise", float, apply_override("img2img_extra_noise")),
    AxisOptionTxt2Img(
        "Hires upscaler",
        str,
        apply_field("hr_upscaler"),
        choices=lambda: [*shared.latent_upscale_modes, *[x.name for x in shared.sd_upscalers]],
    ),
    AxisOptionImg2Img("Cond. Image Mask Weight", float, apply_field("inpainting_mask_weight")),
    AxisOption("VAE", str, apply_vae, cost=0.7, choices=lambda: ["Automatic", "None"] + list(sd_vae.vae_dict)),
    AxisOption("Styles", str, apply_styles, choices=lambda: list(shared.prompt_styles.styles)),
    AxisOption("UniPC Order", int, apply_uni_pc_order, cost=0.5),
    AxisOption("Face restore", str, apply_face_restore, format_value=format_value),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption("Token merging ratio high-res", float, apply_override("token_merging_ratio_hr")),
    AxisOption(
        "Always discard next-to-last sigma",
        str,
        apply_override("always_discard_next_to_last_sigma", boolean=True),
        choices=boolean_choice(reverse=True),
    ),
    AxisOption(
        "SGM noise multiplier", str, apply_override("sgm_noise_multiplier", boolean=True), choices=boolean_choice(reverse=True)
    ),
    AxisOption(
        "Refiner checkpoint",
        str,
        apply_field("refiner_checkpoint"),
        format_value=format_remove_path,
        confirm=confirm_checkpoints_or_none,
        cost=1.0,
        choices=lambda: ["None"] + _checkpoint_choices(),
    ),
    AxisOption("Refiner switch at", float, apply_field("refiner_switch_at")),
    AxisOption("RNG source", str, apply_override("randn_source"), choices=lambda: ["GPU", "CPU", "NV"]),
    AxisOption(
        "FP8 mode", str, apply_override("fp8_storage"), cost=0.9, choices=lambda: ["Disable", "Enable for SDXL", "Enable"]
    ),
    AxisOption("Size", str, apply_size),
]


def draw_xyz_grid(
    p,
    xs,
    ys,
    zs,
    x_labels,
    y_labels,
    z_labels,
    cell,
    draw_legend,
    include_lone_images,
    include_sub_grids,
    first_axes_processed,
    second_axes_processed,
    margin_size,
):
    # mirrors xyz_grid.draw_xyz_grid: runs cell() for every (x, y, z), the first-processed axis in the
    # outer loop and the second in the middle one; collects each cell's first image (a blank image for a
    # cell without one) into a copy of the first cell's Processed; then one grid per z (with legends),
    # and the grid of z grids first. Result: [z grid, grid per z..., cell images...]
    hor_texts = [[images.GridAnnotation(x)] for x in x_labels]
    ver_texts = [[images.GridAnnotation(y)] for y in y_labels]
    title_texts = [[images.GridAnnotation(z)] for z in z_labels]

    list_size = len(xs) * len(ys) * len(zs)
    processed_result = None
    state.job_count = list_size * p.n_iter

    def index(ix, iy, iz):
        return ix + iy * len(xs) + iz * len(xs) * len(ys)

    def process_cell(ix, iy, iz):
        nonlocal processed_result
        state.job = f"{index(ix, iy, iz) + 1} out of {list_size}"
        processed: Processed = cell(xs[ix], ys[iy], zs[iz], ix, iy, iz)

        if processed_result is None:
            # the first processed result holds the full results
            processed_result = copy(processed)
            processed_result.images = [None] * list_size
            processed_result.all_prompts = [None] * list_size
            processed_result.all_seeds = [None] * list_size
            processed_result.infotexts = [None] * list_size
            processed_result.index_of_first_image = 1

        idx = index(ix, iy, iz)
        if processed.images:
            processed_result.images[idx] = processed.images[0]
            processed_result.all_prompts[idx] = processed.prompt
            processed_result.all_seeds[idx] = processed.seed
            processed_result.infotexts[idx] = processed.infotexts[0]
        else:
            cell_mode = "P"
            cell_size = (processed_result.width, processed_result.height)
            if processed_result.images[0] is not None:
                cell_mode = processed_result.images[0].mode
                cell_size = processed_result.images[0].size
            processed_result.images[idx] = Image.new(cell_mode, cell_size)

    lengths = {"x": len(xs), "y": len(ys), "z": len(zs)}
    third_axes_processed = next(a for a in "xyz" if a not in (first_axes_processed, second_axes_processed))
    loop_order = (first_axes_processed, second_axes_processed, third_axes_processed)
    for indices in product(*(range(lengths[axis]) for axis in loop_order)):
        position = dict(zip(loop_order, indices))
        process_cell(position["x"], position["y"], position["z"])

    if not processed_result:
        print("Unexpected error: Processing could not begin, you may need to refresh the tab or restart the service.")
        return Processed(p, [])
    elif not any(processed_result.images):
        print("Unexpected error: draw_xyz_grid failed to return even a single processed image")
        return Processed(p, [])

    z_count = len(zs)
    for i in range(z_count):
        start_index = (i * len(xs) * len(ys)) + i
        end_index = start_index + len(xs) * len(ys)
        grid = images.image_grid(processed_result.images[start_index:end_index], rows=len(ys))
        if draw_legend:
            grid_max_w, grid_max_h = map(max, zip(*(img.size for img in processed_result.images[start_index:end_index])))
            grid = images.draw_grid_annotations(grid, grid_max_w, grid_max_h, hor_texts, ver_texts, margin_size)
        processed_result.images.insert(i, grid)
        processed_result.all_prompts.insert(i, processed_result.all_prompts[start_index])
        processed_result.all_seeds.insert(i, processed_result.all_seeds[start_index])
        processed_result.infotexts.insert(i, processed_result.infotexts[start_index])

    z_grid = images.image_grid(processed_result.images[:z_count], rows=1)
    z_sub_grid_max_w, z_sub_grid_max_h = map(max, zip(*(img.size for img in processed_result.images[:z_count])))
    if draw_legend:
        z_grid = images.draw_grid_annotations(
            z_grid, z_sub_grid_max_w, z_sub_grid_max_h, title_texts, [[images.GridAnnotation()]]
        )
    processed_result.images.insert(0, z_grid)
    # as in the real file, all_prompts/all_seeds get no entry for the z grid (misaligned with images)
    processed_result.infotexts.insert(0, processed_result.infotexts[0])

    return processed_result


class SharedSettingsStackHelper:
    # mirrors xyz_grid.SharedSettingsStackHelper: afterwards, back to the configured checkpoint and VAE
    def __enter__(self):
        pass

    def __exit__(self, exc_type, exc_value, tb):
        modules.sd_models.reload_model_weights()
        modules.sd_vae.reload_vae_weights()


re_range = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
re_range_float = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*")

re_range_count = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
re_range_count_float = re.compile(r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*")


def _expand_ranges(valslist, number, re_step, re_count, arange):
    # int/float axes: "a-b" (step 1), "a-b (+s)" (step s), "a-b [n]" (n values, linspace); other values kept
    valslist_ext = []
    for val in valslist:
        if val.strip() == "":
            continue
        m = re_step.fullmatch(val)
        mc = re_count.fullmatch(val)
        if m is not None:
            start = number(m.group(1))
            end = number(m.group(2))
            step = number(m.group(3)) if m.group(3) is not None else 1
            valslist_ext += arange(start, end, step)
        elif mc is not None:
            start = number(mc.group(1))
            end = number(mc.group(2))
            num = int(mc.group(3)) if mc.group(3) is not None else 1
            valslist_ext += [number(x) for x in np.linspace(start=start, stop=end, num=num).tolist()]
        else:
            valslist_ext.append(val)
    return valslist_ext


def _int_range(start, end, step):
    return list(range(start, end + 1, step))


def _float_range(start, end, step):
    return np.arange(start, end + step, step).tolist()


class Script(scripts.Script):
    # mirrors xyz_grid.Script
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img]
        labels = [x.label for x in self.current_axis_options]

        axis_inputs = {}
        with gr.Row():
            with gr.Column(scale=19):
                for axis, default in (("x", 1), ("y", 0), ("z", 0)):
                    with gr.Row():
                        axis_type = gr.Dropdown(
                            label=f"{axis.upper()} type",
                            choices=labels,
                            value=labels[default],
                            type="index",
                            elem_id=self.elem_id(f"{axis}_type"),
                        )
                        axis_values = gr.Textbox(label=f"{axis.upper()} values", lines=1, elem_id=self.elem_id(f"{axis}_values"))
                        axis_values_dropdown = gr.Dropdown(
                            label=f"{axis.upper()} values", visible=False, multiselect=True, interactive=True
                        )
                        ToolButton(value=fill_values_symbol, elem_id=f"xyz_grid_fill_{axis}_tool_button", visible=False)
                    axis_inputs[axis] = (axis_type, axis_values, axis_values_dropdown)

        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                draw_legend = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                no_fixed_seeds = gr.Checkbox(label="Keep -1 for seeds", value=False, elem_id=self.elem_id("no_fixed_seeds"))
                with gr.Row():
                    vary_seeds = [
                        gr.Checkbox(
                            label=f"Vary seeds for {axis.upper()}",
                            value=False,
                            min_width=80,
                            elem_id=self.elem_id(f"vary_seeds_{axis}"),
                        )
                        for axis in "xyz"
                    ]
            with gr.Column():
                include_lone_images = gr.Checkbox(
                    label="Include Sub Images", value=False, elem_id=self.elem_id("include_lone_images")
                )
                include_sub_grids = gr.Checkbox(label="Include Sub Grids", value=False, elem_id=self.elem_id("include_sub_grids"))
                csv_mode = gr.Checkbox(
                    label="Use text inputs instead of dropdowns", value=False, elem_id=self.elem_id("csv_mode")
                )
            with gr.Column():
                margin_size = gr.Slider(
                    label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2, elem_id=self.elem_id("margin_size")
                )

        def get_dropdown_update_from_params(axis, params):
            return gr.update(value=csv_string_to_list_strip(params.get(f"{axis} Values", "")))

        self.infotext_fields = []
        for axis, (axis_type, axis_values, axis_values_dropdown) in axis_inputs.items():
            name = axis.upper()
            self.infotext_fields += [
                (axis_type, f"{name} Type"),
                (axis_values, f"{name} Values"),
                (axis_values_dropdown, lambda params, name=name: get_dropdown_update_from_params(name, params)),
            ]
        self.infotext_fields = tuple(self.infotext_fields)

        return [
            *axis_inputs["x"],
            *axis_inputs["y"],
            *axis_inputs["z"],
            draw_legend,
            include_lone_images,
            include_sub_grids,
            no_fixed_seeds,
            *vary_seeds,
            margin_size,
            csv_mode,
        ]

    def run(
        self,
        p,
        x_type,
        x_values,
        x_values_dropdown,
        y_type,
        y_values,
        y_values_dropdown,
        z_type,
        z_values,
        z_values_dropdown,
        draw_legend,
        include_lone_images,
        include_sub_grids,
        no_fixed_seeds,
        vary_seeds_x,
        vary_seeds_y,
        vary_seeds_z,
        margin_size,
        csv_mode,
    ):
        x_type, y_type, z_type = x_type or 0, y_type or 0, z_type or 0  # if axle type is None set to 0

        if not no_fixed_seeds:
            processing.fix_seed(p)

        if not opts.return_grid:
            p.batch_size = 1

        def process_axis(opt, vals, vals_dropdown):
            if opt.label == "Nothing":
                return [0]

            if opt.choices is not None and not csv_mode:
                valslist = vals_dropdown
            elif opt.prepare is not None:
                valslist = opt.prepare(vals)
            else:
                valslist = csv_string_to_list_strip(vals)

            if opt.type is int:
                valslist = _expand_ranges(valslist, int, re_range, re_range_count, _int_range)
            elif opt.type is float:
                valslist = _expand_ranges(valslist, float, re_range_float, re_range_count_float, _float_range)
            elif opt.type == str_permutations:
                valslist = list(permutations(valslist))

            valslist = [opt.type(x) for x in valslist]

            if opt.confirm:  # confirm options are valid before starting
                opt.confirm(p, valslist)

            return valslist

        def axis_values_of(opt, values, values_dropdown):
            if opt.choices is not None and not csv_mode:
                values = list_to_csv_string(values_dropdown)
            return values, process_axis(opt, values, values_dropdown)

        x_opt = self.current_axis_options[x_type]
        x_values, xs = axis_values_of(x_opt, x_values, x_values_dropdown)
        y_opt = self.current_axis_options[y_type]
        y_values, ys = axis_values_of(y_opt, y_values, y_values_dropdown)
        z_opt = self.current_axis_options[z_type]
        z_values, zs = axis_values_of(z_opt, z_values, z_values_dropdown)

        Image.MAX_IMAGE_PIXELS = None  # the check below replaces Pillow's
        grid_mp = round(len(xs) * len(ys) * len(zs) * p.width * p.height / 1000000)
        max_mp = opts.img_max_size_mp
        assert grid_mp < max_mp, (
            f"Error: Resulting grid would be too large ({grid_mp} MPixels) (max configured size is {max_mp} MPixels)"
        )

        def fix_axis_seeds(axis_opt, axis_list):
            if axis_opt.label in ["Seed", "Var. seed"]:
                return [int(random.randrange(4294967294)) if val is None or val == "" or val == -1 else val for val in axis_list]
            return axis_list

        if not no_fixed_seeds:
            xs = fix_axis_seeds(x_opt, xs)
            ys = fix_axis_seeds(y_opt, ys)
            zs = fix_axis_seeds(z_opt, zs)

        axes = {"x": (x_opt, xs), "y": (y_opt, ys), "z": (z_opt, zs)}
        steps_axis = next((values for opt, values in axes.values() if opt.label == "Steps"), None)
        cells = len(xs) * len(ys) * len(zs)
        total_steps = sum(steps_axis) * cells // len(steps_axis) if steps_axis else p.steps * cells
        if isinstance(p, StableDiffusionProcessingTxt2Img) and p.enable_hr:
            hires_axis = next((values for opt, values in axes.values() if opt.label == "Hires steps"), None)
            if hires_axis:
                total_steps += sum(hires_axis) * cells // len(hires_axis)
            elif p.hr_second_pass_steps:
                total_steps += p.hr_second_pass_steps * cells
            else:
                total_steps *= 2
        total_steps *= p.n_iter

        image_cell_count = p.n_iter * p.batch_size
        cell_console_text = f"; {image_cell_count} images per cell" if image_cell_count > 1 else ""
        plural_s = "s" if len(zs) > 1 else ""
        print(
            f"X/Y/Z plot will create {cells * image_cell_count} images on {len(zs)} {len(xs)}x{len(ys)} grid{plural_s}"
            f"{cell_console_text}. (Total steps to process: {total_steps})"
        )
        shared.total_tqdm.updateTotal(total_steps)

        state.xyz_plot_x = AxisInfo(x_opt, xs)
        state.xyz_plot_y = AxisInfo(y_opt, ys)
        state.xyz_plot_z = AxisInfo(z_opt, zs)

        # a slow-to-change axis (like the checkpoint) goes to the outer loop: the costliest axis first (if
        # strictly costliest), then the costlier of the other two; ties keep z, then y
        first_axes_processed, second_axes_processed = "z", "y"
        for axis in "xyz":
            others = [a for a in "xyz" if a != axis]
            if all(axes[axis][0].cost > axes[a][0].cost for a in others):
                first_axes_processed = axis
                second_axes_processed = others[0] if axes[others[0]][0].cost > axes[others[1]][0].cost else others[1]

        grid_infotext = [None] * (1 + len(zs))

        def cell(x, y, z, ix, iy, iz):
            if shared.state.interrupted or state.stopping_generation:
                return Processed(p, [], p.seed, "")

            pc = copy(p)
            pc.styles = pc.styles[:]
            x_opt.apply(pc, x, xs)
            y_opt.apply(pc, y, ys)
            z_opt.apply(pc, z, zs)

            xdim = len(xs) if vary_seeds_x else 1
            ydim = len(ys) if vary_seeds_y else 1
            if vary_seeds_x:
                pc.seed += ix
            if vary_seeds_y:
                pc.seed += iy * xdim
            if vary_seeds_z:
                pc.seed += iz * xdim * ydim

            try:
                res = process_images(pc)
            except Exception as e:
                errors.display(e, "generating image for xyz plot")
                res = Processed(p, [], p.seed, "")

            def add_axis_params(name, opt, values_text, values):
                if opt.label != "Nothing":
                    pc.extra_generation_params[f"{name} Type"] = opt.label
                    pc.extra_generation_params[f"{name} Values"] = values_text
                    if opt.label in ["Seed", "Var. seed"] and not no_fixed_seeds:
                        pc.extra_generation_params[f"Fixed {name} Values"] = ", ".join([str(v) for v in values])

            # sub-grid infotexts
            subgrid_index = 1 + iz
            if grid_infotext[subgrid_index] is None and ix == 0 and iy == 0:
                pc.extra_generation_params = copy(pc.extra_generation_params)
                pc.extra_generation_params["Script"] = self.title()
                add_axis_params("X", x_opt, x_values, xs)
                add_axis_params("Y", y_opt, y_values, ys)
                grid_infotext[subgrid_index] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)

            # main grid infotext
            if grid_infotext[0] is None and ix == 0 and iy == 0 and iz == 0:
                pc.extra_generation_params = copy(pc.extra_generation_params)
                add_axis_params("Z", z_opt, z_values, zs)
                grid_infotext[0] = processing.create_infotext(pc, pc.all_prompts, pc.all_seeds, pc.all_subseeds)

            return res

        with SharedSettingsStackHelper():
            processed = draw_xyz_grid(
                p,
                xs=xs,
                ys=ys,
                zs=zs,
                x_labels=[x_opt.format_value(p, x_opt, x) for x in xs],
                y_labels=[y_opt.format_value(p, y_opt, y) for y in ys],
                z_labels=[z_opt.format_value(p, z_opt, z) for z in zs],
                cell=cell,
                draw_legend=draw_legend,
                include_lone_images=include_lone_images,
                include_sub_grids=include_sub_grids,
                first_axes_processed=first_axes_processed,
                second_axes_processed=second_axes_processed,
                margin_size=margin_size,
            )

        if not processed.images:
            return processed  # it broke, no further handling needed

        z_count = len(zs)

        # the grid infotexts with the axes' extra_generation_params (1 main grid + z_count sub-grids)
        processed.infotexts[: 1 + z_count] = grid_infotext[: 1 + z_count]

        if not include_lone_images:
            processed.images = processed.images[: z_count + 1]

        if opts.grid_save:
            grid_count = z_count + 1 if z_count > 1 else 1
            for g in range(grid_count):
                adj_g = g - 1 if g > 0 else g  # all_prompts/all_seeds have no entry for the z grid
                images.save_image(
                    processed.images[g],
                    p.outpath_grids,
                    "xyz_grid",
                    info=processed.infotexts[g],
                    extension=opts.grid_format,
                    prompt=processed.all_prompts[adj_g],
                    seed=processed.all_seeds[adj_g],
                    grid=True,
                    p=processed,
                )
                if not include_sub_grids:
                    break

        if not include_sub_grids:
            for _ in range(z_count):
                del processed.images[1]
                del processed.all_prompts[1]
                del processed.all_seeds[1]
                del processed.infotexts[1]

        return processed
