"""Stand-in for modules/shared.py (with what modules/shared_init.py puts into it): the WebUI's
process-wide objects. ``opts`` (settings), ``cmd_opts`` (command line), ``state`` (job progress) and
``sd_model`` (the loaded model: a property of ``shared_items.Shared``, None until the harness loads a
checkpoint) are what extensions mostly read.

Simplified: no styles are defined, no hypernetworks or upscaler models are found (images.py adds the
PIL upscalers to ``sd_upscalers``), and ``total_tqdm`` only counts."""

from __future__ import annotations

import sys
from typing import Any, List

# shared_items is imported for its side effect: it makes shared.sd_model a property
from modules import devices, options, shared_cmd_options, shared_items, shared_options, shared_state  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
OptionInfo = options.OptionInfo
options_section = options.options_section
options_templates = shared_options.options_templates
opts = options.Options(options_templates)
"""The settings. Its table of declared settings is ``options_templates`` itself, so a built-in script
that adds to options_templates when it loads (as the real processing_scripts/comments.py does)
declares a setting."""

demo = None
settings_components = None
parallel_processing_allowed = True
progress_print_out = sys.stdout
sd_upscalers: List[Any] = []
loaded_hypernetworks: List[Any] = []

latent_upscale_default_mode = "Latent"


def _latent_interpolation(label: str) -> dict:
    # "Latent (bicubic antialiased)" -> bicubic with antialiasing; no method named -> bilinear
    words = label[len("Latent"):].strip(" ()").split()
    method = next((word for word in words if word != "antialiased"), "bilinear")
    return {"mode": method, "antialias": "antialiased" in words}


latent_upscale_modes = {
    label: _latent_interpolation(label)
    for label in ["Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
                  "Latent (nearest-exact)"]
}
"""The hires-fix upscalers that resize the latent (shared.py latent_upscale_modes): label -> the
torch interpolation they use."""


class _StyleDatabase:
    """modules/styles.py StyleDatabase with no styles saved: applying styles leaves a prompt as it is
    and none is ever found in a prompt."""

    styles: dict = {}

    def apply_styles_to_prompt(self, prompt, styles):
        return prompt

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return prompt

    def extract_styles_from_prompt(self, prompt, negative_prompt):
        return [], prompt, negative_prompt


class _TotalProgress:
    """modules/shared_total_tqdm.py TotalTQDM: the console's progress bar over a whole job, kept here as
    counters without a bar."""

    def __init__(self):
        self.total = self.count = 0

    def updateTotal(self, new_total):
        self.total = new_total

    def update(self):
        self.count += 1

    def clear(self):
        self.count = 0


prompt_styles = _StyleDatabase()
total_tqdm = _TotalProgress()
device = devices.device
state = shared_state.State()
