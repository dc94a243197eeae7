"""Tests of the WebUI Forge stand-in (tests/forge/backend) itself; no MasaCtrl code involved."""

from __future__ import annotations

import os
import sys

import pytest
import torch

FORGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge")
if FORGE_DIR not in sys.path:
    sys.path.insert(0, FORGE_DIR)

from backend import attention  # noqa: E402
from backend.nn.unet import BasicTransformerBlock  # noqa: E402
from backend.sampling import sampling_function  # noqa: E402
from forge_unets import denoise, standin_patcher, text_context, tiny_forge_unet  # noqa: E402

SIGMA = 2.5


@pytest.fixture(scope="module")
def sd15():
    return standin_patcher("sd15", seed=0)


def _latents(batch=2, size=8, seed=3):
    return torch.randn(batch, 4, size, size, generator=torch.Generator().manual_seed(seed))


def _layers(unet):
    return [m for m in unet.modules() if isinstance(m, BasicTransformerBlock)]


@pytest.mark.parametrize("kind, count, width", [("sd15", 16, 768), ("sdxl", 70, 2048)])
def test_layer_counts_and_context_width(kind, count, width):
    layers = _layers(tiny_forge_unet(kind))
    assert len(layers) == count
    assert {layer.attn2.to_k.in_features for layer in layers} == {width}
    assert all(layer.attn1.to_k.in_features == layer.attn1.to_q.in_features for layer in layers)
    assert all(layer.n_heads == 2 and layer.attn1.heads == 2 for layer in layers)


