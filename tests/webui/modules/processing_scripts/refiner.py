"""Stand-in for ``modules/processing_scripts/refiner.py`` (WebUI v1.10.1): the built-in "Refiner"
accordion. Simplified: no refresh button beside the checkpoint list."""

import gradio as gr

from modules import scripts, sd_models
from modules.infotext_utils import PasteField
from modules.ui_components import InputAccordion


class ScriptRefiner(scripts.ScriptBuiltinUI):
    """refiner.py ``ScriptRefiner``: ``setup()`` (UI runs only) sets ``p.refiner_checkpoint`` and
    ``p.refiner_switch_at``, both None unless the accordion is open with a checkpoint chosen; the
    switch itself happens during sampling (sd_samplers_common.apply_refiner)."""

    section = "accordions"
    create_group = False

    def setup(self, p, enabled, checkpoint, switch_at):
        chosen = enabled and checkpoint not in (None, "", "None")
        p.refiner_checkpoint, p.refiner_switch_at = (checkpoint, switch_at) if chosen else (None, None)

    def ui(self, is_img2img):
        with InputAccordion(False, label="Refiner", elem_id=self.elem_id("enable")) as enabled:
            with gr.Row():
                checkpoint = gr.Dropdown(label="Checkpoint", value="", choices=sd_models.checkpoint_tiles(),
                                         elem_id=self.elem_id("checkpoint"),
                                         tooltip="switch to another model in the middle of generation")
                switch_at = gr.Slider(value=0.8, label="Switch at", minimum=0.01, maximum=1.0, step=0.01,
                                      elem_id=self.elem_id("switch_at"),
                                      tooltip="fraction of sampling steps when the switch to refiner model should happen; "
                                      "1=never, 0.5=switch in the middle of generation")

        def pasted_checkpoint(params):
            info = sd_models.get_closet_checkpoint_match(params.get("Refiner"))
            return None if info is None else info.title

        self.infotext_fields = [
            PasteField(enabled, lambda params: "Refiner" in params),
            PasteField(checkpoint, pasted_checkpoint, api="refiner_checkpoint"),
            PasteField(switch_at, "Refiner switch at", api="refiner_switch_at"),
        ]
        return enabled, checkpoint, switch_at

    def title(self):
        return "Refiner"
