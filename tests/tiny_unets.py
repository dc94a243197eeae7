"""Tiny U-Nets with the real topologies, built from the real ``ldm`` classes with seeded weights.

- ``sd15_unet``: ``ldm.modules.diffusionmodules.openaimodel.UNetModel`` with SD1.x's layout
  (channel_mult 1,2,4,4; attention at downsample factors 1,2,4; one transformer block per spatial
  transformer; 768-wide text context): 16 transformer blocks, in the same order as SD1.5's.
- ``sdxl_unet``: SDXL's layout (channel_mult 1,2,4; attention at factors 2 and 4; transformer depth
  2 and 10; 2048-wide context): 70 transformer blocks. ``sgm`` (Stability-AI/generative-models)
  is not on the package index, so this is built from ldm's UNetModel with each spatial
  transformer's blocks replaced by ``SgmStyleBlock``, which reproduces sgm's call signature:
  ``BasicTransformerBlock._forward`` passes ``additional_tokens`` and
  ``n_times_crossframe_attn_in_self`` to ``attn1``, whose ``forward`` accepts them
  (sgm/modules/attention.py, ``CrossAttention.forward`` and ``BasicTransformerBlock._forward``).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

import ldm.modules.attention as ldm_attention
from ldm.modules.diffusionmodules.openaimodel import UNetModel

ldm_attention.XFORMERS_IS_AVAILBLE = False
# ldm's attention upcasts q and k to float32 under this setting: a no-op for the float32 U-Nets,
# but it would break the float64 copies used for exact comparisons.
ldm_attention._ATTN_PRECISION = "native"


def _seeded(seed: int):
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    return generator_state


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter seeded random values: the zero-initialised output projections of a
    fresh ldm U-Net would otherwise make attention changes invisible in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            fan_in = parameter.shape[1:].numel() if parameter.dim() > 1 else parameter.numel()
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / max(fan_in, 1) ** 0.5)
    return module.eval().requires_grad_(False)


def sd15_unet(seed: int = 0, context_dim: int = 768, model_channels: int = 32) -> UNetModel:
    """``model_channels=320`` gives SD1.5's full size (860M parameters, eight heads per layer)."""
    state = _seeded(seed)
    heads = {"num_heads": 8} if model_channels == 320 else {"num_head_channels": 8}
    try:
        unet = UNetModel(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=model_channels,
            attention_resolutions=[4, 2, 1],
            num_res_blocks=2,
            channel_mult=[1, 2, 4, 4],
            **heads,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=context_dim,
            legacy=False,
        )
    finally:
        torch.random.set_rng_state(state)
    return _randomise(unet, seed)


class SgmStyleAttention(ldm_attention.CrossAttention):
    """ldm's attention with sgm's ``forward`` signature (sgm/modules/attention.py)."""

    def forward(self, x, context=None, mask=None, additional_tokens=None, n_times_crossframe_attn_in_self=0):
        if additional_tokens is not None:
            n_tokens = additional_tokens.shape[1]
            x = torch.cat([additional_tokens, x], dim=1)
        h = self.heads
        q = self.to_q(x)
        context = x if context is None else context
        k = self.to_k(context)
        v = self.to_v(context)
        if n_times_crossframe_attn_in_self:
            n_copies = x.shape[0] // n_times_crossframe_attn_in_self
            k = k[::n_times_crossframe_attn_in_self].repeat_interleave(n_copies, dim=0)
            v = v[::n_times_crossframe_attn_in_self].repeat_interleave(n_copies, dim=0)
        q, k, v = (t.unflatten(-1, (h, -1)).transpose(1, 2) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).flatten(2)
        if additional_tokens is not None:
            out = out[:, n_tokens:]
        return self.to_out(out)


class SgmStyleBlock(nn.Module):
    """sgm's ``BasicTransformerBlock`` call pattern over ldm's layers."""

    def __init__(self, dim: int, n_heads: int, d_head: int, context_dim: int) -> None:
        super().__init__()
        self.disable_self_attn = False
        self.attn1 = SgmStyleAttention(query_dim=dim, heads=n_heads, dim_head=d_head)
        self.ff = ldm_attention.FeedForward(dim, glu=True)
        self.attn2 = SgmStyleAttention(query_dim=dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, context=None, additional_tokens=None, n_times_crossframe_attn_in_self=0):
        return self._forward(x, context, additional_tokens, n_times_crossframe_attn_in_self)

    def _forward(self, x, context=None, additional_tokens=None, n_times_crossframe_attn_in_self=0):
        x = (
            self.attn1(
                self.norm1(x),
                context=None,
                additional_tokens=additional_tokens,
                n_times_crossframe_attn_in_self=n_times_crossframe_attn_in_self,
            )
            + x
        )
        x = self.attn2(self.norm2(x), context=context, additional_tokens=additional_tokens) + x
        return self.ff(self.norm3(x)) + x


class SgmStyleSpatialTransformer(ldm_attention.SpatialTransformer):
    """ldm's spatial transformer, but every block reads the one text context, as sgm's
    ``SpatialTransformer.forward`` does for depth > 1 (ldm's indexes a per-block context list)."""

    def forward(self, x, context=None):
        if isinstance(context, list):
            context = context[0]
        b, c, h, w = x.shape
        x_in = x
        x = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.transformer_blocks:
            x = block(x, context=context)
        x = self.proj_out(x).transpose(1, 2).reshape(b, c, h, w)
        return x + x_in


