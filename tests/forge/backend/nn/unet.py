"""Stand-in for Forge's ``backend/nn/unet.py`` (the SD1.x/SDXL U-Net).

What is kept, because the MasaCtrl adapter depends on it:

- ``CrossAttention`` and ``BasicTransformerBlock`` with Forge's attribute names, and the block's
  dispatch to ``transformer_options["patches_replace"]["attn1" | "attn2"]`` replace patches;
- the bookkeeping the U-Net writes into ``transformer_options`` while it runs: ``original_shape``,
  ``block`` (``("input", i)``, ``("middle", 0)``, ``("output", i)``, finally ``("last", 0)``),
  ``block_index`` (position inside a spatial transformer) and ``transformer_index`` (a running count of
  spatial transformers);
- the real block layout of SD1.x and SDXL (which blocks hold transformers, their depths, the
  resolution each runs at) and the real text-context widths, so that layer lists and token counts are
  those of the real models. See ``tests/forge/forge_unets.py`` for the two builders.

What is simplified: tiny channel counts and two heads, plain residual conv blocks, a non-gated
feed-forward, Linear projections in and out of every spatial transformer, no gradient checkpointing,
no class/ADM embedding (``y`` is accepted and ignored), and none of Forge's other hooks
(``patches`` lists, block modifiers, group-norm wrapper).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from backend.attention import attention_function


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(4, channels), channels, eps=1e-6)


class CrossAttention(nn.Module):
    """Mirrors ``CrossAttention`` in ``backend/nn/unet.py``: bias-free q/k/v projections, attention via
    ``attention_function``, then ``to_out`` = (Linear, Dropout). Queries come from ``x``; keys from
    ``context`` (``x`` when there is none); values from ``value`` when given, otherwise from the same
    source as the keys. ``transformer_options`` is accepted and unused, as in Forge."""

    def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.0):
        super().__init__()
        width = heads * dim_head
        source = query_dim if context_dim is None else context_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(n, width, bias=False) for n in (query_dim, source, source))
        self.to_out = nn.Sequential(nn.Linear(width, query_dim), nn.Dropout(dropout))
        self.heads, self.dim_head = heads, dim_head

    def forward(self, x, context=None, value=None, mask=None, transformer_options={}):
        keys_from = x if context is None else context
        values_from = keys_from if value is None else value
        mixed = attention_function(self.to_q(x), self.to_k(keys_from), self.to_v(values_from), self.heads, mask)
        return self.to_out(mixed)


def _patch_arguments(transformer_options: dict, n_heads: int, dim_head: int) -> dict:
    """The ``extra_options`` a replace patch receives: every transformer option except the two patch
    tables, plus this layer's head count and head width."""
    shared = {name: value for name, value in transformer_options.items() if name not in ("patches", "patches_replace")}
    shared["n_heads"] = n_heads
    shared["dim_head"] = dim_head
    return shared


def _find_replacement(table: dict, block, block_index):
    """Look a layer up in one replace table: first by (block name, block number, index inside the
    spatial transformer), then by (block name, block number)."""
    if block is None:
        return None
    precise = (block[0], block[1], block_index)
    if precise in table:
        return table[precise]
    return table.get(block)


