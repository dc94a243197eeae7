"""Mirrors the parts of modules/sd_hijack.py processing and extensions use: ``model_hijack`` (comments,
extra generation params, circular padding, embedding db stub) and apply/undo of the cross-attention
optimisation.

The sd_unet dispatch (sd_unet.create_unet_forward) is installed on ldm's UNetModel.forward with
patches.patch, as the real file does at import; here install() (called by the harness at startup)
does it and uninstall() (teardown) undoes it. The real file patches sgm's UNetModel too; the stand-in's
SDXL-shaped U-Nets are ldm UNetModels, so the one patch covers them.

Simplified: hijack()/undo_hijack() do not wrap a text encoder (the stand-in model encodes prompts
itself); textual-inversion embeddings are never loaded."""

import torch

import ldm.modules.attention
import ldm.modules.diffusionmodules.openaimodel
from modules import errors, patches, script_callbacks, sd_unet, shared
from modules.hypernetworks import hypernetwork

optimizers = []
current_optimizer = None

ldm_original_forward = None


def install():
    # mirrors the import-time patch of sd_hijack.py: UNetModel.forward dispatches to sd_unet.current_unet
    global ldm_original_forward
    unet_class = ldm.modules.diffusionmodules.openaimodel.UNetModel
    if patches.original(__file__, unet_class, "forward") is None:
        ldm_patched_forward = sd_unet.create_unet_forward(unet_class.forward)
        ldm_original_forward = patches.patch(__file__, unet_class, "forward", ldm_patched_forward)


def uninstall():
    global ldm_original_forward
    unet_class = ldm.modules.diffusionmodules.openaimodel.UNetModel
    if patches.original(__file__, unet_class, "forward") is not None:
        patches.undo(__file__, unet_class, "forward")
    ldm_original_forward = None


def list_optimizers():
    # mirrors sd_hijack.list_optimizers: available optimisers by priority
    new_optimizers = script_callbacks.list_optimizers_callback()
    new_optimizers = [x for x in new_optimizers if x.is_available()]
    new_optimizers = sorted(new_optimizers, key=lambda x: x.priority, reverse=True)
    optimizers.clear()
    optimizers.extend(new_optimizers)


def apply_optimizations(option=None):
    # mirrors sd_hijack.apply_optimizations (selection by title, "None", or "Automatic" = first listed)
    global current_optimizer
    undo_optimizations()
    if len(optimizers) == 0:
        current_optimizer = None
        return ""
    if current_optimizer is not None:
        current_optimizer.undo()
        current_optimizer = None
    selection = option or shared.opts.cross_attention_optimization
    if selection == "Automatic" and len(optimizers) > 0:
        matching = next(iter([x for x in optimizers if x.cmd_opt and getattr(shared.cmd_opts, x.cmd_opt, False)]), optimizers[0])
    else:
        matching = next(iter([x for x in optimizers if x.title() == selection or x.name == selection]), None)
    if selection == "None":
        matching = None
    elif matching is None:
        matching = optimizers[0]
    if matching is not None:
        matching.apply()
        current_optimizer = matching
        return current_optimizer.name
    return ""


def undo_optimizations():
    # mirrors sd_hijack.undo_optimizations: back to the WebUI's default (hypernetwork-aware) forward
    ldm.modules.attention.CrossAttention.forward = hypernetwork.attention_CrossAttention_forward


class EmbeddingDatabase:
    # stand-in for modules/textual_inversion/textual_inversion.py EmbeddingDatabase: always empty
    def __init__(self):
        self.word_embeddings = {}
        self.skipped_embeddings = {}

    def load_textual_inversion_embeddings(self, force_reload=False):
        pass


class StableDiffusionModelHijack:
    # mirrors sd_hijack.StableDiffusionModelHijack
    fixes = None
    layers = None
    circular_enabled = False
    clip = None
    optimization_method = None

    def __init__(self):
        self.extra_generation_params = {}
        self.comments = []
        self.embedding_db = EmbeddingDatabase()

    def apply_optimizations(self, option=None):
        try:
            self.optimization_method = apply_optimizations(option)
        except Exception as e:
            errors.display(e, "applying cross attention optimization")
            undo_optimizations()

    def hijack(self, m):
        # mirrors StableDiffusionModelHijack.hijack, simplified: applies the optimisation, records the
        # model's layers (for apply_circular) and the original UNetModel.forward
        self.apply_optimizations()
        self.clip = getattr(m, "cond_stage_model", None)
        self.layers = list(m.modules())
        sd_unet.original_forward = ldm_original_forward  # the real one picks ldm's or sgm's by model class

    def undo_hijack(self, m):
        undo_optimizations()
        self.layers = None
        self.clip = None

    def redo_hijack(self, m):
        # mirrors StableDiffusionModelHijack.redo_hijack (cross_attention_optimization onchange)
        self.undo_hijack(m)
        self.hijack(m)

    def apply_circular(self, enable):
        # mirrors StableDiffusionModelHijack.apply_circular
        if self.circular_enabled == enable:
            return
        self.circular_enabled = enable
        for layer in [layer for layer in (self.layers or []) if type(layer) is torch.nn.Conv2d]:
            layer.padding_mode = "circular" if enable else "zeros"

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}

    def get_prompt_lengths(self, text):
        if self.clip is None:
            return "-", "-"
        token_count = self.clip.get_token_count(text)
        return token_count, self.clip.get_target_prompt_token_count(token_count)


model_hijack = StableDiffusionModelHijack()
