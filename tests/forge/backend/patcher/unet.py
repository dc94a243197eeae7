"""Stand-in for Forge's ``backend/patcher/unet.py`` (``UnetPatcher``).

The patcher Forge hands scripts as ``p.sd_model.forge_objects.unet``; its ``.model`` is the ``KModel``.
Kept: ``controlnet_linked_list`` (the head of the ControlNet chain, ``None`` until a unit is added),
``add_patched_controlnet``, ``list_controlnets``, ``clone()`` and ``set_model_replace_all``. The memory
hints, modifiers and frozen-patch loading are left out.
"""

from __future__ import annotations

from backend.patcher.base import ModelPatcher


class UnetPatcher(ModelPatcher):
    """Mirrors ``UnetPatcher`` in ``backend/patcher/unet.py``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.controlnet_linked_list = None

    def clone(self):
        """Like ``ModelPatcher.clone`` (options deep-copied); the ControlNet chain is shared."""
        twin = self._copy_into(UnetPatcher(self.model, self.load_device, self.offload_device,
                                           self.size, self.current_device))
        twin.controlnet_linked_list = self.controlnet_linked_list
        return twin

    def add_patched_controlnet(self, cnet):
        """Mirrors ``add_patched_controlnet``: ``cnet`` becomes the chain's newest link."""
        cnet.set_previous_controlnet(self.controlnet_linked_list)
        self.controlnet_linked_list = cnet

    def list_controlnets(self):
        """Mirrors ``list_controlnets``: the chain's links, newest first."""
        links, link = [], self.controlnet_linked_list
        while link is not None:
            links.append(link)
            link = link.previous_controlnet
        return links

    def set_model_replace_all(self, patch, target="attn1"):
        """Mirrors ``UnetPatcher.set_model_replace_all``: register ``patch`` for ``target`` under every
        three-part key (block name in input/middle/output, block number 0..15, index 0..15), whether
        or not such a layer exists."""
        keys = [(name, number, index) for name in ("input", "middle", "output")
                for number in range(16) for index in range(16)]
        for name, number, index in keys:
            self.set_model_patch_replace(patch, target, name, number, index)
