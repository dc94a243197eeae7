"""Mirrors modules/shared.py (+ the parts of modules/shared_init.py that create opts and state).

``sd_model`` is a property (modules/shared_items.py ``Shared``, installed when shared_items is imported
above, as in the real host) over ``sd_models.model_data``: None until the harness loads a checkpoint."""

import sys

from modules import options, shared_cmd_options, shared_items, shared_options, util  # noqa: F401 - shared_items: see sd_model
from modules.paths_internal import data_path, extensions_builtin_dir, extensions_dir, models_path, script_path  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser

batch_cond_uncond = True  # old field, unused in the real host too
parallel_processing_allowed = True
demo = None
device = None  # set below, after devices is importable
weight_load_location = None
xformers_available = False
hypernetworks = {}
loaded_hypernetworks = []
face_restorers = []
settings_components = None
tab_names = []

latent_upscale_default_mode = "Latent"
latent_upscale_modes = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}

sd_upscalers = []  # filled by modules/images.py with the PIL-only upscalers ("None", "Lanczos", "Nearest")
clip_model = None
progress_print_out = sys.stdout

options_section = options.options_section
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML
natural_sort_key = None
topological_sort = util.topological_sort

# mirrors modules/shared_init.py initialize: opts reads the (mutable) template dict as its labels
options_templates = shared_options.options_templates
restricted_opts = shared_options.restricted_opts
opts = options.Options(options_templates, restricted_opts)

sd_model = None


class _PromptStyles:
    # mirrors modules/styles.py StyleDatabase, simplified: no styles are defined, so applying styles
    # is the identity and extracting finds none
    styles = {}

    def apply_styles_to_prompt(self, prompt, styles):
        return prompt

    def apply_negative_styles_to_prompt(self, prompt, styles):
        return prompt

    def extract_styles_from_prompt(self, prompt, negative_prompt):
        return [], prompt, negative_prompt


class _TotalTQDM:
    # mirrors modules/shared_total_tqdm.py TotalTQDM, simplified to counters (no progress bar)
    def __init__(self):
        self.total = 0
        self.count = 0

    def reset(self):
        self.count = 0

    def update(self):
        self.count += 1

    def updateTotal(self, new_total):
        self.total = new_total

    def clear(self):
        self.count = 0


prompt_styles = _PromptStyles()
total_tqdm = _TotalTQDM()
interrogator = None
mem_mon = None

from modules import devices, shared_state  # noqa: E402

device = devices.device
state = shared_state.State()


def reload_hypernetworks():
    pass


def list_samplers():
    import modules.sd_samplers

    return modules.sd_samplers.all_samplers
