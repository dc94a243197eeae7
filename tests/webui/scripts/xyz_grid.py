"""Stand-in for scripts/xyz_grid.py of the WebUI root: the built-in "X/Y/Z plot" selectable script.

The stand-in's scripts.load_scripts loads this file as the real host loads a root script: the module
is named "xyz_grid.py", is not put in sys.modules, and runs again on every load (a fresh
``axis_options`` each time). Extensions find it among ``scripts.scripts_data`` and append their
``AxisOption``s to ``axis_options``, usually from an on_before_ui callback, since ``ui()`` takes the
tab's axis list (``current_axis_options``).

A plot (``Script.run``) works as the real one does: each axis's text (or, for an axis with
``choices``, the dropdown's list unless "use text inputs" is on) becomes a list of values (int and
float axes understand "1-5", "1-10 (+3)", "1-10 [4]"); the axis's ``confirm(p, values)`` may refuse
them, which stops the plot before any image is made; seeds are fixed first unless "Keep -1"; a
shallow ``copy(p)`` per cell gets every axis's ``apply(cell, value, values)`` and a full
``process_images``, the costliest axis in the outer loop; a cell's first image goes into the grid,
one grid per Z value with the values as legends, and the grid of those grids first; the grid
infotexts name the axes. Afterwards the configured checkpoint and VAE are loaded again.
Left out: the UI's event handlers (swapping axes, filling in choices, switching text/dropdown
input), the console summary and progress-bar total, and most built-in axes: kept are those for
what the stand-in host can do."""

from __future__ import annotations

import csv
import io
import os
import random
import re
from collections import namedtuple
from copy import copy
from itertools import product
from typing import Any, Callable

import gradio as gr
import numpy as np
from PIL import Image

from modules import errors, images, processing, scripts, sd_models, sd_samplers, sd_schedulers, sd_vae, shared
from modules.processing import Processed, process_images

AxisInfo = namedtuple("AxisInfo", ["axis", "values"])
"""What ``state.xyz_plot_x`` / ``_y`` / ``_z`` hold during a plot: the AxisOption and its values."""


# --- what an axis does to a cell ------------------------------------------------------------------


def apply_field(field: str) -> Callable:
    """An ``apply`` that sets attribute ``field`` of the cell's ``p`` to the value."""

    def set_field(p, value, _values):
        setattr(p, field, value)

    return set_field


def apply_override(setting: str) -> Callable:
    """An ``apply`` that overrides a setting for the cell. ``override_settings`` is the dict every
    cell shares with ``p`` (cells are shallow copies), so each cell writes its own value again."""

    def override(p, value, _values):
        p.override_settings[setting] = value

    return override


def do_nothing(p, value, values):
    pass


def apply_prompt(p, value, values):
    """Prompt S/R: the first value is the text to find; each value replaces it in both prompts."""
    searched = values[0]
    if searched not in p.prompt and searched not in p.negative_prompt:
        raise RuntimeError(f"Prompt S/R did not find {searched} in prompt or negative prompt.")
    p.prompt = p.prompt.replace(searched, value)
    p.negative_prompt = p.negative_prompt.replace(searched, value)


def apply_checkpoint(p, value, values):
    info = sd_models.get_closet_checkpoint_match(value)
    if info is None:
        raise RuntimeError(f"Unknown checkpoint: {value}")
    p.override_settings["sd_model_checkpoint"] = info.name


def apply_size(p, value, values):
    """"WIDTHxHEIGHT"; an unreadable size is reported and the cell keeps the plot's size."""
    width, _, height = value.partition("x")
    try:
        p.width, p.height = int(width.strip()), int(height.strip())
    except ValueError:
        errors.report(f"Invalid size in XYZ plot: {value}")


# --- checks made before the first cell ------------------------------------------------------------


