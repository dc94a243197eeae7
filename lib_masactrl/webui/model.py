"""The parts of the loaded WebUI model that MasaCtrl works with."""

from __future__ import annotations

from typing import Any

from torch import nn

from modules import shared


def unet_of(model: Any) -> nn.Module:
    """The U-Net of an ldm/sgm model as the WebUI loads it."""
    return model.model.diffusion_model


def loaded_unet() -> nn.Module | None:
    """The U-Net that samples now: the refiner switch and checkpoint changes replace
    ``shared.sd_model``, so it is read at each use, never kept."""
    return None if shared.sd_model is None else unet_of(shared.sd_model)


def text_encoder() -> Any:
    """The CLIP text encoder wrapper whose tokenizer fills the context (SDXL: its first embedder;
    both SDXL encoders share the vocabulary and chunking)."""
    model = shared.sd_model
    encoder = getattr(model, "cond_stage_model", None)
    if hasattr(encoder, "tokenize_line"):
        return encoder
    embedders = getattr(getattr(model, "conditioner", None), "embedders", None) or ()
    return next((embedder for embedder in embedders if hasattr(embedder, "tokenize_line")), None)