class BasicTransformerBlock(nn.Module):
    """Mirrors ``BasicTransformerBlock`` (its ``_forward``) in ``backend/nn/unet.py``: pre-norm
    self-attention, cross-attention and feed-forward, each added back to the residual stream.

    Replace patches: when ``transformer_options["patches_replace"]["attn1"]`` (or ``"attn2"``) holds a
    callable for this layer's key (see ``_find_replacement``), the layer projects q/k/v with its own
    ``to_q``/``to_k``/``to_v`` (for ``attn1`` the keys and values come from the normed hidden states, or
    from ``context`` when ``disable_self_attn``), calls ``patch(q, k, v, extra_options)`` and sends the
    result through ``to_out``. Simplified: no ``patches`` lists (``attn1_patch``, output patches...),
    no ``ff_in``/``inner_dim`` variant, no checkpointing; ``ff`` is Linear-GELU-Linear."""

    def __init__(self, dim, n_heads, d_head, dropout=0.0, context_dim=None, disable_self_attn=False):
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_head
        self.disable_self_attn = disable_self_attn
        self.attn1 = CrossAttention(dim, context_dim if disable_self_attn else None, n_heads, d_head, dropout)
        self.attn2 = CrossAttention(dim, context_dim, n_heads, d_head, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def _attend(self, which: str, hidden, context, transformer_options, extra_options):
        layer = getattr(self, which)
        tables = transformer_options.get("patches_replace", {})
        patch = _find_replacement(tables.get(which, {}), transformer_options.get("block"),
                                  transformer_options.get("block_index", 0))
        if patch is None:
            return layer(hidden, context=context, transformer_options=extra_options)
        source = hidden if context is None else context
        q, k, v = layer.to_q(hidden), layer.to_k(source), layer.to_v(source)
        return layer.to_out(patch(q, k, v, extra_options))

    def forward(self, x, context=None, transformer_options={}):
        extra_options = _patch_arguments(transformer_options, self.n_heads, self.d_head)
        self_context = context if self.disable_self_attn else None
        x = x + self._attend("attn1", self.norm1(x), self_context, transformer_options, extra_options)
        x = x + self._attend("attn2", self.norm2(x), context, transformer_options, extra_options)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Mirrors ``SpatialTransformer`` in ``backend/nn/unet.py``: flattens the feature map into one
    token per pixel, runs ``depth`` transformer blocks, restores the map and adds the input back.
    Before block ``i`` runs it writes ``transformer_options["block_index"] = i``. Simplified: Linear
    in/out projections only, one context for every depth (no per-depth context list)."""

    def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0.0, context_dim=None):
        super().__init__()
        width = n_heads * d_head
        self.in_channels = in_channels
        self.norm = _norm(in_channels)
        self.proj_in = nn.Linear(in_channels, width)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(width, n_heads, d_head, dropout, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Linear(width, in_channels)

    def forward(self, x, context=None, transformer_options={}):
        batch, channels, height, width = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for position, block in enumerate(self.transformer_blocks):
            transformer_options["block_index"] = position
            tokens = block(tokens, context=context, transformer_options=transformer_options)
        grid = self.proj_out(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        return x + grid


class _ConvResidual(nn.Module):
    """Simplified stand-in for Forge's ``ResBlock``: two 3x3 convolutions with the timestep embedding
    added in between, and a 1x1 shortcut when the channel count changes."""

    wants_embedding = True

    def __init__(self, channels_in, channels_out, embedding_dim):
        super().__init__()
        self.first = nn.Sequential(_norm(channels_in), nn.SiLU(), nn.Conv2d(channels_in, channels_out, 3, padding=1))
        self.time = nn.Linear(embedding_dim, channels_out)
        self.second = nn.Sequential(_norm(channels_out), nn.SiLU(), nn.Conv2d(channels_out, channels_out, 3, padding=1))
        self.shortcut = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x, embedding):
        h = self.first(x) + self.time(F.silu(embedding))[:, :, None, None]
        return self.shortcut(x) + self.second(h)


class _Halve(nn.Module):
    """Stand-in for Forge's ``Downsample``: a stride-2 convolution."""

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class _Double(nn.Module):
    """Stand-in for Forge's ``Upsample``: nearest-neighbour resize (to the skip connection's size when
    known, so odd sizes line up) followed by a 3x3 convolution."""

    wants_target_size = True

    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, output_shape=None):
        size = tuple(output_shape[2:]) if output_shape is not None else (x.shape[2] * 2, x.shape[3] * 2)
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Mirrors ``TimestepEmbedSequential`` in ``backend/nn/unet.py``: a sequence of layers where each
    kind gets what it needs (residual blocks the timestep embedding, spatial transformers the context
    and options, upsamplers the target size). After every ``SpatialTransformer`` it adds one to
    ``transformer_options["transformer_index"]`` (when that key is present). Simplified: no block-inner
    modifiers."""

    def forward(self, x, emb, context=None, transformer_options={}, output_shape=None):
        for layer in self:
            if isinstance(layer, SpatialTransformer):
                x = layer(x, context, transformer_options)
                if "transformer_index" in transformer_options:
                    transformer_options["transformer_index"] = transformer_options["transformer_index"] + 1
            elif getattr(layer, "wants_embedding", False):
                x = layer(x, emb)
            elif getattr(layer, "wants_target_size", False):
                x = layer(x, output_shape=output_shape)
            else:
                x = layer(x)
        return x


def _sinusoid(timesteps: torch.Tensor, width: int) -> torch.Tensor:
    """Cosine and sine features of the timestep over geometrically spaced frequencies (period up to
    10000), cosines first, as SD's U-Nets use."""
    half = width // 2
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / half))
    angles = timesteps.float()[:, None] * frequencies.to(timesteps.device)[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _add_control(h, control, where):
    """Forge's ``apply_control``: take the last residual queued under ``control[where]`` (if any) and
    add it to ``h``."""
    if control is None or not control.get(where):
        return h
    residual = control[where].pop()
    return h if residual is None else h + residual


class IntegratedUNet2DConditionModel(nn.Module):
    """Mirrors ``IntegratedUNet2DConditionModel`` in ``backend/nn/unet.py`` at toy size.

    Layout (as in SD's U-Nets): ``input_blocks[0]`` is the input convolution; every level then adds
    ``num_res_blocks`` blocks (residual block, plus a spatial transformer of ``transformer_depth[level]``
    blocks when that is non-zero) and, except the last level, a downsampling block. ``middle_block`` is
    residual / transformer (``middle_depth``) / residual. ``output_blocks`` walk the levels back up with
    ``num_res_blocks + 1`` blocks each, each consuming one skip connection, the last block of every
    level but the top one ending in an upsampler. So the tokens of a transformer are the latent's grid
    divided by 2 per level.

    ``forward(x, timesteps, context, y=None, control=None, transformer_options={})`` sets
    ``original_shape`` and ``transformer_index = 0`` in ``transformer_options`` and then ``block`` to
    the block about to run, as Forge does. ``y`` (SDXL's ADM vector) is ignored."""

    def __init__(self, *, in_channels=4, out_channels=4, model_channels=8, channel_mult=(1, 2, 4, 4),
                 num_res_blocks=2, transformer_depth=(1, 1, 1, 0), middle_depth=1, context_dim=768,
                 num_heads=2):
        super().__init__()
        self.model_channels = model_channels
        embedding_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, embedding_dim), nn.SiLU(),
                                        nn.Linear(embedding_dim, embedding_dim))

        def attention_for(channels, depth):
            return [SpatialTransformer(channels, num_heads, channels // num_heads, depth, context_dim=context_dim)] \
                if depth else []

        widths = [model_channels * m for m in channel_mult]
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        skip_widths, current = [model_channels], model_channels
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers = [_ConvResidual(current, width, embedding_dim)] + attention_for(width, transformer_depth[level])
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                current = width
                skip_widths.append(current)
            if level + 1 < len(widths):
                self.input_blocks.append(TimestepEmbedSequential(_Halve(current)))
                skip_widths.append(current)

        self.middle_block = TimestepEmbedSequential(
            _ConvResidual(current, current, embedding_dim),
            *attention_for(current, middle_depth),
            _ConvResidual(current, current, embedding_dim),
        )

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for step in range(num_res_blocks + 1):
                width = widths[level]
                layers = [_ConvResidual(current + skip_widths.pop(), width, embedding_dim)]
                layers += attention_for(width, transformer_depth[level])
                current = width
                if level > 0 and step == num_res_blocks:
                    layers.append(_Double(current))
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(_norm(current), nn.SiLU(), nn.Conv2d(current, out_channels, 3, padding=1))

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        transformer_options["original_shape"] = list(x.shape)
        transformer_options["transformer_index"] = 0
        emb = self.time_embed(_sinusoid(timesteps, self.model_channels).to(x.dtype))

        skips, h = [], x
        for number, block in enumerate(self.input_blocks):
            transformer_options["block"] = ("input", number)
            h = _add_control(block(h, emb, context, transformer_options), control, "input")
            skips.append(h)

        transformer_options["block"] = ("middle", 0)
        h = _add_control(self.middle_block(h, emb, context, transformer_options), control, "middle")

        for number, block in enumerate(self.output_blocks):
            transformer_options["block"] = ("output", number)
            skip = _add_control(skips.pop(), control, "output")
            target = skips[-1].shape if skips else None
            h = block(torch.cat([h, skip], dim=1), emb, context, transformer_options, target)

        transformer_options["block"] = ("last", 0)
        return self.out(h).to(x.dtype)
