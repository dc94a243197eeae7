"""Stand-in for ``modules/processing_scripts/seed.py`` (WebUI v1.10.1): the built-in seed controls.
Simplified: no random/reuse buttons (the stand-in UI has no generation-info box to reuse from)."""

import gradio as gr

from modules import scripts
from modules.infotext_utils import PasteField
from modules.shared import cmd_opts


class ScriptSeed(scripts.ScriptBuiltinUI):
    """seed.py ``ScriptSeed``: the seed, and behind "Extra" the variation seed and strength and the
    "resize seed from" size. ``setup()`` (UI runs only) copies them onto ``p``; the extras only when
    "Extra" is ticked and they are in use."""

    section = "seed"
    create_group = False

    def setup(self, p, seed, extra, subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h):
        p.seed = seed
        if extra and subseed_strength > 0:
            p.subseed, p.subseed_strength = subseed, subseed_strength
        if extra and seed_resize_from_w > 0 and seed_resize_from_h > 0:
            p.seed_resize_from_w, p.seed_resize_from_h = seed_resize_from_w, seed_resize_from_h

    def ui(self, is_img2img):
        with gr.Row(elem_id=self.elem_id("seed_row")):
            if cmd_opts.use_textbox_seed:
                seed = gr.Textbox(label="Seed", value="", elem_id=self.elem_id("seed"), min_width=100)
            else:
                seed = gr.Number(label="Seed", value=-1, elem_id=self.elem_id("seed"), min_width=100, precision=0)
            extra = gr.Checkbox(label="Extra", elem_id=self.elem_id("subseed_show"), value=False)
        with gr.Group(visible=False, elem_id=self.elem_id("seed_extras")):
            subseed = gr.Number(label="Variation seed", value=-1, elem_id=self.elem_id("subseed"), precision=0)
            strength = gr.Slider(label="Variation strength", value=0.0, minimum=0, maximum=1, step=0.01,
                                 elem_id=self.elem_id("subseed_strength"))
            from_w, from_h = (gr.Slider(minimum=0, maximum=2048, step=8, value=0, label=f"Resize seed from {side}",
                                        elem_id=self.elem_id(f"seed_resize_from_{side[0]}")) for side in ("width", "height"))

        # as in the real file, the width slider is pasted from "Seed resize from-1" but named after the
        # height for the API (and the other way round)
        self.infotext_fields = [
            PasteField(seed, "Seed", api="seed"),
            PasteField(extra, lambda params: "Variation seed" in params or "Seed resize from-1" in params),
            PasteField(subseed, "Variation seed", api="subseed"),
            PasteField(strength, "Variation seed strength", api="subseed_strength"),
            PasteField(from_w, "Seed resize from-1", api="seed_resize_from_h"),
            PasteField(from_h, "Seed resize from-2", api="seed_resize_from_w"),
        ]
        return seed, extra, subseed, strength, from_w, from_h

    def title(self):
        return "Seed"
