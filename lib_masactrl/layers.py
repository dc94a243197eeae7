"""Find a U-Net's transformer blocks ("layers" in the paper) in execution order.

Blocks are found by shape, not by class: anything with ``attn1`` and ``attn2`` attention children
is a transformer block. That covers ``ldm.modules.attention`` and ``sgm.modules.attention``
(``CrossAttention`` and ``MemoryEfficientCrossAttention`` alike) and fine-tunes or forks that
subclass them, without importing either package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Tuple

from torch import nn

# Width of the text conditioning that cross-attention reads, per model family.
_FAMILY_BY_CONTEXT_DIM = {768: "SD1.x", 1024: "SD2.x", 1280: "SDXL refiner", 2048: "SDXL"}

# ldm/sgm UNetModel runs these children in this order; other children hold no transformer blocks.
UNET_STAGES = ("input_blocks", "middle_block", "output_blocks")


def is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("to_q", "to_k", "to_v", "to_out", "heads"))


def is_transformer_block(module: nn.Module) -> bool:
    return is_attention(getattr(module, "attn1", None)) and is_attention(getattr(module, "attn2", None))


@dataclass(frozen=True)
class Layer:
    """One transformer block. ``self_attention`` is false where the block's attn1 reads the text
    (``disable_self_attn``): such a layer keeps its number but is never controlled."""

    index: int
    name: str
    block: nn.Module
    attn1: nn.Module
    attn2: nn.Module

    @property
    def self_attention(self) -> bool:
        return not getattr(self.block, "disable_self_attn", False)


def _stages(unet: nn.Module) -> List[Tuple[str, nn.Module]]:
    if all(isinstance(getattr(unet, stage, None), nn.Module) for stage in UNET_STAGES):
        return [(stage, getattr(unet, stage)) for stage in UNET_STAGES]
    return [("", unet)]


def _blocks(unet: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    for prefix, stage in _stages(unet):
        for name, module in stage.named_modules(prefix=prefix):
            if is_transformer_block(module):
                yield name, module


@dataclass(frozen=True)
class LayerMap:
    """All transformer blocks of one U-Net, numbered as MasaCtrl numbers them."""

    layers: Tuple[Layer, ...]
    family: str

    @classmethod
    def from_unet(cls, unet: nn.Module) -> "LayerMap":
        layers = tuple(
            Layer(index=i, name=name, block=block, attn1=block.attn1, attn2=block.attn2)
            for i, (name, block) in enumerate(_blocks(unet))
        )
        family = "this model"
        if layers:
            context_dim = getattr(layers[0].attn2.to_k, "in_features", None)
            if context_dim in _FAMILY_BY_CONTEXT_DIM:
                family = f"this {_FAMILY_BY_CONTEXT_DIM[context_dim]} model"
        return cls(layers=layers, family=family)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]
