"""The fake loaded checkpoint (``shared.sd_model``) of the stand-in WebUI, around a real ldm U-Net from
tests/tiny_unets.py. Not part of the WebUI's ``modules``: modules/sd_models.py builds it when it loads a
checkpoint "file".

It stands in for what the real host loads from a checkpoint and its config:
- ldm's LatentDiffusion (SD1, SD2) or sgm's DiffusionEngine as the WebUI extends it (SDXL base and
  refiner, modules/sd_models_xl.py), told apart by the U-Net's text-context width (768, 1024, 2048,
  1280). ``apply_model`` reaches the U-Net through its ``__call__`` (hooks fire) as
  ``unet(x, t, context=...)``, plus ``y=`` the "vector" cond for a U-Net with a label embedding (the
  tiny refiner; the tiny SDXL base has none, unlike the real one). SDXL conds are
  ``{"crossattn", "vector"}`` dicts, the vector being the pooled text followed by zeros where the
  real conditioner puts its size, crop and aesthetic-score embeddings.
- the CLIP text encoder as modules/sd_hijack_clip.py wraps it: the real chunking (75 tokens per chunk,
  wrapped in start/end tokens to 77 rows, padded with the end token; every prompt of a call gets as
  many chunks as the longest; BREAK; a chunk that overflows within ``comma_padding_backtrack`` tokens
  of a comma moves its tail to the next chunk), the four emphasis modes of modules/sd_emphasis.py and
  clip skip. The "CLIP" itself is a deterministic toy: words and punctuation hash (crc32) into a
  seeded embedding table, plus position embeddings; 12 "layers" move the embeddings step by step to
  their causal running mean; a final layer norm (plus a bias, so the output mean is not zero, as
  CLIP's is not, which "Original" emphasis relies on). Clip skip N > 1 takes hidden state -N of the 13
  through the final layer norm, for the SD1 encoder only (SD2's OpenCLIP and the SDXL encoders ignore
  it, as the real ones do with the default ``sdxl_clip_l_skip = False``).
- the VAE: a fixed linear map. Decoding applies the WebUI's 4 -> 3 "cheap approximation" matrix and 8x
  nearest upsampling; encoding averages 8x8 blocks and applies that matrix's pseudo-inverse, so
  encoding a decoded latent gives it back exactly.
- SD's noise schedule: betas from sqrt(0.00085) to sqrt(0.012) squared, over 1000 steps.
"""

from __future__ import annotations

import contextlib
import copy
import re
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

import ldm.modules.attention as ldm_attention
from modules import prompt_parser, sd_emphasis, shared

CHUNK_TOKENS = 75
"""Tokens of one chunk between its start and end token (sd_hijack_clip's chunk_length)."""

_LATENT_TO_RGB = torch.tensor([[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]])

# Width of the SDXL "vector" cond by text-context width: pooled text (1280) + original size, crop and
# target size (512 each) for the base; pooled text + original size, crop and aesthetic score for the refiner.
_SDXL_VECTOR_WIDTH = {2048: 2816, 1280: 2560}


def text_context_width(unet: nn.Module) -> int:
    """The width of the text context the U-Net's cross-attention takes (what tells SD1/SD2/SDXL apart)."""
    spatial = next((m for m in unet.modules() if isinstance(m, ldm_attention.SpatialTransformer)), None)
    if spatial is None:
        raise ValueError("the U-Net has no spatial transformer")
    return spatial.transformer_blocks[0].attn2.to_k.in_features


