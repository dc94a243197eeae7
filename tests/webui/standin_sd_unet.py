"""A stand-in for a TensorRT-like "SD Unet" provider: what an extension such as the TensorRT one offers
through script_callbacks.on_list_unets (an SdUnetOption of modules/sd_unet.py). Not part of the WebUI's
``modules``; the harness installs it (``WebUIHost.add_sd_unet``).

Like a compiled engine, the SdUnet it creates computes the U-Net from a private copy of its weights,
taken when it is activated, and never calls the loaded model's attention, transformer-block,
spatial-transformer or U-Net modules: it evaluates them itself (``_Engine``), with plain softmax
attention. So it gives what the ldm U-Net gives with the default attention, but nothing an extension
patches on those classes or on the loaded model's modules (class or instance ``forward``, hooks,
per-module state) has any effect. The copy's ResBlocks, up/downsampling, feed-forward and normalisation
layers are called as modules (of the copy, without hooks).
"""

from __future__ import annotations

import torch
from standin_model import stripped_copy
from torch import nn

import ldm.modules.attention as ldm_attention
from ldm.modules.diffusionmodules.openaimodel import TimestepBlock
from ldm.modules.diffusionmodules.util import timestep_embedding
from modules import sd_unet, shared


def _is_transformer_block(module: nn.Module) -> bool:
    # ldm's BasicTransformerBlock and tiny_unets.SgmStyleBlock (sgm's) alike
    return all(hasattr(module, name) for name in ("attn1", "attn2", "ff", "norm1", "norm2", "norm3"))


class _Engine:
    """Evaluates a U-Net copy (ldm's UNetModel layout) without calling its attention-related modules."""

    def __init__(self, unet: nn.Module):
        self.unet = stripped_copy(unet, with_weights=True).eval()

    @staticmethod
    def attend(attention: nn.Module, x, context):
        source = x if context is None else context
        projected = (attention.to_q(x), attention.to_k(source), attention.to_v(source))
        q, k, v = (t.unflatten(-1, (attention.heads, -1)).transpose(1, 2) for t in projected)
        weights = (q @ k.transpose(-1, -2) * attention.scale).softmax(dim=-1)
        return attention.to_out((weights @ v).transpose(1, 2).flatten(2))

    def transformer(self, spatial: nn.Module, h, context):
        """A spatial transformer: one text context for every block (sgm's rule; ldm's for depth 1)."""
        if isinstance(context, list):
            context = context[0]
        b, c, height, width = h.shape
        residual = h
        h = spatial.norm(h)
        if not spatial.use_linear:
            h = spatial.proj_in(h)
        h = h.flatten(2).transpose(1, 2)
        if spatial.use_linear:
            h = spatial.proj_in(h)
        for block in spatial.transformer_blocks:
            h = self.attend(block.attn1, block.norm1(h), context if block.disable_self_attn else None) + h
            h = self.attend(block.attn2, block.norm2(h), context) + h
            h = block.ff(block.norm3(h)) + h
        if spatial.use_linear:
            h = spatial.proj_out(h)
        h = h.transpose(1, 2).reshape(b, c, height, width)
        if not spatial.use_linear:
            h = spatial.proj_out(h)
        return h + residual

    def level(self, layers: nn.Module, h, emb, context):
        for layer in layers:
            if isinstance(layer, TimestepBlock):
                h = layer(h, emb)
            elif isinstance(layer, ldm_attention.SpatialTransformer):
                h = self.transformer(layer, h, context)
            else:
                h = layer(h)
        return h

    def __call__(self, x, timesteps, context, y=None):
        """UNetModel.forward's computation; ``y`` feeds the label embedding of a U-Net that has one."""
        unet = self.unet
        emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False))
        if unet.num_classes is not None:
            emb = emb + unet.label_emb(y)
        h = x.type(unet.dtype)
        skips = []
        for level in unet.input_blocks:
            h = self.level(level, h, emb, context)
            skips.append(h)
        h = self.level(unet.middle_block, h, emb, context)
        for level in unet.output_blocks:
            h = self.level(level, torch.cat([h, skips.pop()], dim=1), emb, context)
        return unet.out(h.type(x.dtype))


class StandInEngineUnet(sd_unet.SdUnet):
    """The SdUnet an option creates: its engine is built from the loaded model's U-Net on ``activate``."""

    def __init__(self, option: StandInEngineOption):
        super().__init__()
        self.option = option
        self.engine = None

    def activate(self):
        self.engine = _Engine(shared.sd_model.model.diffusion_model)
        self.option.activations += 1

    def deactivate(self):
        self.engine = None
        self.option.deactivations += 1

    def forward(self, x, timesteps, context, *args, y=None, **kwargs):
        self.option.calls += 1
        return self.engine(x, timesteps, context, y)


class StandInEngineOption(sd_unet.SdUnetOption):
    """The option the stand-in provider offers: ``label`` in the "SD Unet" setting, ``model_name`` the
    checkpoint it is used for under "Automatic". ``activations``, ``deactivations`` and ``calls`` (U-Net
    calls) count over every SdUnet it created."""

    def __init__(self, label: str, model_name: str):
        self.label = label
        self.model_name = model_name
        self.activations = self.deactivations = self.calls = 0

    def create_unet(self):
        return StandInEngineUnet(self)

    def list_into(self, unets):
        """The provider's on_list_unets callback: offers this option."""
        unets.append(self)
