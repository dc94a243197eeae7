"""Stand-in for the WebUI's modules/sd_unet.py: U-Net replacements (TensorRT engines and the like) that
extensions offer through ``on_list_unets``, chosen by the "SD Unet" setting (opts.sd_unet): "Automatic"
picks the option made for the loaded checkpoint (same ``model_name``), "None" keeps the checkpoint's own
U-Net, anything else is an option's label.

While a replacement is active, the ``UNetModel.forward`` that modules/sd_hijack.py installs sends every
U-Net call to ``current_unet.forward``: nothing inside the loaded U-Net runs (attention patches, hooks
and per-module forwards inside it have no effect), while hooks on the UNetModel instance still fire,
since its ``__call__`` runs as usual. ``apply_unet()`` runs in process_images_inner after p.init and at
the end of a same-config reload_model_weights, which switches the replacement off first.
"""

from __future__ import annotations

import torch.nn

from modules import script_callbacks, shared

unet_options: list = []
current_unet_option = None
current_unet = None


class SdUnetOption:
    """Mirrors sd_unet.SdUnetOption: what an extension lists. ``label`` names it in the setting;
    ``model_name`` is the checkpoint it is chosen for automatically; ``create_unet()`` builds the SdUnet."""

    model_name = None
    label = None

    def create_unet(self):
        """A new SdUnet for this option."""
        raise NotImplementedError()


class SdUnet(torch.nn.Module):
    """Mirrors sd_unet.SdUnet: the replacement itself; ``activate``/``deactivate`` bracket its use and
    ``forward(x, timesteps, context, ...)`` takes the U-Net's calls."""

    def forward(self, x, timesteps, context, *args, **kwargs):
        raise NotImplementedError()

    def activate(self):
        """Called when it becomes the active replacement (e.g. to load an engine)."""

    def deactivate(self):
        """Called when another selection (or "None") replaces it."""


def list_unets():
    """Mirrors sd_unet.list_unets: the options offered by the on_list_unets callbacks now."""
    unet_options[:] = script_callbacks.list_unets_callback()


def get_unet_option(option=None):
    """Mirrors sd_unet.get_unet_option: the SdUnetOption selected by ``option`` or opts.sd_unet, or None."""
    selection = option or shared.opts.sd_unet
    if selection == "Automatic":
        checkpoint = shared.sd_model.sd_checkpoint_info.model_name
        matches = [x for x in unet_options if x.model_name == checkpoint]
    else:
        matches = [x for x in unet_options if x.label == selection and selection != "None"]
    return matches[0] if matches else None


def apply_unet(option=None):
    """Mirrors sd_unet.apply_unet: if the selection changed, the active replacement is deactivated and
    the selected one (if any) created and activated."""
    global current_unet_option, current_unet
    chosen = get_unet_option(option)
    if chosen == current_unet_option:
        return
    if current_unet is not None:
        current_unet.deactivate()
    current_unet_option, current_unet = chosen, None
    if chosen is not None:
        current_unet = chosen.create_unet()
        current_unet.option = chosen
        current_unet.activate()


def create_unet_forward(original_forward):
    """Mirrors sd_unet.create_unet_forward: the ``UNetModel.forward`` that defers to the active replacement."""

    def UNetModel_forward(self, x, timesteps=None, context=None, *args, **kwargs):
        replacement = current_unet
        if replacement is None:
            return original_forward(self, x, timesteps, context, *args, **kwargs)
        return replacement.forward(x, timesteps, context, *args, **kwargs)

    return UNetModel_forward


def reset():
    """Stand-in only (harness teardown): no options, nothing active, without deactivation calls."""
    global current_unet_option, current_unet
    unet_options.clear()
    current_unet_option = current_unet = None