@dataclass
class PromptChunk:
    """sd_hijack_clip.PromptChunk: the 77 token ids of one chunk and each token's emphasis weight."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)


class _ChunkFiller:
    """Cuts a prompt's (token, weight) stream into chunks as sd_hijack_clip's tokenize_line does."""

    def __init__(self, start: int, end: int, comma: int, backtrack: int):
        self.start, self.end, self.comma, self.backtrack = start, end, comma, backtrack
        self.chunks: list[PromptChunk] = []
        self.tokens: list[int] = []
        self.weights: list[float] = []
        self.last_comma = -1
        self.token_count = 0

    def close(self, final: bool = False) -> None:
        """Pad the open chunk with end tokens, wrap it and start a new one. The real token count counts
        every chunk but the final one as full (a BREAK chunk too)."""
        self.token_count += len(self.tokens) if final else CHUNK_TOKENS
        padding = CHUNK_TOKENS - len(self.tokens)
        self.chunks.append(
            PromptChunk(
                [self.start, *self.tokens, *[self.end] * padding, self.end],
                [1.0, *self.weights, *[1.0] * padding, 1.0],
            )
        )
        self.tokens, self.weights, self.last_comma = [], [], -1

    def add(self, token: int, weight: float) -> None:
        full = len(self.tokens) == CHUNK_TOKENS
        if token == self.comma:
            self.last_comma = len(self.tokens)
        elif full and self.backtrack and self.last_comma != -1 and CHUNK_TOKENS - self.last_comma <= self.backtrack:
            # the words after the last comma move on to the next chunk
            keep, tokens, weights = self.last_comma + 1, self.tokens, self.weights
            self.tokens, self.weights = tokens[:keep], weights[:keep]
            self.close()
            self.tokens, self.weights = tokens[keep:], weights[keep:]
        if len(self.tokens) == CHUNK_TOKENS:
            self.close()
        self.tokens.append(token)
        self.weights.append(weight)

    def finish(self) -> tuple[list[PromptChunk], int]:
        if self.tokens or not self.chunks:
            self.close(final=True)
        return self.chunks, self.token_count


class FakeTextEncoder(nn.Module):
    """The stand-in CLIP text encoder with sd_hijack_clip's FrozenCLIPEmbedderWithCustomWords around it
    (see the module docstring). ``honours_clip_skip``: the SD1 encoder."""

    layer_count = 12  # CLIP ViT-L/14's text transformer depth: clip skip 1..12

    def __init__(self, context_dim: int, seed: int = 1234, vocab: int = 4096, honours_clip_skip: bool = False):
        super().__init__()
        self.honours_clip_skip = honours_clip_skip
        self.vocab = vocab
        self.id_start, self.id_end = vocab, vocab + 1
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("token_embedding", torch.randn(vocab + 2, context_dim, generator=generator))
        self.register_buffer("position_embedding", torch.randn(CHUNK_TOKENS + 2, context_dim, generator=generator) * 0.5)
        self.register_buffer("output_bias", 0.5 + 0.1 * torch.randn(context_dim, generator=generator))
        self.comma_token = self._word_id(",")

    def _word_id(self, word: str) -> int:
        return zlib.crc32(word.encode("utf8")) % self.vocab

    def tokenize(self, texts):
        """Token ids of each text without start/end tokens (what the real tokenizer wrapper's tokenize
        returns): every word and every punctuation mark is one token."""
        return [[self._word_id(word) for word in re.findall(r"\w+|[^\w\s]", text.lower())] for text in texts]

    def tokenize_line(self, line):
        """Mirrors sd_hijack_clip.TextConditionalModel.tokenize_line (no textual-inversion embeddings):
        ``(chunks, token count)``. Emphasis mode "None" leaves the brackets in the text."""
        if shared.opts.emphasis == "None":
            parsed = [[line, 1.0]]
        else:
            parsed = prompt_parser.parse_prompt_attention(line)
        filler = _ChunkFiller(self.id_start, self.id_end, self.comma_token, shared.opts.comma_padding_backtrack)
        for (text, weight), tokens in zip(parsed, self.tokenize([text for text, _ in parsed])):
            if text == "BREAK" and weight == -1:
                filler.close()
                continue
            for token in tokens:
                filler.add(token, weight)
        return filler.finish()

    def hidden_states(self, tokens):
        """The 13 hidden states, as HF CLIP's ``output_hidden_states``: the embeddings, then each layer's
        output. Layer k lies k/12 of the way from the embeddings to their causal running mean (a toy of
        CLIP's causal mixing); the last layer's output is that running mean."""
        embedded = self.token_embedding[tokens] + self.position_embedding[: tokens.shape[1]]
        counts = torch.arange(1, tokens.shape[1] + 1, dtype=embedded.dtype).view(1, -1, 1)
        running_mean = embedded.cumsum(dim=1) / counts
        blended = [embedded + (k / self.layer_count) * (running_mean - embedded) for k in range(1, self.layer_count)]
        return (embedded, *blended, running_mean)

    def final_layer_norm(self, z):
        return F.layer_norm(z, z.shape[-1:]) + self.output_bias

    def encode_with_transformers(self, tokens):
        """Mirrors FrozenCLIPEmbedderWithCustomWords.encode_with_transformers: with clip skip N > 1 the
        hidden state N from the end, else the last one, through the final layer norm."""
        skip = shared.opts.CLIP_stop_at_last_layers if self.honours_clip_skip else 1
        return self.final_layer_norm(self.hidden_states(tokens)[-max(skip, 1)])

    def _encode_chunks(self, chunks: list[PromptChunk]) -> torch.Tensor:
        # TextConditionalModel.process_tokens: the transformer, then the emphasis mode on the result
        z = self.encode_with_transformers(torch.asarray([chunk.tokens for chunk in chunks]))
        emphasis = sd_emphasis.get_current_option(shared.opts.emphasis)()
        emphasis.tokens = [chunk.tokens for chunk in chunks]
        emphasis.multipliers = torch.asarray([chunk.multipliers for chunk in chunks], dtype=z.dtype)
        emphasis.z = z
        emphasis.after_transformers()
        return emphasis.z

    def forward(self, texts):
        """Mirrors TextConditionalModel.forward: chunk i of every prompt is encoded in one batch (an empty
        chunk for prompts that have fewer), the chunks' outputs are concatenated along the tokens. A
        prompt with ( or [ under a mode other than "Original" adds "Emphasis" to the infotext."""
        chunked: dict[str, list[PromptChunk]] = {}
        for text in texts:
            if text not in chunked:
                chunked[text] = self.tokenize_line(text)[0]
        per_text = [chunked[text] for text in texts]
        empty = PromptChunk([self.id_start] + [self.id_end] * (CHUNK_TOKENS + 1), [1.0] * (CHUNK_TOKENS + 2))
        outputs = [
            self._encode_chunks([chunks[i] if i < len(chunks) else empty for chunks in per_text])
            for i in range(max(len(chunks) for chunks in per_text))
        ]
        if shared.opts.emphasis != "Original" and any("(" in text or "[" in text for text in texts):
            from modules.sd_hijack import model_hijack

            model_hijack.extra_generation_params["Emphasis"] = shared.opts.emphasis
        return torch.hstack(outputs)


class FakeVAE(nn.Module):
    """The fixed linear "VAE" (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("decode_matrix", _LATENT_TO_RGB.clone())
        self.register_buffer("encode_matrix", torch.linalg.pinv(_LATENT_TO_RGB))

    @property
    def dtype(self):
        return self.decode_matrix.dtype

    def decode(self, z):
        return F.interpolate(torch.einsum("bchw,cr->brhw", z.float(), self.decode_matrix), scale_factor=8, mode="nearest")

    def encode(self, x):
        return torch.einsum("brhw,rc->bchw", F.avg_pool2d(x.float(), 8), self.encode_matrix)


class FakePosterior:
    """ldm's DiagonalGaussianDistribution with zero variance: sampling gives the mean."""

    def __init__(self, mean):
        self.mean = mean

    def sample(self):
        return self.mean


class DiffusionWrapper(nn.Module):
    """ldm.models.diffusion.ddpm.DiffusionWrapper with the "crossattn" conditioning key (the only one the
    stand-in checkpoints have): the cross-attention conds are concatenated along the tokens."""

    conditioning_key = "crossattn"

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c_concat=None, c_crossattn=None, c_adm=None):
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class SgmWrapper(nn.Module):
    """sgm's OpenAIWrapper as modules/sd_models_xl.py uses it: ``crossattn`` is the context and
    ``vector`` becomes ``y``, here only for a U-Net with a label embedding (``num_classes`` set)."""

    conditioning_key = "crossattn"  # set by the WebUI's sd_models_xl.extend_sdxl

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c):
        extra = {} if getattr(self.diffusion_model, "num_classes", None) is None else {"y": c.get("vector")}
        return self.diffusion_model(x, t, context=c.get("crossattn"), **extra)


def sd_alphas_cumprod() -> torch.Tensor:
    """SD's noise schedule as the cumulative product of 1 - beta (float32, 1000 steps)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class StandInModel(nn.Module):
    """What modules/sd_models.py load_model instantiates from a checkpoint's config: ``model`` (the
    wrapper holding ``diffusion_model``), ``first_stage_model``, ``cond_stage_model`` and the schedule.
    The checkpoint fields below are filled in by the loader, as the real one does."""

    sd_checkpoint_info = sd_model_checkpoint = sd_model_hash = used_config = cond_stage_model_empty_prompt = None

    def __init__(self, unet: nn.Module, text_seed: int = 1234):
        super().__init__()
        width = text_context_width(unet)
        self.is_sdxl = width in _SDXL_VECTOR_WIDTH  # the real host: SDXL base and refiner alike
        self.is_sd1 = width == 768
        self.latent_channels = 4
        self.parameterization = "eps"
        self.cond_stage_key = "txt"

        self.model = SgmWrapper(unet) if self.is_sdxl else DiffusionWrapper(unet)
        self.first_stage_model = FakeVAE()
        self.cond_stage_model = FakeTextEncoder(width, seed=text_seed, honours_clip_skip=self.is_sd1)

        self.register_buffer("alphas_cumprod", sd_alphas_cumprod(), persistent=False)
        self.alphas_cumprod_original = self.alphas_cumprod

    @property
    def device(self):
        return self.alphas_cumprod.device

    @property
    def dtype(self):
        return torch.float32

    @contextlib.contextmanager
    def ema_scope(self, context=None):
        yield None

    def get_learned_conditioning(self, texts):
        """The text conds of ``texts``: a tensor, or for SDXL a DictWithShape with the pooled "vector"."""
        crossattn = self.cond_stage_model(texts)
        if not self.is_sdxl:
            return crossattn
        pooled = crossattn.mean(dim=1)
        padding = torch.zeros(pooled.shape[0], _SDXL_VECTOR_WIDTH[crossattn.shape[-1]] - pooled.shape[1])
        return prompt_parser.DictWithShape({"crossattn": crossattn, "vector": torch.cat([pooled, padding], dim=1)})

    def apply_model(self, x_noisy, t, cond):
        """LatentDiffusion.apply_model (a bare cond or list becomes ``c_crossattn``), or for SDXL
        sd_models_xl.apply_model (the dict cond goes to the wrapper as it is)."""
        if self.is_sdxl:
            return self.model(x_noisy, t, cond)
        if not isinstance(cond, dict):
            cond = {"c_crossattn": cond if isinstance(cond, list) else [cond]}
        return self.model(x_noisy, t, **cond)

    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z)

    def encode_first_stage(self, x):
        return FakePosterior(self.first_stage_model.encode(x))

    def get_first_stage_encoding(self, encoder_posterior):
        if isinstance(encoder_posterior, FakePosterior):
            return encoder_posterior.sample()
        if isinstance(encoder_posterior, torch.Tensor):
            return encoder_posterior
        raise NotImplementedError(f"encoder_posterior of type '{type(encoder_posterior)}' not yet implemented")


_DROPPED = object()


def stripped_copy(module: nn.Module, *, with_weights: bool) -> nn.Module:
    """A deep copy of ``module`` without what others attached to it: forward hooks and per-instance
    ``forward`` / ``_forward`` overrides are left out (not even copied, so whatever they hold is not
    duplicated). ``with_weights=False`` gives meta-device placeholders instead of copies of the tensors."""
    memo: dict[int, object] = {}
    for sub in module.modules():
        for name, value in vars(sub).items():
            if name in ("forward", "_forward"):
                memo[id(value)] = _DROPPED
            elif name.startswith("_forward") and isinstance(value, dict):
                memo[id(value)] = type(value)()
        if not with_weights:
            for tensor in [*sub._parameters.values(), *sub._buffers.values()]:
                if tensor is not None and id(tensor) not in memo:
                    placeholder = torch.empty_like(tensor, device="meta")
                    if isinstance(tensor, nn.Parameter):
                        placeholder = nn.Parameter(placeholder, requires_grad=tensor.requires_grad)
                    memo[id(tensor)] = placeholder
    duplicate = copy.deepcopy(module, memo)
    for sub in duplicate.modules():
        for name in [name for name, value in vars(sub).items() if value is _DROPPED]:
            delattr(sub, name)
    return duplicate
