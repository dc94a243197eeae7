"""Mirrors modules/sd_unet.py: alternative U-Net implementations (e.g. TensorRT) that extensions offer
through on_list_unets, selected by the "SD Unet" setting (opts.sd_unet: "Automatic" = the option whose
model_name is the loaded checkpoint's model_name, "None" = the checkpoint's own U-Net, or a label).

``create_unet_forward`` builds the ``UNetModel.forward`` that modules/sd_hijack.py installs on the ldm
(and, in the real host, sgm) UNetModel class: while an SdUnet is active, EVERY UNetModel call goes to
``current_unet.forward`` instead of the model's own layers (attention patches, hooks on inner modules
and per-module forwards are bypassed); forward hooks registered on the UNetModel instance itself still
fire, since the instance's ``__call__`` runs as usual. apply_unet() runs in process_images_inner after
p.init and at the end of a same-config reload_model_weights; reload_model_weights deactivates it first."""

import torch.nn

from modules import devices, script_callbacks, shared

unet_options = []
current_unet_option = None
current_unet = None
original_forward = None  # not used, only left temporarily for compatibility (as in the real file)


def list_unets():
    # mirrors sd_unet.list_unets
    new_unets = script_callbacks.list_unets_callback()
    unet_options.clear()
    unet_options.extend(new_unets)


def get_unet_option(option=None):
    # mirrors sd_unet.get_unet_option
    option = option or shared.opts.sd_unet
    if option == "None":
        return None
    if option == "Automatic":
        name = shared.sd_model.sd_checkpoint_info.model_name
        options = [x for x in unet_options if x.model_name == name]
        option = options[0].label if options else "None"
    return next(iter([x for x in unet_options if x.label == option]), None)


def apply_unet(option=None):
    # mirrors sd_unet.apply_unet: deactivates the current SdUnet, activates the selected one
    global current_unet_option
    global current_unet

    new_option = get_unet_option(option)
    if new_option == current_unet_option:
        return

    if current_unet is not None:
        print(f"Dectivating unet: {current_unet.option.label}")
        current_unet.deactivate()

    current_unet_option = new_option
    if current_unet_option is None:
        current_unet = None
        if not shared.sd_model.lowvram:
            shared.sd_model.model.diffusion_model.to(devices.device)
        return

    shared.sd_model.model.diffusion_model.to(devices.cpu)
    devices.torch_gc()

    current_unet = current_unet_option.create_unet()
    current_unet.option = current_unet_option
    print(f"Activating unet: {current_unet.option.label}")
    current_unet.activate()


class SdUnetOption:
    # mirrors sd_unet.SdUnetOption
    model_name = None
    """name of related checkpoint - this option will be selected automatically for unet if the name of checkpoint matches this"""

    label = None
    """name of the unet in UI"""

    def create_unet(self):
        """returns SdUnet object to be used as a Unet instead of built-in unet when making pictures"""
        raise NotImplementedError()


class SdUnet(torch.nn.Module):
    # mirrors sd_unet.SdUnet
    def forward(self, x, timesteps, context, *args, **kwargs):
        raise NotImplementedError()

    def activate(self):
        pass

    def deactivate(self):
        pass


def create_unet_forward(original_forward):
    # mirrors sd_unet.create_unet_forward
    def UNetModel_forward(self, x, timesteps=None, context=None, *args, **kwargs):
        if current_unet is not None:
            return current_unet.forward(x, timesteps, context, *args, **kwargs)

        return original_forward(self, x, timesteps, context, *args, **kwargs)

    return UNetModel_forward


def reset():
    # stand-in only (harness teardown): forget the options and the active SdUnet without callbacks
    global current_unet_option, current_unet
    unet_options.clear()
    current_unet_option = None
    current_unet = None
