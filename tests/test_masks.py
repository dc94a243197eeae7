"""Mask-guided mutual self-attention: subject words found in the host's tokenisation with the real
CLIP BPE vocabulary, cross-attention maps collected at latent/4 on real ldm U-Nets, and masked
attention compared with an independent float64 einsum formula."""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import pytest
import torch
from engine_helpers import module_state
from tiny_unets import to_double

from lib_masactrl import (
    LayerMap,
    MasaCtrlSettings,
    MaskGuide,
    SettingsError,
    StepLayout,
    attach,
    detach_all,
    mask_guide,
    subprompt_positions,
    word_positions,
)
from lib_masactrl.masks import downsampled, token_grid
from lib_masactrl.patching import CapturedProjections

LATENT = (16, 32)  # non-square; the tiny U-Nets need sides divisible by 8
MAP_GRID = (4, 8)  # latent/4


# --- subject words in the host's tokenisation --------------------------------------------------

START, END = 49406, 49407
_EMPHASIS = re.compile(r"\((?P<round>[^():]*)(?::[0-9.]+)?\)|\[(?P<square>[^\[\]]*)\]")


@pytest.fixture(scope="module")
def bpe():
    simple_tokenizer = pytest.importorskip("clip.simple_tokenizer")
    return simple_tokenizer.SimpleTokenizer()


def tokenize_line(bpe, prompt: str) -> List[List[int]]:
    """The WebUI's chunking (modules/sd_hijack_clip.py, tokenize_line): emphasis syntax parsed away
    (prompt_parser.parse_prompt_attention leaves the text pieces, each tokenised on its own), then
    chunks of 75 tokens padded with the end token and wrapped as [start, ..., end]."""
    pieces, last = [], 0
    for match in _EMPHASIS.finditer(prompt):
        pieces += [prompt[last : match.start()], match.group("round") or match.group("square") or ""]
        last = match.end()
    pieces.append(prompt[last:])
    tokens = [token for piece in pieces if piece for token in bpe.encode(piece)]
    chunks = []
    while True:
        body, tokens = tokens[:75], tokens[75:]
        chunks.append([START] + body + [END] * (76 - len(body)))
        if not tokens:
            return chunks


def positions(bpe, prompt: str, *words: str) -> Tuple[int, ...]:
    return word_positions(tokenize_line(bpe, prompt), words, bpe.encode, prompt)


def test_emphasis_stripped_and_multi_token_words(bpe):
    assert bpe.encode("corgi") == [31320]
    assert len(bpe.encode("labradoodle")) == 2
    prompt = "a photo of a (corgi:1.2) on a [sunny] beach"
    assert positions(bpe, prompt, "corgi") == (5,)
    assert positions(bpe, prompt, "sunny beach") == (8, 9)
    assert positions(bpe, "a (fluffy labradoodle:0.8)", "labradoodle") == (3, 4)
    assert positions(bpe, "a photo of a (corgi:1.2) on a [sunny] beach", "corgi", "beach") == (5, 9)


def test_repeated_words_count_every_occurrence(bpe):
    assert positions(bpe, "a corgi next to a corgi", "corgi") == (2, 6)


def test_prompts_over_75_tokens_use_the_next_chunk_offsets(bpe):
    # corgi, 80 x tree, corgi: chunk 0 holds tokens 0..74 at rows 1..75, chunk 1 tokens 75.. at rows 78..
    prompt = "corgi " + "tree " * 80 + "corgi"
    assert len(tokenize_line(bpe, prompt)) == 2
    assert positions(bpe, prompt, "corgi") == (1, 84)
    # a two-token word split by the 75-token limit: "labra" ends chunk 0, "doodle" starts chunk 1
    assert positions(bpe, "tree " * 74 + "labradoodle", "labradoodle") == (75, 78)


def test_a_missing_word_names_the_word_and_the_prompt(bpe):
    with pytest.raises(SettingsError) as error:
        positions(bpe, "a photo of a corgi", "corgi", "cat")
    assert str(error.value) == "subject word 'cat' is not in the prompt 'a photo of a corgi'"
    with pytest.raises(SettingsError, match="subject word 'cat' is not in the prompt 'two cats'"):
        positions(bpe, "two cats", "cat")  # words match whole tokens: "cats" is one other token


