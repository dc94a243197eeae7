"""The parts of a WebUI Forge model MasaCtrl works with.

Forge's models (backend/diffusion_engine/) keep their denoiser in ``forge_objects.unet``, a
``UnetPatcher`` whose ``model.diffusion_model`` is the network. For SD1.x, SD2.x and SDXL that is
Forge's own U-Net (backend/nn/unet.py, ``IntegratedUNet2DConditionModel``) with transformer blocks
in its input, middle and output blocks; Flux, SD3 and Chroma run transformers of another kind, which
MasaCtrl does not control and names in its refusal. Text encoders are the
``text_processing_engine`` (SD1.x, SD2.x) or ``text_processing_engine_l`` (SDXL) of the model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..layers import UNET_STAGES, LayerMap


def patcher_of(model: Any) -> Any:
    """The U-Net patcher the next sampling pass uses, or ``None``."""
    return getattr(getattr(model, "forge_objects", None), "unet", None)


def unet_or_none(model: Any) -> nn.Module | None:
    """The U-Net of an SD1.x, SD2.x or SDXL model as Forge loads it, or ``None`` for any other
    model (Flux, SD3, ...) or none."""
    network = getattr(getattr(patcher_of(model), "model", None), "diffusion_model", None)
    if not isinstance(network, nn.Module) or not all(hasattr(network, stage) for stage in UNET_STAGES):
        return None
    return network if len(LayerMap.from_unet(network)) else None


def text_encoder(model: Any) -> Any:
    """The CLIP text processing of ``model`` whose tokenizer fills the U-Net's context, or ``None``."""
    for name in ("text_processing_engine", "text_processing_engine_l"):
        engine = getattr(model, name, None)
        if hasattr(engine, "tokenize_line"):
            return engine
    return None
