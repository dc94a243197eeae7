"""The layer map numbers transformer blocks in execution order, as MasaCtrl counts layers."""

import torch
from torch import nn

import ldm.modules.attention as ldm_attention
from lib_masactrl import LayerMap

SD15_ORDER = (
    [f"input_blocks.{i}.1.transformer_blocks.0" for i in (1, 2, 4, 5, 7, 8)]
    + ["middle_block.1.transformer_blocks.0"]
    + [f"output_blocks.{i}.1.transformer_blocks.0" for i in range(3, 12)]
)


def test_sd15_has_sixteen_layers_in_execution_order(sd15):
    layer_map = LayerMap.from_unet(sd15)
    assert [layer.name for layer in layer_map] == SD15_ORDER
    assert [layer.index for layer in layer_map] == list(range(16))
    assert layer_map.family == "this SD1.x model"
    assert all(isinstance(layer.block, ldm_attention.BasicTransformerBlock) for layer in layer_map)


def test_execution_order_matches_the_order_blocks_run(sd15, sdxl):
    for unet in (sd15, sdxl):
        seen = []
        layer_map = LayerMap.from_unet(unet)
        handles = [
            layer.attn1.register_forward_pre_hook(lambda m, a, i=layer.index, seen=seen: seen.append(i))
            for layer in layer_map
        ]
        try:
            context_dim = layer_map[0].attn2.to_k.in_features
            with torch.no_grad():
                unet(torch.zeros(1, 4, 16, 16), torch.tensor([10]), context=torch.zeros(1, 77, context_dim))
        finally:
            for handle in handles:
                handle.remove()
        assert seen == list(range(len(layer_map)))


def test_sdxl_has_seventy_layers(sdxl):
    layer_map = LayerMap.from_unet(sdxl)
    assert len(layer_map) == 70
    assert layer_map.family == "this SDXL model"
    assert layer_map[0].name == "input_blocks.4.1.transformer_blocks.0"
    assert layer_map[69].name == "output_blocks.5.1.transformer_blocks.1"


def test_unknown_topology_uses_whatever_blocks_exist():
    blocks = nn.Sequential(
        nn.Linear(8, 8),
        ldm_attention.BasicTransformerBlock(8, 2, 4, context_dim=5),
        nn.Sequential(ldm_attention.BasicTransformerBlock(8, 2, 4, context_dim=5, disable_self_attn=True)),
    )
    layer_map = LayerMap.from_unet(blocks)
    assert [layer.name for layer in layer_map] == ["1", "2.0"]
    assert layer_map.family == "this model"
    assert [layer.self_attention for layer in layer_map] == [True, False]