def confirm_samplers(p, values):
    unknown = [name for name in values if name.lower() not in sd_samplers.samplers_map]
    if unknown:
        raise RuntimeError(f"Unknown sampler: {unknown[0]}")


def confirm_checkpoints(p, values):
    missing = [name for name in values if sd_models.get_closet_checkpoint_match(name) is None]
    if missing:
        raise RuntimeError(f"Unknown checkpoint: {missing[0]}")


def confirm_checkpoints_or_none(p, values):
    confirm_checkpoints(p, [name for name in values if name not in (None, "", "None", "none")])


# --- how a value is shown in the legend -----------------------------------------------------------


def format_value(p, opt, value):
    return round(value, 8) if type(value) is float else value


def format_value_add_label(p, opt, value):
    return f"{opt.label}: {format_value(p, opt, value)}"


def format_nothing(p, opt, value):
    return ""


def format_remove_path(p, opt, value):
    return os.path.basename(value)


# --- the axes ---------------------------------------------------------------------------------------


class AxisOption:
    """xyz_grid.AxisOption: ``type`` converts each value (int and float axes also expand ranges),
    ``apply(p, value, values)`` puts a value into a cell, ``format_value(p, opt, value)`` makes its
    legend, ``confirm(p, values)`` may refuse the values before the plot starts, ``cost`` puts a
    slow axis (a checkpoint) in the outer loop, ``choices()`` lists the values a dropdown offers,
    ``prepare(text)`` replaces the comma-separated reading of the text."""

    def __init__(self, label, type, apply, format_value=format_value_add_label, confirm=None, cost=0.0, choices=None,
                 prepare=None):
        self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
        self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare


class AxisOptionTxt2Img(AxisOption):
    """An axis offered on the txt2img tab only."""

    is_img2img = False


class AxisOptionImg2Img(AxisOption):
    """An axis offered on the img2img tab only."""

    is_img2img = True


def _sampler_names(for_img2img: bool) -> Callable[[], list[str]]:
    def names():
        listed = sd_samplers.samplers_for_img2img if for_img2img else sd_samplers.samplers
        return [sampler.name for sampler in listed if sampler.name not in shared.opts.hide_samplers]

    return names


def _checkpoint_names() -> list[str]:
    return sorted(sd_models.checkpoints_list, key=str.casefold)


def _plain(option: type, kind: type, *labelled_fields: tuple[str, str]) -> list[AxisOption]:
    return [option(label, kind, apply_field(field)) for label, field in labelled_fields]


_sampler_axis = {"format_value": format_value, "confirm": confirm_samplers}
_checkpoint_axis = {"format_value": format_remove_path, "cost": 1.0}

axis_options = [
    AxisOption("Nothing", str, do_nothing, format_value=format_nothing),
    *_plain(AxisOption, int, ("Seed", "seed"), ("Var. seed", "subseed")),
    *_plain(AxisOption, float, ("Var. strength", "subseed_strength")),
    *_plain(AxisOption, int, ("Steps", "steps")),
    *_plain(AxisOptionTxt2Img, int, ("Hires steps", "hr_second_pass_steps")),
    *_plain(AxisOption, float, ("CFG Scale", "cfg_scale")),
    *_plain(AxisOptionImg2Img, float, ("Image CFG Scale", "image_cfg_scale")),
    AxisOption("Prompt S/R", str, apply_prompt, format_value=format_value),
    AxisOptionTxt2Img("Sampler", str, apply_field("sampler_name"), choices=_sampler_names(False), **_sampler_axis),
    AxisOptionTxt2Img("Hires sampler", str, apply_field("hr_sampler_name"), confirm=confirm_samplers,
                      choices=_sampler_names(True)),
    AxisOptionImg2Img("Sampler", str, apply_field("sampler_name"), choices=_sampler_names(True), **_sampler_axis),
    AxisOption("Checkpoint name", str, apply_checkpoint, confirm=confirm_checkpoints, choices=_checkpoint_names,
               **_checkpoint_axis),
    AxisOption("Schedule type", str, apply_field("scheduler"), choices=lambda: [s.label for s in sd_schedulers.schedulers]),
    AxisOption("Clip skip", int, apply_override("CLIP_stop_at_last_layers")),
    *_plain(AxisOption, float, ("Denoising", "denoising_strength")),
    AxisOption("Token merging ratio", float, apply_override("token_merging_ratio")),
    AxisOption("Refiner checkpoint", str, apply_field("refiner_checkpoint"), confirm=confirm_checkpoints_or_none,
               choices=lambda: ["None", *_checkpoint_names()], **_checkpoint_axis),
    *_plain(AxisOption, float, ("Refiner switch at", "refiner_switch_at")),
    AxisOption("Size", str, apply_size),
]