# block -> (transformer depth, tokens for a 16x16 latent): the grid halves per level down.
SD15_BLOCKS = {**{("input", i): (1, 256 >> 2 * ((i - 1) // 3)) for i in (1, 2, 4, 5, 7, 8)}, ("middle", 0): (1, 4),
               **{("output", i): (1, 16 << 2 * (i // 3 - 1)) for i in range(3, 12)}}
SDXL_BLOCKS = {("input", 4): (2, 64), ("input", 5): (2, 64), ("input", 7): (10, 16), ("input", 8): (10, 16),
               ("middle", 0): (10, 16), **{("output", i): (10, 16) for i in (0, 1, 2)},
               **{("output", i): (2, 64) for i in (3, 4, 5)}}


@pytest.mark.parametrize("kind, expected", [("sd15", SD15_BLOCKS), ("sdxl", SDXL_BLOCKS)])
def test_topology_and_token_counts(kind, expected):
    patcher = standin_patcher(kind).clone()
    calls = []

    def record(q, k, v, extra):
        calls.append((extra["block"], extra["block_index"], q.shape[1], extra["transformer_index"]))
        return attention.attention_function(q, k, v, extra["n_heads"])

    patcher.set_model_replace_all(record, "attn1")
    denoise(patcher, _latents(1, 16), SIGMA, text_context(kind), None, 1.0)
    found = {}
    for block, index, tokens, _ in calls:
        found[block] = (max(found.get(block, (0, 0))[0], index + 1), tokens)
    assert found == expected
    # transformer_index counts spatial transformers from 0 over the whole forward pass
    assert sorted({t for *_, t in calls}) == list(range(len(expected)))


@pytest.mark.parametrize("which", ["attn1", "attn2"])
def test_replace_patch_arguments_and_identity(sd15, which):
    x, context, uncond = _latents(), text_context("sd15", 2), text_context("sd15", 1, seed=9)
    plain = denoise(sd15, x, SIGMA, context, uncond, 6.0)
    patched, seen = sd15.clone(), []

    def patch(q, k, v, extra):
        seen.append((q.shape, k.shape, v.shape, dict(extra)))
        return attention.attention_function(q, k, v, extra["n_heads"])

    getattr(patched, f"set_model_{which}_replace")(patch, "output", 4, 0)
    assert torch.equal(denoise(patched, x, SIGMA, context, uncond, 6.0), plain)
    (q_shape, k_shape, v_shape, extra), = seen
    assert q_shape == (4, 4, 32)  # rows: uncond + cond chunk of two images; tokens: (8x8 latent / 4); 2 x 16
    assert k_shape == v_shape == ((4, 4, 32) if which == "attn1" else (4, 77, 32))
    assert extra["block"] == ("output", 4) and extra["block_index"] == 0
    assert extra["cond_or_uncond"] == [1, 0] and extra["n_heads"] == 2 and extra["dim_head"] == 16
    assert torch.equal(extra["sigmas"], torch.full((2,), SIGMA))
    assert extra["original_shape"] == [4, 4, 8, 8]
    assert "patches_replace" not in extra and "patches" not in extra


def test_replace_key_precedence_and_fallback(sd15):
    hits = []

    def tagged(tag):
        def patch(q, k, v, extra):
            hits.append((tag, extra["block"]))
            return attention.attention_function(q, k, v, extra["n_heads"])
        return patch

    patched = sd15.clone()
    patched.set_model_attn1_replace(tagged("pair"), "input", 1)
    patched.set_model_attn1_replace(tagged("pair"), "input", 2)
    patched.set_model_attn1_replace(tagged("triple"), "input", 2, 0)
    denoise(patched, _latents(1), SIGMA, text_context("sd15"), None, 1.0)
    assert hits == [("pair", ("input", 1)), ("triple", ("input", 2))]


def test_clone_never_aliases_options(sd15):
    class Stateful:
        def __call__(self, q, k, v, extra):
            return attention.attention_function(q, k, v, extra["n_heads"])

    base = sd15.clone()
    base.set_model_attn1_replace(Stateful(), "input", 1, 0)
    before = base.model_options["transformer_options"]
    table_before = before["patches_replace"]["attn1"]
    twin = base.clone()
    assert twin.model is base.model and twin.controlnet_linked_list is None
    twin.set_model_attn1_replace(Stateful(), "input", 2, 0)
    twin.set_model_attn2_replace(Stateful(), "middle", 0)
    twin.set_model_unet_function_wrapper(lambda f, args: f(args["input"], args["timestep"], **args["c"]))
    assert set(base.model_options) == {"transformer_options"}
    assert set(base.model_options["transformer_options"]["patches_replace"]) == {"attn1"}
    assert list(table_before) == [("input", 1, 0)]
    # deepcopy, as Forge: the clone holds its own copy of the stateful patch object
    assert twin.model_options["transformer_options"]["patches_replace"]["attn1"][("input", 1, 0)] \
        is not table_before[("input", 1, 0)]
    # copy-on-write: adding to the original rebuilds its dicts instead of editing them
    base.set_model_attn1_replace(Stateful(), "input", 4, 0)
    assert base.model_options["transformer_options"] is not before and list(table_before) == [("input", 1, 0)]
    assert sd15.model_options == {"transformer_options": {}}


def _recorded_calls(patcher, conds, uncond, cond_scale):
    calls = []

    def wrapper(apply_model, args):
        options = args["c"]["transformer_options"]
        calls.append({"kinds": args["cond_or_uncond"], "options": options, "rows": args["input"].shape[0],
                      "context": args["c"]["c_crossattn"]})
        return apply_model(args["input"], args["timestep"], **args["c"])

    recorder = patcher.clone()
    recorder.set_model_unet_function_wrapper(wrapper)
    result = denoise(recorder, _latents(), SIGMA, conds, uncond, cond_scale)
    return calls, result


def test_uncond_first_and_call_options(sd15):
    conds = [{"crossattn": text_context("sd15", seed=s)} for s in (1, 2)]
    calls, _ = _recorded_calls(sd15, conds, [{"crossattn": text_context("sd15", seed=7)}], 5.0)
    (call,) = calls
    assert call["kinds"] == [1, 0, 0] and call["rows"] == 6
    options = call["options"]
    assert options["cond_or_uncond"] == [1, 0, 0]
    assert options["uncond_indices"] == [0, 1] and options["cond_indices"] == [2, 3, 4, 5]
    assert options["cond_mark"].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert torch.equal(call["context"][4], conds[0]["crossattn"][0])  # AND sub-prompts run last-first
    assert torch.equal(call["context"][2], conds[1]["crossattn"][0])


def test_cfg1_drops_uncond_unless_disabled(sd15):
    calls, _ = _recorded_calls(sd15, text_context("sd15"), text_context("sd15", seed=7), 1.0)
    assert [c["kinds"] for c in calls] == [[0]]
    keep = sd15.clone()
    keep.model_options["disable_cfg1_optimization"] = True
    calls, _ = _recorded_calls(keep, text_context("sd15"), text_context("sd15", seed=7), 1.0)
    assert [c["kinds"] for c in calls] == [[1, 0]]


def test_one_chunk_per_call(sd15, monkeypatch):
    conds = [{"crossattn": text_context("sd15", seed=s)} for s in (1, 2)]
    uncond = [{"crossattn": text_context("sd15", seed=7)}]
    together, joint = _recorded_calls(sd15, conds, uncond, 5.0)
    monkeypatch.setattr(sampling_function, "MAX_CHUNKS_PER_CALL", 1)
    calls, alone = _recorded_calls(sd15, conds, uncond, 5.0)
    assert [c["kinds"] for c in calls] == [[1], [0], [0]] and {c["rows"] for c in calls} == {2}
    assert [c["options"]["cond_indices"] for c in calls] == [[], [0, 1], [0, 1]]
    assert torch.equal(calls[1]["context"][0], conds[1]["crossattn"][0])
    assert torch.allclose(alone, joint, rtol=1e-4, atol=1e-3)
    assert [sampling_function.chunks_per_call(n) for n in (1, 2, 3)] == [1, 1, 1]
    monkeypatch.setattr(sampling_function, "MAX_CHUNKS_PER_CALL", 2)
    assert [sampling_function.chunks_per_call(n) for n in (2, 3, 4, 5)] == [2, 1, 2, 2]


def test_guidance_and_wrapper_output_is_used(sd15):
    x, cond, uncond = _latents(), text_context("sd15"), text_context("sd15", seed=7)
    guided = denoise(sd15, x, SIGMA, cond, uncond, 4.0)
    cond_only = denoise(sd15, x, SIGMA, cond, None, 1.0)
    uncond_only = denoise(sd15, x, SIGMA, uncond, None, 1.0)
    assert torch.allclose(guided, uncond_only + (cond_only - uncond_only) * 4.0, rtol=1e-4, atol=1e-3)
    assert not torch.allclose(cond_only, uncond_only, atol=1e-2)

    seen = []
    wrapped = sd15.clone()
    wrapped.set_model_unet_function_wrapper(
        lambda apply_model, args: seen.append(args["cond_or_uncond"]) or torch.full_like(args["input"], 0.5))
    assert torch.equal(denoise(wrapped, x, SIGMA, cond, uncond, 4.0), torch.full_like(x, 0.5))
    assert seen == [[1, 0]]


def test_attention_is_not_uniform(sd15):
    """Swapping the self-attention keys between the two images changes the output visibly."""
    x, context = _latents(), text_context("sd15", 2)
    plain = denoise(sd15, x, SIGMA, context, None, 1.0)
    swapped = sd15.clone()
    swapped.set_model_replace_all(
        lambda q, k, v, extra: attention.attention_function(q, k.flip(0), v.flip(0), extra["n_heads"]))
    assert (denoise(swapped, x, SIGMA, context, None, 1.0) - plain).abs().mean() > 0.2 * plain.abs().mean()
