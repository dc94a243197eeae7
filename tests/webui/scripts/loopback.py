"""Stand-in for scripts/loopback.py of the WebUI root: the img2img "Loopback" selectable script.

What the real one does that matters to an extension: it runs ``process_images`` several times on
the same ``p``, each time with batch size 1 and batch count 1, feeding each result back in as the
next init image, the denoising strength moving towards a final value along a curve; it stops when
the user interrupts. Left out: appending an interrogation to the prompt, and color correction."""

from __future__ import annotations

import math

import gradio as gr

from modules import processing, scripts, shared
from modules.processing import Processed

CURVES = {
    "Linear": lambda progress: progress,
    "Aggressive": lambda progress: math.sin(progress * math.pi / 2),
    "Lazy": lambda progress: 1 - math.cos(progress * math.pi / 2),
}


class Script(scripts.Script):
    def ui(self, is_img2img):
        return [
            gr.Slider(minimum=1, maximum=32, step=1, label="Loops", value=4, elem_id=self.elem_id("loops")),
            gr.Slider(minimum=0, maximum=1, step=0.01, label="Final denoising strength", value=0.5,
                      elem_id=self.elem_id("final_denoising_strength")),
            gr.Dropdown(label="Denoising strength curve", choices=list(CURVES), value="Linear"),
            gr.Dropdown(label="Append interrogated prompt at each iteration", choices=["None"], value="None"),
        ]

    def run(self, p, loops, final_denoising_strength, denoising_curve, append_interrogation):
        """scripts/loopback.py ``Script.run``: every batch count starts again from the first init image;
        each loop is one ``process_images`` of one image on the same ``p``."""
        loops, batches = int(loops), p.n_iter
        first_strength, first_image = p.denoising_strength, p.init_images
        shared.state.job_count = loops * batches
        kept, infotexts = [], []
        for _ in range(batches):
            p.init_images, p.denoising_strength = first_image, first_strength
            for loop in range(loops):
                p.n_iter, p.batch_size = 1, 1
                if loop:
                    progress = loop / (loops - 1) if loops > 1 else 1
                    p.denoising_strength = first_strength + (final_denoising_strength - first_strength) * \
                        CURVES[denoising_curve](progress)
                processed = processing.process_images(p)
                if shared.state.interrupted or not processed.images:
                    break
                p.init_images = [processed.images[0]]
                p.seed = processed.seed + 1
                kept.append(processed.images[0])
                infotexts.append(processed.infotexts[0])
            if shared.state.interrupted:
                break
        return Processed(p, kept, p.seed, infotexts[0] if infotexts else "", infotexts=infotexts)

    def title(self):
        return "Loopback"

    def show(self, is_img2img):
        """A selectable script of the img2img tab only."""
        return is_img2img