# Transformer depth of SDXL's spatial transformers, by their level's channel multiplier.
_SDXL_DEPTH_BY_MULTIPLIER = {2: 2, 4: 10}


def _use_sgm_style_blocks(unet: UNetModel, context_dim: int, depth: Callable[[int], int]) -> None:
    """Give every spatial transformer sgm's classes and ``depth(width)`` blocks, as sgm builds them."""
    for module in unet.modules():
        if isinstance(module, ldm_attention.SpatialTransformer):
            block = module.transformer_blocks[0]
            dim = block.attn1.to_q.in_features
            heads = block.attn1.heads
            module.__class__ = SgmStyleSpatialTransformer
            module.transformer_blocks = nn.ModuleList(
                SgmStyleBlock(dim, heads, dim // heads, context_dim) for _ in range(depth(dim))
            )


def sdxl_unet(seed: int = 0, context_dim: int = 2048, model_channels: int = 32) -> UNetModel:
    """``model_channels=320`` gives SDXL's full-size transformer layout (heads of 64 channels)."""
    state = _seeded(seed)
    try:
        unet = UNetModel(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=model_channels,
            attention_resolutions=[2, 4],
            num_res_blocks=2,
            channel_mult=[1, 2, 4],
            num_head_channels=64 if model_channels == 320 else 8,
            use_spatial_transformer=True,
            transformer_depth=1,
            context_dim=context_dim,
            use_linear_in_transformer=True,
            legacy=False,
        )
        _use_sgm_style_blocks(unet, context_dim, lambda dim: _SDXL_DEPTH_BY_MULTIPLIER[dim // model_channels])
    finally:
        torch.random.set_rng_state(state)
    return _randomise(unet, seed)


def to_double(unet: UNetModel) -> UNetModel:
    """A float64 copy for exact comparisons. ldm's U-Net casts its input to ``unet.dtype``, builds
    timestep embeddings in float32 and runs its GroupNorm32 in float32; all three are redirected."""
    unet = copy.deepcopy(unet).double()
    for module in unet.modules():
        if type(module).__name__ == "GroupNorm32":
            module.__class__ = nn.GroupNorm
    unet.dtype = torch.float64
    unet.time_embed.register_forward_pre_hook(lambda module, args: (args[0].double(),))
    return unet


def make_inputs(unet: UNetModel, batch: int, height: int, width: int, tokens: int = 77, seed: int = 1):
    """Random latents, timesteps and text context for ``batch`` rows."""
    generator = torch.Generator().manual_seed(seed)
    spatial = next(m for m in unet.modules() if isinstance(m, ldm_attention.SpatialTransformer))
    context_dim = spatial.transformer_blocks[0].attn2.to_k.in_features
    x = torch.randn(batch, 4, height, width, generator=generator)
    t = torch.full((batch,), 500, dtype=torch.long)
    context = torch.randn(batch, tokens, context_dim, generator=generator)
    return x, t, context


# SDXL refiner (Stability-AI/generative-models configs/inference/sd_xl_refiner.yaml): channel_mult
# 1,2,4,4, attention at downsample factors 2 and 4, transformer_depth 4 at both levels and in the middle
# block (sgm's default transformer_depth_middle is the last level's depth), 1280-wide context (OpenCLIP
# bigG only), num_classes "sequential" with adm_in_channels 2560 (pooled text 1280 + original size 512
# + crop 512 + aesthetic score 256): 44 transformer blocks.
_SDXL_REFINER_DEPTH = 4


def sdxl_refiner_unet(seed: int = 0, context_dim: int = 1280, adm_in_channels: int = 2560) -> UNetModel:
    """A tiny SDXL-refiner-shaped U-Net, built like ``sdxl_unet`` (ldm's UNetModel with sgm-style
    transformer blocks). Unlike ``sdxl_unet`` it has the refiner's ADM label embedding
    (sgm/modules/diffusionmodules/openaimodel.py, ``num_classes == "sequential"``: Linear, SiLU, Linear
    into the time embedding), so it takes ``y`` (the conditioner's "vector") beside ``context``."""
    state = _seeded(seed)
    try:
        model_channels = 32
        unet = UNetModel(
            image_size=32,
            in_channels=4,
            out_channels=4,
            model_channels=model_channels,
            attention_resolutions=[4, 2],
            num_res_blocks=2,
            channel_mult=[1, 2, 4, 4],
            use_spatial_transformer=True, transformer_depth=1, context_dim=context_dim,
            num_head_channels=8,
            use_linear_in_transformer=True,
            legacy=False,
        )
        _use_sgm_style_blocks(unet, context_dim, lambda dim: _SDXL_REFINER_DEPTH)
        time_embed_dim = model_channels * 4
        unet.num_classes = "sequential"
        unet.label_emb = nn.Sequential(
            nn.Sequential(nn.Linear(adm_in_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))
        )
    finally:
        torch.random.set_rng_state(state)
    return _randomise(unet, seed)
