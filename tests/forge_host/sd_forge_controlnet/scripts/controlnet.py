"""Stand-in for Forge's built-in ControlNet script
(extensions-builtin/sd_forge_controlnet/scripts/controlnet.py, ``ControlNetForForgeOfficial``).

What MasaCtrl meets of it: an always-on script titled "ControlNet" whose arguments are its units
(dicts or objects with ``enabled``; here also ``weight`` and ``image``, a (1 or N, 3, H, W) tensor in
[0, 1]), and which, in ``process_before_every_sampling`` (it loads before other extensions, so it
runs first), puts one link per enabled unit on a clone of the pass's U-Net patcher
(``ControlNetPatcher.process_before_every_sampling`` -> ``apply_controlnet_advanced``: the clone
gets ``add_patched_controlnet`` and replaces ``forge_objects.unet``). The links are the ``backend``
stand-in's (tests/forge/backend/patcher/controlnet.py); a unit's image becomes the link's
``cond_hint_original``. Left out: preprocessors, models, resize modes, hires options, the UI.
"""

import gradio as gr
from backend.patcher.controlnet import ControlNet

from modules import scripts

UNIT_COUNT = 3


def _field(unit, name, default=None):
    return unit.get(name, default) if isinstance(unit, dict) else getattr(unit, name, default)


class ControlNetForForgeOfficial(scripts.Script):
    def __init__(self):
        super().__init__()
        self.applied = []  # test instrumentation: (pass, links added), per call

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Accordion("ControlNet Integrated", open=False):
            units = [gr.State({"enabled": False}) for _ in range(UNIT_COUNT)]
        return units

    def process_before_every_sampling(self, p, *units, **kwargs):
        links = 0
        for unit in units:
            if not _field(unit, "enabled", False):
                continue
            link = ControlNet(value=float(_field(unit, "weight", 1.0)), hint=_field(unit, "image"))
            patcher = p.sd_model.forge_objects.unet.clone()
            patcher.add_patched_controlnet(link)
            p.sd_model.forge_objects.unet = patcher
            links += 1
        self.applied.append(("hires" if getattr(p, "is_hr_pass", False) else "first", links))
