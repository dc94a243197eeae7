"""A stand-in for a TensorRT-like "SD Unet" provider (what the TensorRT extension registers through
script_callbacks.on_list_unets). Not part of the WebUI's ``modules``; the harness registers it
(``WebUIHost.add_sd_unet``).

While active (modules/sd_unet.py apply_unet), every ``UNetModel.forward`` call goes to
``StandInEngineUnet.forward``, which runs a private "engine": a copy of the U-Net taken at activation
whose attention layers, transformer blocks, spatial transformers and the U-Net itself are re-classed to
the plain implementations below. So, like a compiled TensorRT engine, it computes the same function as
the ldm U-Net with the default attention, but nothing an extension patches on ldm/sgm classes or on
the loaded model's modules (class or instance ``forward``, hooks, per-module state) affects it. (The
ResBlocks, up/downsampling and normalisation layers of the copy keep their ldm classes.)"""

from __future__ import annotations

import copy

import torch
from torch import nn

import ldm.modules.attention as ldm_attention
from ldm.modules.diffusionmodules.openaimodel import TimestepBlock, UNetModel
from ldm.modules.diffusionmodules.util import timestep_embedding
from modules import sd_unet, shared


class EngineAttention(nn.Module):
    """softmax(q k^T * scale) v over ``heads`` heads, with the weights of an ldm/sgm CrossAttention."""

    def forward(self, x, context=None, mask=None, **kwargs):
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((weights @ v).transpose(1, 2).flatten(2))


class EngineBlock(nn.Module):
    """ldm's / sgm's BasicTransformerBlock computation (self-attention, cross-attention, feed-forward)."""

    def forward(self, x, context=None):
        x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
        x = self.attn2(self.norm2(x), context=context) + x
        return self.ff(self.norm3(x)) + x


class EngineTransformer(nn.Module):
    """sgm's SpatialTransformer computation (ldm's for depth 1): one text context for every block."""

    def forward(self, x, context=None):
        context = context if isinstance(context, list) else [context]
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.use_linear:
            x = self.proj_in(x)
        for i, block in enumerate(self.transformer_blocks):
            x = block(x, context=context[i if len(context) > 1 else 0])
        if self.use_linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, c, h, w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class EngineUNet(nn.Module):
    """ldm's UNetModel.forward computation (with the label embedding when ``num_classes`` is set)."""

    def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels, repeat_only=False))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = self._run(block, h, emb, context)
            hs.append(h)
        h = self._run(self.middle_block, h, emb, context)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h.type(x.dtype))

    @staticmethod
    def _run(block, h, emb, context):
        for layer in block:
            if isinstance(layer, TimestepBlock):
                h = layer(h, emb)
            elif isinstance(layer, EngineTransformer):
                h = layer(h, context)
            else:
                h = layer(h)
        return h


def build_engine(unet: UNetModel) -> nn.Module:
    """The "compiled" copy of ``unet`` (see the module docstring)."""
    engine = copy.deepcopy(unet)
    for module in engine.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
            getattr(module, attr).clear()
        for attr in ("forward", "_forward"):
            module.__dict__.pop(attr, None)
        if isinstance(module, ldm_attention.CrossAttention):
            module.__class__ = EngineAttention
        elif isinstance(module, ldm_attention.SpatialTransformer):
            module.__class__ = EngineTransformer
        elif hasattr(module, "attn1") and hasattr(module, "attn2") and hasattr(module, "ff"):
            module.__class__ = EngineBlock  # ldm's BasicTransformerBlock, tiny_unets.SgmStyleBlock
    engine.__class__ = EngineUNet
    return engine.eval()


class StandInEngineUnet(sd_unet.SdUnet):
    """The SdUnet the option creates: builds its engine from the loaded model's U-Net on activate()."""

    def __init__(self, option):
        super().__init__()
        self.option = option
        self.engine = None
        self.calls = 0

    def activate(self):
        self.engine = build_engine(shared.sd_model.model.diffusion_model)
        self.option.activations += 1

    def deactivate(self):
        self.engine = None
        self.option.deactivations += 1

    def forward(self, x, timesteps, context, *args, **kwargs):
        self.calls += 1
        self.option.calls += 1
        return self.engine(x, timesteps, context, *args, **kwargs)


class StandInEngineOption(sd_unet.SdUnetOption):
    """An SdUnetOption (modules/sd_unet.py): ``model_name`` = the checkpoint it is automatically used for
    when opts.sd_unet is "Automatic"; ``label`` = its name in the "SD Unet" setting. Counts activations,
    deactivations and U-Net calls over all the SdUnets it created."""

    def __init__(self, label, model_name):
        self.label = label
        self.model_name = model_name
        self.activations = 0
        self.deactivations = 0
        self.calls = 0

    def create_unet(self):
        return StandInEngineUnet(self)

    def list_into(self, unets):
        """The extension's on_list_unets callback: offers this option."""
        unets.append(self)