# --- reading the values an axis was given -----------------------------------------------------------


def list_to_csv_string(values: list) -> str:
    with io.StringIO() as text:
        csv.writer(text).writerow(values)
        return text.getvalue().strip()


def csv_string_to_list_strip(text: str) -> list[str]:
    return [item.strip() for row in csv.reader(io.StringIO(text), skipinitialspace=True) for item in row]


def _range_pattern(number: str, step: str) -> re.Pattern:
    """"A-B", "A-B (+S)" (a signed step) or "A-B [N]" (N values evenly spread), spaces allowed."""
    return re.compile(rf"\s*({number})\s*-\s*({number})\s*(?:\(({step})\s*\)|\[(\d+)\s*\])?\s*")


_RANGES = {
    int: _range_pattern(r"[+-]?\s*\d+", r"[+-]\d+"),
    float: _range_pattern(r"[+-]?\s*\d+(?:\.\d*)?", r"[+-]\d+(?:\.\d*)?"),
}


def _expand_ranges(texts: list[str], kind: type) -> list:
    """The int or float axis's entries with every range replaced by its values (both ends
    included); blank entries dropped, anything else left for ``kind`` to convert."""
    expanded: list = []
    for text in texts:
        if not text.strip():
            continue
        found = _RANGES[kind].fullmatch(text)
        if found is None:
            expanded.append(text)
            continue
        first, last, step, count = found.groups()
        first, last = kind(first), kind(last)
        if count is not None:
            expanded += [kind(value) for value in np.linspace(first, last, num=int(count)).tolist()]
        elif kind is int:
            expanded += list(range(first, last + 1, int(step or 1)))
        else:
            stride = float(step or 1)
            expanded += np.arange(first, last + stride, stride).tolist()
    return expanded


def _axis_values(p, opt: AxisOption, text, chosen: list, csv_mode: bool) -> tuple[Any, list]:
    """(the values as the infotext names them, the list of values) for one axis; runs its confirm."""
    if opt.label == "Nothing":
        return text, [0]
    if opt.choices is not None and not csv_mode:
        text, entries = list_to_csv_string(chosen), chosen
    elif opt.prepare is not None:
        entries = opt.prepare(text)
    else:
        entries = csv_string_to_list_strip(text)
    if opt.type in _RANGES:
        entries = _expand_ranges(entries, opt.type)
    values = [opt.type(entry) for entry in entries]
    if opt.confirm:
        opt.confirm(p, values)
    return text, values


# --- the plot -------------------------------------------------------------------------------------------


_ARGUMENTS = namedtuple(
    "_ARGUMENTS",
    "x_type x_values x_values_dropdown y_type y_values y_values_dropdown z_type z_values z_values_dropdown draw_legend "
    "include_lone_images include_sub_grids no_fixed_seeds vary_seeds_x vary_seeds_y vary_seeds_z margin_size csv_mode",
)
"""The script's arguments, in the order of the components ``ui()`` returns (the API's order)."""

_SEED_AXES = ("Seed", "Var. seed")


