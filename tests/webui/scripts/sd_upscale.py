"""Stand-in for scripts/sd_upscale.py of the WebUI root: the img2img "SD upscale" selectable script.

What the real one does that matters to an extension: it enlarges the init image, cuts it into
overlapping tiles of the generation's size, and runs ``process_images`` on the same ``p`` once per
group of ``batch_size`` tiles (the last group may be smaller), then puts the results back together;
it stops when the user interrupts. Simplified: the tiles are pasted back without blending their
overlaps, and the upscaler is a PIL resize."""

from __future__ import annotations

import math

import gradio as gr
from PIL import Image

from modules import processing, scripts, shared
from modules.processing import Processed


def tiles(size, tile, overlap):
    """The top-left corners of overlapping tiles covering ``size`` along one side."""
    if size <= tile:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1)
    return [round(index * step) for index in range(count)]


class Script(scripts.Script):
    def ui(self, is_img2img):
        return [
            gr.HTML("<p>Will upscale the image by the selected scale factor; use width and height to set tile size</p>"),
            gr.Slider(minimum=0, maximum=256, step=16, label="Tile overlap", value=64, elem_id=self.elem_id("overlap")),
            gr.Radio(label="Upscaler", choices=["Lanczos", "Nearest"], value="Lanczos", type="index"),
            gr.Slider(minimum=1.0, maximum=4.0, step=0.05, label="Scale Factor", value=2.0),
        ]

    def run(self, p, _info, overlap, upscaler_index, scale_factor):
        """scripts/sd_upscale.py ``Script.run``: tiles in groups of the batch size, each group one
        ``process_images`` on the same ``p``."""
        source = p.init_images[0]
        resample = (Image.Resampling.LANCZOS, Image.Resampling.NEAREST)[int(upscaler_index)]
        big = source.resize((int(source.width * scale_factor), int(source.height * scale_factor)), resample)
        corners = [(x, y) for y in tiles(big.height, p.height, overlap) for x in tiles(big.width, p.width, overlap)]
        pieces = [big.crop((x, y, x + p.width, y + p.height)) for x, y in corners]
        group = p.batch_size
        p.n_iter = 1
        shared.state.job_count = math.ceil(len(pieces) / group)
        results = []
        for start in range(0, len(pieces), group):
            # A last group of one tile runs as a batch of that tile repeated (processing.py, img2img init).
            p.batch_size, p.init_images = group, pieces[start:start + group]
            processed = processing.process_images(p)
            results += processed.images[processed.index_of_first_image:]
            if shared.state.interrupted:
                break
        for (x, y), result in zip(corners, results):
            big.paste(result, (x, y))
        return Processed(p, [big], p.seed, "")

    def title(self):
        return "SD upscale"

    def show(self, is_img2img):
        """A selectable script of the img2img tab only."""
        return is_img2img
