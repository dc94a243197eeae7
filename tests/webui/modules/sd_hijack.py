"""Stand-in for the WebUI's modules/sd_hijack.py: which cross-attention forward the loaded model runs
(the optimisations of modules/sd_hijack_optimizations.py, or the default one of
modules/hypernetworks/hypernetwork.py), the SD Unet dispatch on ``UNetModel.forward``, and
``model_hijack``'s per-generation comments and extra infotext entries.

The real file patches ``UNetModel.forward`` of ldm and sgm when it is imported; here ``install()`` (run
by the harness at startup) patches ldm's, the class of every tiny U-Net, and ``uninstall()`` undoes it.
The real hijack also wraps the text encoders (embeddings, emphasis, clip skip); the stand-in model's
encoder does all that itself, so hijacking is only the attention optimisation and the layer list.
"""

from __future__ import annotations

import torch

import ldm.modules.attention
import ldm.modules.diffusionmodules.openaimodel
from modules import errors, patches, script_callbacks, sd_unet, shared
from modules.hypernetworks import hypernetwork

optimizers: list = []
"""The available optimisations, highest priority first (list_optimizers)."""
current_optimizer = None

_UNET_CLASS = ldm.modules.diffusionmodules.openaimodel.UNetModel


def install():
    """The import-time patch of the real file: ``UNetModel.forward`` hands every call to
    ``sd_unet.current_unet`` while one is active."""
    if patches.original(__file__, _UNET_CLASS, "forward") is None:
        patches.patch(__file__, _UNET_CLASS, "forward", sd_unet.create_unet_forward(_UNET_CLASS.forward))


def uninstall():
    """Stand-in only (harness teardown): ``UNetModel.forward`` back to ldm's."""
    if patches.original(__file__, _UNET_CLASS, "forward") is not None:
        patches.undo(__file__, _UNET_CLASS, "forward")


def list_optimizers():
    """Mirrors sd_hijack.list_optimizers: what the on_list_optimizers callbacks offer and is available,
    by descending priority."""
    offered = [x for x in script_callbacks.list_optimizers_callback() if x.is_available()]
    optimizers[:] = sorted(offered, key=lambda x: x.priority, reverse=True)


def _choose_optimizer(selection: str):
    if selection == "None":
        return None
    if selection == "Automatic":
        if getattr(shared.cmd_opts, "disable_opt_split_attention", False):
            return None
        asked = [x for x in optimizers if x.cmd_opt and getattr(shared.cmd_opts, x.cmd_opt, False)]
        return (asked or optimizers)[0]
    # the real setting holds titles ("sdp - scaled dot product"); the harness passes names ("sdp")
    return next((x for x in optimizers if selection in (x.title(), x.name)), optimizers[0])


def apply_optimizations(option=None):
    """Mirrors sd_hijack.apply_optimizations: back to the default forward, then the optimisation named by
    ``option`` or opts.cross_attention_optimization ("Automatic": the one a command-line flag asks for,
    else the first; "None": none; unknown: the first). Returns its name, or "" for none."""
    global current_optimizer
    undo_optimizations()
    if current_optimizer is not None:
        current_optimizer.undo()
    current_optimizer = None
    if not optimizers:
        return ""
    chosen = _choose_optimizer(option or shared.opts.cross_attention_optimization)
    if chosen is None:
        return ""
    chosen.apply()
    current_optimizer = chosen
    return chosen.name


def undo_optimizations():
    """Mirrors sd_hijack.undo_optimizations: ldm's CrossAttention runs the WebUI's default forward (the
    einsum one that applies loaded hypernetworks)."""
    ldm.modules.attention.CrossAttention.forward = hypernetwork.attention_CrossAttention_forward


class StableDiffusionModelHijack:
    """Mirrors sd_hijack.StableDiffusionModelHijack (``model_hijack``): hijacks a model when it is loaded,
    and collects the current generation's comments and extra infotext entries (the text encoder adds
    "Emphasis" there)."""

    def __init__(self):
        self.extra_generation_params = {}
        self.comments = []
        self.circular_enabled = False
        self.layers = None
        self.clip = None

    def hijack(self, m):
        """At every model load: the attention optimisation (a failing one is reported and the default
        forward used), and the model's layers for tiling."""
        try:
            apply_optimizations()
        except Exception as e:
            errors.display(e, "applying cross attention optimization")
            undo_optimizations()
        self.clip = m.cond_stage_model
        self.layers = list(m.modules())

    def undo_hijack(self, m):
        """Before weights are loaded into the model: default attention forward, no tiling."""
        undo_optimizations()
        self.apply_circular(False)
        self.layers = None
        self.clip = None

    def redo_hijack(self, m):
        """What changing the cross-attention optimisation setting runs."""
        self.undo_hijack(m)
        self.hijack(m)

    def apply_circular(self, enable):
        """Seamless tiling (p.tiling): circular padding in every Conv2d of the hijacked model."""
        if self.circular_enabled == enable:
            return
        self.circular_enabled = enable
        for layer in self.layers or []:
            if type(layer) is torch.nn.Conv2d:
                layer.padding_mode = "circular" if enable else "zeros"

    def clear_comments(self):
        """At the start of every generation (process_images_inner)."""
        self.comments = []
        self.extra_generation_params = {}


model_hijack = StableDiffusionModelHijack()
