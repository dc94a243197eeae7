"""The parts of the WebUI's model that MasaCtrl works with, read without ever loading one.

``shared.sd_model`` is a property that loads the checkpoint when none is loaded yet
(modules/shared.py, ``Shared.sd_model`` -> ``sd_models.model_data.get_sd_model``): reading it while
the UI is built would make the UI wait for the model, and with ``--skip-load-model-at-start`` force
a load. Outside a generation MasaCtrl therefore asks ``sd_models.model_data`` for the model that is
loaded, if any. A model without the ldm/sgm U-Net MasaCtrl patches (another host's model, or a
kind of model this WebUI version does not have) is reported by name, never touched.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from modules import sd_models

from ..forge import model as forge_model


def unet_or_none(model: Any) -> nn.Module | None:
    """The U-Net of an ldm/sgm model as the WebUI loads it, or of an SD model as Forge loads it
    (:mod:`lib_masactrl.forge.model`); ``None`` for anything else."""
    unet = getattr(getattr(model, "model", None), "diffusion_model", None)
    return unet if isinstance(unet, nn.Module) else forge_model.unet_or_none(model)


def loaded_model() -> Any:
    """The loaded model, or ``None`` while none is loaded; never loads one."""
    data = getattr(sd_models, "model_data", None)
    return getattr(data, "sd_model", None)


def loaded_unet() -> nn.Module | None:
    """The U-Net that samples now: the refiner switch and checkpoint changes replace the loaded
    model, so it is read at each use, never kept."""
    return unet_or_none(loaded_model())


def family_name(model: Any) -> str:
    """How messages name a model: its checkpoint's name, and its class."""
    info = getattr(model, "sd_checkpoint_info", None)
    name = getattr(info, "name_for_extra", None) or getattr(info, "model_name", None)
    kind = type(model).__name__
    return f"{name} ({kind})" if name else kind


def unsupported(model: Any) -> str:
    """Why MasaCtrl cannot run on ``model``."""
    if model is None:
        return "no model is loaded"
    return (f"the model {family_name(model)} has no Stable Diffusion U-Net MasaCtrl can control (it works with "
            "SD1.x, SD2.x and SDXL checkpoints)")


def text_encoder() -> Any:
    """The CLIP text encoder wrapper whose tokenizer fills the context (SDXL: its first embedder;
    both SDXL encoders share the vocabulary and chunking)."""
    model = loaded_model()
    forge_encoder = forge_model.text_encoder(model)
    if forge_encoder is not None:
        return forge_encoder
    encoder = getattr(model, "cond_stage_model", None)
    if hasattr(encoder, "tokenize_line"):
        return encoder
    embedders = getattr(getattr(model, "conditioner", None), "embedders", None) or ()
    return next((embedder for embedder in embedders if hasattr(embedder, "tokenize_line")), None)