class _Axis(namedtuple("_AxisFields", "name opt text values vary")):
    """One of the plot's three axes: its name ("X"), option, values text, values, vary-seeds flag."""

    def infotext_params(self, no_fixed_seeds: bool) -> dict[str, Any]:
        """What a grid's infotext says about this axis (nothing for "Nothing")."""
        if self.opt.label == "Nothing":
            return {}
        params = {f"{self.name} Type": self.opt.label, f"{self.name} Values": self.text}
        if self.opt.label in _SEED_AXES and not no_fixed_seeds:
            params[f"Fixed {self.name} Values"] = ", ".join(str(value) for value in self.values)
        return params


def _loop_order(axes: dict[str, _Axis]) -> list[str]:
    """Outermost loop first: an axis strictly costlier than both others, then the costlier of the
    remaining two (the last of them on a tie); without a costliest axis Z, Y, X."""
    for name, axis in axes.items():
        others = [other for other in axes if other != name]
        if all(axis.opt.cost > axes[other].opt.cost for other in others):
            middle = others[0] if axes[others[0]].opt.cost > axes[others[1]].opt.cost else others[1]
            return [name, middle, next(other for other in others if other != middle)]
    return ["z", "y", "x"]


class _Cells:
    """The cells' results laid out by index ``ix + iy*nx + iz*nx*ny``; ``template`` is the first
    result (a copy of it becomes the plot's result)."""

    def __init__(self, count: int) -> None:
        self.images: list = [None] * count
        self.prompts: list = [None] * count
        self.seeds: list = [None] * count
        self.infotexts: list = [None] * count
        self.template: Processed | None = None

    def put(self, index: int, processed: Processed) -> None:
        if self.template is None:
            self.template = processed
        if processed.images:
            self.images[index] = processed.images[0]
            self.prompts[index], self.seeds[index] = processed.prompt, processed.seed
            self.infotexts[index] = processed.infotexts[0]
            return
        # a failed or interrupted cell: an empty image shaped like cell 0's (or the plot's size)
        first = self.images[0]
        shape = (first.mode, first.size) if first is not None else ("P", (self.template.width, self.template.height))
        self.images[index] = Image.new(*shape)

    def grids(self, shape: tuple[int, int, int], labels: list[list[str]], draw_legend: bool, margin: int) -> Processed:
        """xyz_grid.draw_xyz_grid's result: images [grid of the Z grids, one grid per Z value, cells],
        infotexts alike (the first grid takes cell 0's), prompts and seeds without an entry for the
        first grid (misaligned with the images, as in the real script)."""
        nx, ny, nz = shape
        column_titles, row_titles, z_titles = ([[images.GridAnnotation(text)] for text in axis] for axis in labels)
        per_grid = nx * ny
        starts = range(0, nz * per_grid, per_grid)
        z_grids = []
        for start in starts:
            block = self.images[start : start + per_grid]
            grid = images.image_grid(block, rows=ny)
            if draw_legend:
                grid = images.draw_grid_annotations(grid, *_largest(block), column_titles, row_titles, margin)
            z_grids.append(grid)
        overview = images.image_grid(z_grids, rows=1)
        if draw_legend:
            overview = images.draw_grid_annotations(overview, *_largest(z_grids), z_titles, [[images.GridAnnotation()]])

        result = copy(self.template)
        result.index_of_first_image = 1
        result.images = [overview, *z_grids, *self.images]
        result.infotexts = [self.infotexts[0], *(self.infotexts[start] for start in starts), *self.infotexts]
        result.all_prompts = [*(self.prompts[start] for start in starts), *self.prompts]
        result.all_seeds = [*(self.seeds[start] for start in starts), *self.seeds]
        return result


def _infotext_with(cell, params: dict[str, Any]) -> str:
    """The cell's infotext with ``params`` added. The cell gets a dict of its own for that: its
    ``extra_generation_params`` is the one ``p`` and every other cell share."""
    cell.extra_generation_params = {**cell.extra_generation_params, **params}
    return processing.create_infotext(cell, cell.all_prompts, cell.all_seeds, cell.all_subseeds)


