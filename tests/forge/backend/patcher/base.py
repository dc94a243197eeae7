"""Stand-in for Forge's ``backend/patcher/base.py`` (``ModelPatcher`` and the module-level
``set_model_options_patch_replace``).

A patcher pairs a model with ``model_options``, the dict of hooks Forge's sampler consults on every
step (``transformer_options`` with its ``patches_replace`` tables, ``model_function_wrapper``, ...).
Extensions clone the patcher and add hooks to the clone, so the two behaviours that matter are kept
exactly: ``clone()`` deep-copies ``model_options`` (``copy.deepcopy``, so stateful patch objects are
copied too), and adding a replace patch never writes into a dict the options share with another
patcher. Weights patching (LoRA), object patches and device management are left out.
"""

from __future__ import annotations

import copy


def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    """Mirrors ``set_model_options_patch_replace``: register ``patch`` under
    ``transformer_options["patches_replace"][name]`` keyed ``(block_name, number, transformer_index)``,
    or ``(block_name, number)`` when no index is given. Every dict on the way down is rebuilt rather
    than edited, so dicts another options object may share stay as they were."""
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    options = model_options["transformer_options"]
    tables = options.get("patches_replace", {})
    tables = {**tables, name: {**tables.get(name, {}), key: patch}}
    model_options["transformer_options"] = {**options, "patches_replace": tables}
    return model_options


class ModelPatcher:
    """Mirrors ``ModelPatcher`` in ``backend/patcher/base.py``, limited to its options API. The
    device arguments are stored and otherwise unused."""

    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None, **kwargs):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.current_device = offload_device if current_device is None else current_device
        self.size = size
        self.model_options = {"transformer_options": {}}

    def _copy_into(self, other):
        other.model_options = copy.deepcopy(self.model_options)
        return other

    def clone(self):
        """A new patcher on the same model with a deep copy of the options."""
        return self._copy_into(ModelPatcher(self.model, self.load_device, self.offload_device,
                                            self.size, self.current_device))

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        """The sampler then calls ``wrapper(model.apply_model, {"input", "timestep", "c",
        "cond_or_uncond"})`` instead of ``apply_model`` (see ``sampling_function.py``)."""
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        self.model_options = set_model_options_patch_replace(self.model_options, patch, name, block_name,
                                                             number, transformer_index=transformer_index)

    def set_model_attn1_replace(self, patch, block_name, number, transformer_index=None):
        """Replace self-attention (``attn1``) of one layer."""
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch, block_name, number, transformer_index=None):
        """Replace cross-attention (``attn2``) of one layer."""
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)