def test_and_subprompts_and_comma_separated_words(bpe):
    chunks = [tokenize_line(bpe, "a corgi"), tokenize_line(bpe, "a sunny beach")]
    assert subprompt_positions(chunks, ["corgi", "beach"], bpe.encode, "a corgi AND a sunny beach") == ((2,), (3,))
    settings = MasaCtrlSettings(mask_words=" corgi, red car ,, corgi", mask_threshold=0.2)
    assert settings.source_words == ("corgi", "red car")
    assert settings.target_words == ("corgi", "red car")
    assert MasaCtrlSettings(mask_words="corgi", mask_target_words="cat").target_words == ("cat",)


def test_mask_guide_gives_each_role_its_words_and_checks_pairs(bpe):
    def guide(settings, subprompts, user_masks=None):
        return mask_guide(settings, (None, 0), subprompts, lambda text: tokenize_line(bpe, text), bpe.encode, user_masks)

    settings = MasaCtrlSettings(mask_words="corgi", mask_target_words="cat")
    built = guide(settings, [["a corgi"], ["a cat", "a beach"]])
    assert built.token_positions == {0: ((2,),), 1: ((2,), ())}
    assert built.threshold == 0.1
    assert guide(MasaCtrlSettings(), [["a corgi"], ["a cat"]]) is None

    with_mask = guide(settings, [[""], ["a cat"]], user_masks={0: torch.ones(3, 5)})
    assert with_mask.token_positions == {1: ((2,),)} and with_mask.user_masks[0].shape == (3, 5)
    with pytest.raises(SettingsError, match="subject word 'corgi' is not in the source prompt ''"):
        guide(settings, [[""], ["a cat"]])
    with pytest.raises(SettingsError, match="subject word 'cat' is not in the target prompt 'a dog AND a beach'"):
        guide(settings, [["a corgi"], ["a dog", "a beach"]])
    with pytest.raises(SettingsError, match="image 1 and its source image 0 need a mask each, but the source image 0 has none"):
        guide(MasaCtrlSettings(), [["a corgi"], ["a cat"]], user_masks={1: torch.ones(4, 4)})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "union", "mask_words": "corgi"}, "subject masks work with the mutual mode only, not with the union mode"),
        ({"mask_threshold": 1.5}, "mask threshold must be a number from 0 to 1, got 1.5"),
        ({"mask_words": 3}, "mask words must be text, got 3"),
    ],
)
def test_bad_mask_settings_are_refused(kwargs, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        MasaCtrlSettings(**kwargs)


def test_token_grids_halve_rounding_up():
    assert downsampled((65, 40), 2) == (17, 10)
    assert token_grid((16, 32), 32) == (4, 8)
    assert token_grid((16, 32), 100) is None


# --- masked attention -------------------------------------------------------------------------


def block_mask(blocks: Sequence[Sequence[int]], size: Tuple[int, int]) -> torch.Tensor:
    """A mask constant on latent/8 blocks, at ``size``: exact at every U-Net level."""
    base = torch.tensor(blocks, dtype=torch.bool)
    return base.repeat_interleave(size[0] // base.shape[0], 0).repeat_interleave(size[1] // base.shape[1], 1)


SOURCE_BLOCKS = [[1, 1, 0, 0], [1, 0, 0, 0]]
TARGET_BLOCKS = [[0, 1, 1, 0], [0, 1, 1, 1]]


def user_guide(source_blocks=SOURCE_BLOCKS, target_blocks=TARGET_BLOCKS, size=LATENT) -> MaskGuide:
    return MaskGuide(user_masks={0: block_mask(source_blocks, size).float(), 1: block_mask(target_blocks, size).float()})


def stack_inputs(layout: StepLayout, size=LATENT, dim: int = 768, seed: int = 3, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    images = max(row.image for row in layout.rows) + 1
    latents = torch.randn(images, 4, *size, generator=generator, dtype=dtype)
    x = torch.stack([latents[row.image] for row in layout.rows])
    context = torch.randn(len(layout), 77, dim, generator=generator, dtype=dtype)
    return x, torch.full((len(layout),), 600, dtype=torch.long), context


def run_step(unet, attachment, step, layout, x, t, context, calls) -> torch.Tensor:
    attachment.controller.begin_step(step, layout)
    with torch.no_grad():
        return torch.cat([unet(x[a:b], t[a:b], context=context[a:b]) for a, b in calls])


def masked_reference(attn, hidden, sources, row_images, image_blocks: Dict[int, list], strength=1.0) -> torch.Tensor:
    """Mask-guided mutual self-attention written out with einsum: a target query attends over its
    source's foreground keys (the others at -inf) and, separately, over its background keys; the
    two results are blended with the target's mask before the output projection. Below strength 1
    a target's result is mixed with its own self-attention: ``strength * masked + (1 - strength) * own``."""
    grid = next(g for g in (downsampled(LATENT, level) for level in range(4)) if g[0] * g[1] == hidden.shape[1])
    heads = attn.heads
    q, k, v = (t.unflatten(-1, (heads, -1)) for t in (attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)))
    scale = q.shape[-1] ** -0.5
    outputs = []
    for i, source in enumerate(sources):
        row = source if source is not None else i
        weights = torch.einsum("nhd,mhd->hnm", q[i], k[row]) * scale
        if source is None:
            outputs.append(torch.einsum("hnm,mhd->nhd", weights.softmax(-1), v[row]).flatten(1))
            continue
        keys_fg = block_mask(image_blocks[row_images[source]], grid).flatten()
        queries_fg = block_mask(image_blocks[row_images[i]], grid).flatten().to(hidden.dtype)[:, None, None]
        fg = torch.einsum("hnm,mhd->nhd", weights.masked_fill(~keys_fg, float("-inf")).softmax(-1), v[row])
        bg = torch.einsum("hnm,mhd->nhd", weights.masked_fill(keys_fg, float("-inf")).softmax(-1), v[row])
        own = torch.einsum("hnm,mhd->nhd", torch.einsum("nhd,mhd->hnm", q[i], k[i]).mul(scale).softmax(-1), v[i])
        masked = fg * queries_fg + bg * (1 - queries_fg)
        outputs.append((strength * masked + (1 - strength) * own).flatten(1))
    return attn.to_out(torch.stack(outputs))


class MaskedReferenceUNet:
    def __init__(self, attn1_modules, layout: StepLayout, image_blocks, strength=1.0) -> None:
        self.modules = list(attn1_modules)
        self.layout = layout
        self.image_blocks = image_blocks
        self.strength = strength

    def __enter__(self):
        row_images = [row.image for row in self.layout.rows]
        for module in self.modules:
            def forward(x, context=None, mask=None, _module=module, **kwargs):
                return masked_reference(_module, x, self.layout.sources, row_images, self.image_blocks, self.strength)
            module.forward = forward
        return self

    def __exit__(self, *exc_info):
        for module in self.modules:
            del module.forward


@pytest.fixture(scope="module")
def sd15_double(sd15):
    return to_double(sd15)


MASK_LAYOUTS = {
    "one call": ((None, 0), None, [(0, 4)]),
    "cond and uncond split": ((None, 0), None, [(0, 2), (2, 4)]),
    "AND prompts in chunks": ((None, 0), (2, 2), [(0, 2), (2, 4), (4, 6)]),
}


@pytest.mark.parametrize("case", list(MASK_LAYOUTS))
def test_all_ones_masks_equal_mutual_control_bit_for_bit(sd15, case):
    image_sources, repeats, calls = MASK_LAYOUTS[case]
    layout = StepLayout.cfg(image_sources, cond_repeats=repeats)
    x, t, context = stack_inputs(layout)
    settings = MasaCtrlSettings(start_step=0, start_layer=4)
    with attach(sd15, settings) as attachment:
        mutual = run_step(sd15, attachment, 0, layout, x, t, context, calls)
    ones = user_guide([[1] * 4] * 2, [[1] * 4] * 2)
    with attach(sd15, settings, masks=ones) as attachment:
        assert not any("forward" in vars(layer.attn2) for layer in attachment.layer_map)  # no maps without words
        masked = run_step(sd15, attachment, 0, layout, x, t, context, calls)
        assert attachment.controller.used_masks.masks[1].eq(1).all()
    assert torch.equal(masked, mutual)


def test_word_masks_that_cover_everything_equal_mutual_control_while_collecting(sd15):
    """Threshold 0 makes every word mask all foreground; the maps are still collected, which must
    not change the images."""
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout)
    settings = MasaCtrlSettings(start_step=1, start_layer=4)
    guide = MaskGuide(token_positions={0: ((3,),), 1: ((4, 5),)}, threshold=0.0)
    outputs = {}
    for name, masks in (("mutual", None), ("words", guide)):
        with attach(sd15, settings, total_steps=3, masks=masks) as attachment:
            outputs[name] = [run_step(sd15, attachment, step, layout, x, t, context, [(0, 2), (2, 4)]) for step in range(3)]
            if masks is not None:
                assert attachment.controller.stats.map_captures == 3 * 5
    for mutual, words in zip(outputs["mutual"], outputs["words"]):
        assert torch.equal(words, mutual)


@pytest.mark.parametrize("strength", [1.0, 0.35])
@pytest.mark.parametrize("case", list(MASK_LAYOUTS))
def test_masked_targets_equal_the_einsum_reference(sd15_double, case, strength):
    image_sources, repeats, calls = MASK_LAYOUTS[case]
    layout = StepLayout.cfg(image_sources, cond_repeats=repeats)
    x, t, context = stack_inputs(layout, dtype=torch.float64)
    blocks = {0: SOURCE_BLOCKS, 1: TARGET_BLOCKS}
    layer_map = LayerMap.from_unet(sd15_double)
    with MaskedReferenceUNet([layer_map[i].attn1 for i in range(6, 16)], layout, blocks, strength), torch.no_grad():
        expected = sd15_double(x, t, context=context)
    settings = MasaCtrlSettings(start_step=0, start_layer=6, strength=strength)
    with attach(sd15_double, settings, masks=user_guide()) as attachment:
        controlled = run_step(sd15_double, attachment, 2, layout, x, t, context, calls)
        controller = attachment.controller
        assert controller.notes == [] and controller.stats.fallback_rows == 0
        calls_with_targets = sum(any(source is not None for source in layout.sources[a:b]) for a, b in calls)
        assert controller.stats.masked_calls == 10 * calls_with_targets
        used = controller.used_masks
    torch.testing.assert_close(controlled, expected, rtol=0, atol=1e-10)
    assert used.step == 2
    assert torch.equal(used.masks[0], block_mask(SOURCE_BLOCKS, MAP_GRID).float())
    assert torch.equal(used.masks[1], block_mask(TARGET_BLOCKS, MAP_GRID).float())


def attn1_outputs(unet, masks, hidden, latent=(8, 16), layer_index=13):
    """One controlled attn1 call of a layer at latent resolution: rows [source, target]."""
    layer = LayerMap.from_unet(unet)[layer_index]
    with attach(unet, MasaCtrlSettings(start_step=0, start_layer=layer_index), masks=masks) as attachment:
        attachment.controller.begin_step(0, StepLayout.cfg((None, 0), uncond=False))
        attachment.controller.begin_unet_call(2, latent)
        with torch.no_grad():
            return layer.attn1(hidden)


def test_foreground_queries_read_only_source_foreground_keys(sd15_double):
    latent = (8, 16)
    guide = user_guide(size=latent)
    source_fg = block_mask(SOURCE_BLOCKS, latent).flatten()
    target_fg = block_mask(TARGET_BLOCKS, latent).flatten()
    hidden = torch.randn(2, 128, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    out = attn1_outputs(sd15_double, guide, hidden)

    changed_bg, changed_fg = hidden.clone(), hidden.clone()
    changed_bg[0, ~source_fg] += 1.0
    changed_fg[0, source_fg] += 1.0
    after_bg = attn1_outputs(sd15_double, guide, changed_bg)
    after_fg = attn1_outputs(sd15_double, guide, changed_fg)
    assert torch.equal(after_bg[1, target_fg], out[1, target_fg])
    assert (after_bg[1, ~target_fg] - out[1, ~target_fg]).abs().min() > 0
    assert torch.equal(after_fg[1, ~target_fg], out[1, ~target_fg])
    assert (after_fg[1, target_fg] - out[1, target_fg]).abs().min() > 0


def test_blending_follows_the_target_mask(sd15_double):
    latent = (8, 16)
    target_fg = block_mask(TARGET_BLOCKS, latent).flatten()
    hidden = torch.randn(2, 128, 32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = attn1_outputs(sd15_double, user_guide(size=latent), hidden)
    all_fg = attn1_outputs(sd15_double, user_guide(target_blocks=[[1] * 4] * 2, size=latent), hidden)
    all_bg = attn1_outputs(sd15_double, user_guide(target_blocks=[[0] * 4] * 2, size=latent), hidden)
    mutual = attn1_outputs(sd15_double, None, hidden)
    assert torch.equal(out[1, target_fg], all_fg[1, target_fg])
    assert torch.equal(out[1, ~target_fg], all_bg[1, ~target_fg])
    # the source row runs apart from the masked target row here, in a call of one row
    torch.testing.assert_close(out[0], mutual[0], rtol=0, atol=1e-10)
    assert (all_fg[1] - mutual[1]).abs().max() > 1e-3 and (all_bg[1] - mutual[1]).abs().max() > 1e-3


def test_masks_need_the_mutual_mode(sd15):
    with pytest.raises(SettingsError, match="masks work with the mutual mode only, not with the union mode"):
        attach(sd15, MasaCtrlSettings(mode="union"), masks=user_guide())


# --- cross-attention maps ---------------------------------------------------------------------


class Attn2Recorder:
    """Records every attn2 call's input and context (forward hooks, removed on exit)."""

    def __init__(self, layer_map) -> None:
        self.layer_map = layer_map
        self.calls: List[Tuple[int, torch.Tensor, torch.Tensor]] = []

    def __enter__(self):
        self.handles = [
            layer.attn2.register_forward_hook(
                lambda module, args, kwargs, out, index=layer.index: self.calls.append((index, args[0], kwargs["context"])),
                with_kwargs=True,
            )
            for layer in self.layer_map
        ]
        return self

    def __exit__(self, *exc_info):
        for handle in self.handles:
            handle.remove()


def reference_maps(layer_map, calls, rows: Dict[int, Tuple[int, Sequence[int]]], tokens: int) -> Dict[int, torch.Tensor]:
    """Per image: softmax(q k^T / sqrt(d)) over all context tokens, summed over its subject tokens,
    averaged over heads and latent/4 layers, min-max normalised. ``rows``: row -> (image, positions)."""
    sums: Dict[int, torch.Tensor] = {}
    counts: Dict[int, int] = {}
    for index, x, context in calls:
        if x.shape[1] != tokens:
            continue
        attn = layer_map[index].attn2
        for row, (image, subject) in rows.items():
            q = attn.to_q(x[row]).double().unflatten(-1, (attn.heads, -1))
            k = attn.to_k(context[row]).double().unflatten(-1, (attn.heads, -1))
            weights = (torch.einsum("nhd,mhd->hnm", q, k) * q.shape[-1] ** -0.5).softmax(-1)
            sums[image] = sums.get(image, 0) + weights[..., list(subject)].sum(-1).mean(0)
            counts[image] = counts.get(image, 0) + 1
    maps = {}
    for image, total in sums.items():
        mean = total / counts[image]
        maps[image] = ((mean - mean.min()) / (mean.max() - mean.min())).reshape(MAP_GRID)
    return maps


def test_maps_are_collected_at_latent_quarter_from_the_step_before(sd15_double):
    layout = StepLayout.cfg((None, 0))
    x, t, context = stack_inputs(layout, dtype=torch.float64)
    layer_map = LayerMap.from_unet(sd15_double)
    guide = MaskGuide(token_positions={0: ((3,),), 1: ((5, 6),)})
    before = module_state(sd15_double)
    with attach(sd15_double, MasaCtrlSettings(start_step=2, start_layer=10), total_steps=4, masks=guide) as attachment:
        controller = attachment.controller
        collected: List[Tuple[int, int]] = []
        add_maps = controller.add_maps
        controller.add_maps = lambda layer, *args: (collected.append((controller._step, layer)), add_maps(layer, *args))[1]

        run_step(sd15_double, attachment, 0, layout, x, t, context, [(0, 4)])
        assert collected == [] and controller.used_masks is None
        controller.begin_step(1, layout)
        with Attn2Recorder(layer_map) as recorder, torch.no_grad():
            sd15_double(x[:2], t[:2], context=context[:2])  # the cond rows
        with torch.no_grad():
            sd15_double(x[2:], t[2:], context=context[2:])  # the uncond rows: no maps
        assert collected == [(1, layer) for layer in (4, 5, 7, 8, 9)]
        assert all(not layer.attn2.to_q._forward_hooks and not layer.attn2.to_k._forward_hooks for layer in layer_map)
        assert controller.used_masks is None

        step_2 = run_step(sd15_double, attachment, 2, layout, x, t, context, [(0, 4)])
        expected = reference_maps(layer_map, recorder.calls, {0: (0, (3,)), 1: (1, (5, 6))}, 32)
        for image in (0, 1):
            torch.testing.assert_close(controller.masks.maps[image].double(), expected[image], rtol=0, atol=1e-10)
        used = controller.used_masks
        assert used.step == 2 and sorted(used.masks) == [0, 1]
        for image in (0, 1):
            mask = used.masks[image]
            assert mask.shape == MAP_GRID and set(mask.unique().tolist()) == {0.0, 1.0}
            assert torch.equal(mask.bool(), expected[image] >= 0.1)
        assert controller.stats.masked_calls == 6

        run_step(sd15_double, attachment, 3, layout, x, t, context, [(0, 4)])
        assert [step for step, _ in collected] == [1] * 5 + [2] * 5 + [3] * 5
    assert module_state(sd15_double) == before

    # Step 2 used exactly these masks: given as user masks at latent/4, they give the same images.
    as_user_masks = MaskGuide(user_masks=used.masks)
    with attach(sd15_double, MasaCtrlSettings(start_step=2, start_layer=10), masks=as_user_masks) as attachment:
        assert torch.equal(run_step(sd15_double, attachment, 2, layout, x, t, context, [(0, 4)]), step_2)


def test_sdxl_maps_include_the_middle_block_at_latent_quarter(sdxl):
    layout = StepLayout.cfg((None, 0), uncond=False)
    x, t, context = stack_inputs(layout, size=(8, 16), dim=2048)
    guide = MaskGuide(token_positions={0: ((2,),), 1: ((2,),)})
    with attach(sdxl, MasaCtrlSettings(start_step=0, start_layer=44), masks=guide) as attachment:
        collected: List[int] = []
        add_maps = attachment.controller.add_maps
        attachment.controller.add_maps = lambda layer, *args: (collected.append(layer), add_maps(layer, *args))[1]
        run_step(sdxl, attachment, 0, layout, x, t, context, [(0, 2)])
        assert collected == list(range(4, 64))
        attachment.controller.begin_step(1, layout)
        assert attachment.controller.masks.maps[0].shape == (2, 4)


def test_detach_all_removes_projection_hooks_left_by_a_crash(sd15):
    before = module_state(sd15)
    layer = LayerMap.from_unet(sd15)[4]
    CapturedProjections(layer.attn2).__enter__()
    assert layer.attn2.to_q._forward_hooks
    assert detach_all(sd15) == 2
    assert module_state(sd15) == before