def _largest(pictures: list) -> tuple[int, int]:
    return max(picture.width for picture in pictures), max(picture.height for picture in pictures)


class Script(scripts.Script):
    """xyz_grid.Script."""

    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        self.current_axis_options = [opt for opt in axis_options if type(opt) is AxisOption or opt.is_img2img == is_img2img]
        labels = [opt.label for opt in self.current_axis_options]
        made: dict[str, Any] = {}
        self.infotext_fields = []
        with gr.Row(), gr.Column(scale=19):
            for axis, default in (("x", labels[1]), ("y", labels[0]), ("z", labels[0])):
                name = axis.upper()
                with gr.Row():
                    made[f"{axis}_type"] = gr.Dropdown(label=f"{name} type", choices=labels, value=default, type="index",
                                                       elem_id=self.elem_id(f"{axis}_type"))
                    made[f"{axis}_values"] = gr.Textbox(label=f"{name} values", lines=1, elem_id=self.elem_id(f"{axis}_values"))
                    made[f"{axis}_values_dropdown"] = gr.Dropdown(label=f"{name} values", visible=False, multiselect=True,
                                                                  interactive=True)
                self.infotext_fields += [
                    (made[f"{axis}_type"], f"{name} Type"),
                    (made[f"{axis}_values"], f"{name} Values"),
                    (made[f"{axis}_values_dropdown"], lambda params, name=name: gr.update(
                        value=csv_string_to_list_strip(params.get(f"{name} Values", "")))),
                ]

        def checkbox(name: str, label: str, **more) -> None:
            made[name] = gr.Checkbox(label=label, value=False, elem_id=self.elem_id(name), **more)

        with gr.Row(variant="compact", elem_id="axis_options"):
            with gr.Column():
                made["draw_legend"] = gr.Checkbox(label="Draw legend", value=True, elem_id=self.elem_id("draw_legend"))
                checkbox("no_fixed_seeds", "Keep -1 for seeds")
                with gr.Row():
                    for axis in "XYZ":
                        checkbox(f"vary_seeds_{axis.lower()}", f"Vary seeds for {axis}", min_width=80,
                                 tooltip=f"Use different seeds for images along {axis} axis.")
            with gr.Column():
                for name, label in (("include_lone_images", "Include Sub Images"), ("include_sub_grids", "Include Sub Grids"),
                                    ("csv_mode", "Use text inputs instead of dropdowns")):
                    checkbox(name, label)
            with gr.Column():
                made["margin_size"] = gr.Slider(label="Grid margins (px)", minimum=0, maximum=500, value=0, step=2,
                                                elem_id=self.elem_id("margin_size"))
        return [made[name] for name in _ARGUMENTS._fields]

    def run(self, p, *args):
        settings = _ARGUMENTS(*args)
        if not settings.no_fixed_seeds:
            processing.fix_seed(p)
        if not shared.opts.return_grid:
            p.batch_size = 1

        parsed = {}
        for axis in "xyz":
            opt = self.current_axis_options[getattr(settings, f"{axis}_type") or 0]
            given = (getattr(settings, f"{axis}_values"), getattr(settings, f"{axis}_values_dropdown"))
            parsed[axis] = (opt, *_axis_values(p, opt, *given, settings.csv_mode))
        shape = tuple(len(values) for _, _, values in parsed.values())
        cell_count = shape[0] * shape[1] * shape[2]

        Image.MAX_IMAGE_PIXELS = None  # the plot's own limit below replaces Pillow's
        megapixels = round(cell_count * p.width * p.height / 1000000)
        if megapixels >= shared.opts.img_max_size_mp:
            raise AssertionError(f"Error: Resulting grid would be too large ({megapixels} MPixels) "
                                 f"(max configured size is {shared.opts.img_max_size_mp} MPixels)")

        axes: dict[str, _Axis] = {}
        for axis, (opt, text, values) in parsed.items():
            if opt.label in _SEED_AXES and not settings.no_fixed_seeds:
                values = [random.randrange(4294967294) if value in (None, "", -1) else value for value in values]
            axes[axis] = _Axis(axis.upper(), opt, text, values, getattr(settings, f"vary_seeds_{axis}"))
            setattr(shared.state, f"xyz_plot_{axis}", AxisInfo(opt, values))
        legends = [[axis.opt.format_value(p, axis.opt, value) for value in axis.values] for axis in axes.values()]

        shared.state.job_count = cell_count * p.n_iter
        grid_infotexts: list[str | None] = [None] * (1 + shape[2])
        cells = _Cells(cell_count)
        order = _loop_order(axes)
        try:
            for indices in product(*(range(len(axes[axis].values)) for axis in order)):
                at = dict(zip(order, indices))
                index = at["x"] + shape[0] * (at["y"] + shape[1] * at["z"])
                shared.state.job = f"{index + 1} out of {cell_count}"
                cells.put(index, self._cell(p, axes, at, settings.no_fixed_seeds, grid_infotexts))
        finally:
            sd_models.reload_model_weights()  # xyz_grid.SharedSettingsStackHelper: back to the configured ones
            sd_vae.reload_vae_weights()
        if cells.template is None:
            return Processed(p, [])

        result = cells.grids(shape, legends, settings.draw_legend, settings.margin_size)
        grid_count = 1 + shape[2]
        result.infotexts[:grid_count] = grid_infotexts
        if not settings.include_lone_images:
            result.images = result.images[:grid_count]
        if shared.opts.grid_save:
            for g in range(grid_count if settings.include_sub_grids and shape[2] > 1 else 1):
                entry = max(g - 1, 0)  # prompts and seeds have no entry for the first grid
                images.save_image(result.images[g], p.outpath_grids, "xyz_grid", info=result.infotexts[g],
                                  extension=shared.opts.grid_format, prompt=result.all_prompts[entry],
                                  seed=result.all_seeds[entry], grid=True, p=result)
        if not settings.include_sub_grids:
            for entries in (result.images, result.all_prompts, result.all_seeds, result.infotexts):
                del entries[1:grid_count]
        return result

    def _cell(self, p, axes: dict[str, _Axis], at: dict[str, int], no_fixed_seeds: bool, grid_infotexts: list) -> Processed:
        """One cell: a copy of ``p`` with each axis's value applied (an exception there stops the
        plot), then the seed moved along the axes that vary it, then a full ``process_images`` (an
        exception there is shown and the cell stays empty). The cell at X and Y index 0 of a Z value
        also writes that Z grid's infotext; the very first cell the overview's too."""
        state = shared.state
        if state.interrupted or state.stopping_generation:
            return Processed(p, [], p.seed, "")
        cell = copy(p)
        cell.styles = cell.styles[:]
        for name, axis in axes.items():
            axis.opt.apply(cell, axis.values[at[name]], axis.values)
        stride = 1
        for name, axis in axes.items():
            if axis.vary:
                cell.seed += at[name] * stride
                stride *= len(axis.values)
        try:
            processed = process_images(cell)
        except Exception as error:
            errors.display(error, "generating image for xyz plot")
            processed = Processed(p, [], p.seed, "")

        if at["x"] == at["y"] == 0:
            about_xy = {"Script": self.title(), **axes["x"].infotext_params(no_fixed_seeds)}
            about_xy.update(axes["y"].infotext_params(no_fixed_seeds))
            grid_infotexts[1 + at["z"]] = _infotext_with(cell, about_xy)
            if at["z"] == 0:
                grid_infotexts[0] = _infotext_with(cell, axes["z"].infotext_params(no_fixed_seeds))
        return processed
