"""Stand-in for ``modules/processing_scripts/sampler.py`` (WebUI v1.10.1): the built-in sampler
controls. Simplified: one row in both layouts (the option only picks a dropdown or radio buttons)."""

import gradio as gr

from modules import scripts, sd_samplers, sd_schedulers, shared
from modules.infotext_utils import PasteField
from modules.ui_components import FormRow


class ScriptSampler(scripts.ScriptBuiltinUI):
    """sampler.py ``ScriptSampler``: sampling method, schedule type and steps; ``setup()`` (UI runs
    only) copies them onto ``p``. Pasting finds the sampler and scheduler from the infotext's
    "Sampler" and "Schedule type" (older infotexts name both in "Sampler")."""

    section = "sampler"

    def setup(self, p, steps, sampler_name, scheduler):
        p.steps, p.sampler_name, p.scheduler = steps, sampler_name, scheduler

    def ui(self, is_img2img):
        samplers = [sampler.name for sampler in sd_samplers.visible_samplers()]
        schedulers = [scheduler.label for scheduler in sd_schedulers.schedulers]
        choose_sampler = gr.Dropdown if shared.opts.samplers_in_dropdown else gr.Radio
        tab = self.tabname
        with FormRow(elem_id=f"sampler_selection_{tab}"):
            sampler_name = choose_sampler(label="Sampling method", elem_id=f"{tab}_sampling", choices=samplers, value=samplers[0])
            scheduler = gr.Dropdown(label="Schedule type", elem_id=f"{tab}_scheduler", choices=schedulers, value=schedulers[0])
            steps = gr.Slider(minimum=1, maximum=150, step=1, elem_id=f"{tab}_steps", label="Sampling steps", value=20)
        self.infotext_fields = [
            PasteField(steps, "Steps", api="steps"),
            PasteField(sampler_name, sd_samplers.get_sampler_from_infotext, api="sampler_name"),
            PasteField(scheduler, sd_samplers.get_scheduler_from_infotext, api="scheduler"),
        ]
        return steps, sampler_name, scheduler

    def title(self):
        return "Sampler"
