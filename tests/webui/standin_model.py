"""A stand-in for the WebUI's loaded Stable Diffusion model (``shared.sd_model``), around a real ldm
U-Net (tests/tiny_unets.py). Not part of the WebUI's ``modules``; the harness builds it.

What is real-shaped:
- ``sd_model.model`` is a DiffusionWrapper-like module whose ``diffusion_model`` is the U-Net;
  ``apply_model(x, t, cond)`` calls ``self.model(x, t, **cond)`` which calls the U-Net through
  ``__call__`` (so forward hooks / pre-hooks fire) with ``context=torch.cat(c_crossattn, 1)``,
  mirroring ldm.models.diffusion.ddpm.LatentDiffusion.apply_model / DiffusionWrapper.forward.
  In SDXL mode (context_dim 2048 = base, 1280 = refiner) conds are dicts {"crossattn", "vector"} as
  sgm's conditioner returns (vector = pooled text, then zeros for the size/crop/aesthetic embeddings)
  and apply_model mirrors sgm's OpenAIWrapper (``vector`` reaches only a U-Net with a label
  embedding: the tiny refiner has one, the tiny base has none).
- The checkpoint fields (sd_checkpoint_info, sd_model_hash, used_config...) and the empty-prompt cond
  are set by the stand-in sd_models.load_model, as the real loader sets them.
- ``alphas_cumprod``: SD's "scaled linear" schedule, beta 0.00085..0.012 over 1000 steps.
- The text encoder mirrors modules/sd_hijack_clip.py's chunking: a prompt becomes chunks of 75
  tokens, each padded with end tokens and wrapped in start/end tokens -> 77 rows; all prompts of one
  call get the same number of chunks; BREAK, comma back-tracking and the emphasis modes of
  modules/sd_emphasis.py ("Original": multiply, then restore the mean; "No norm": multiply; "Ignore";
  "None": not parsed) are applied like the real one, and a prompt with ( or [ under a mode other than
  "Original" adds "Emphasis" to model_hijack.extra_generation_params. The "CLIP" itself is fake:
  words and punctuation -> ids by crc32, one seeded embedding table, plus positional embeddings,
  12 "layers" that blend the embeddings step by step into their causal running mean (the last layer's
  output is that running mean), and a final layer norm (+ bias).
- Clip skip (opts.CLIP_stop_at_last_layers = N) as sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords
  does for SD1 (768-wide context): N > 1 takes hidden_states[-N] (13 of them: embeddings + 12 layers)
  through the final layer norm instead of the last layer's output. SD2 (OpenCLIP) and the SDXL
  encoders ignore it, as the real ones do with the default sdxl_clip_l_skip = False (the stand-in
  does not model sdxl_clip_l_skip = True).
- The "VAE" is a fixed linear map: decode = the WebUI's "cheap approximation" 4->3 channel matrix
  then 8x nearest upsampling; encode = 8x8 average pooling then the pseudo-inverse of that matrix.
  Deterministic; encode(decode(z)) == z for any z.
"""

from __future__ import annotations

import contextlib
import math
import re
import zlib

import torch
import torch.nn.functional as F
from torch import nn

import ldm.modules.attention as ldm_attention
from modules import prompt_parser, sd_emphasis, shared

CHEAP_APPROX_SD1 = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []


class FakeTextEncoder(nn.Module):
    """Deterministic text encoder with the chunking of FrozenCLIPEmbedderWithCustomWords."""

    chunk_length = 75
    num_layers = 12  # CLIP ViT-L/14's text transformer depth (clip skip 1..12)

    def __init__(self, context_dim: int, seed: int = 1234, vocab: int = 4096, honours_clip_skip: bool = False):
        super().__init__()
        self.honours_clip_skip = honours_clip_skip
        generator = torch.Generator().manual_seed(seed)
        self.vocab = vocab
        self.id_start = vocab
        self.id_end = vocab + 1
        self.id_pad = self.id_end
        self.register_buffer("token_embedding", torch.randn(vocab + 2, context_dim, generator=generator))
        self.register_buffer("position_embedding", torch.randn(self.chunk_length + 2, context_dim, generator=generator) * 0.5)
        # a non-zero mean, like CLIP's hidden states (the "Original" emphasis divides by the mean)
        self.register_buffer("output_bias", 0.5 + 0.1 * torch.randn(context_dim, generator=generator))
        self.comma_token = self._token_id(",")
        self.calls = 0  # how many times the encoder ran (cond cache tests)

    def _token_id(self, word):
        return zlib.crc32(word.encode("utf8")) % self.vocab

    def tokenize(self, texts):
        return [[self._token_id(w) for w in re.findall(r"\w+|[^\w\s]", text.lower())] for text in texts]

    def tokenize_line(self, line):
        # mirrors sd_hijack_clip.FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line (no embeddings)
        if shared.opts.emphasis != "None":
            parsed = prompt_parser.parse_prompt_attention(line)
        else:
            parsed = [[line, 1.0]]
        tokenized = self.tokenize([text for text, _ in parsed])

        chunks = []
        chunk = PromptChunk()
        token_count = 0
        last_comma = -1

        def next_chunk(is_last=False):
            nonlocal token_count, last_comma, chunk
            token_count += len(chunk.tokens) if is_last else self.chunk_length
            to_add = self.chunk_length - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [self.id_start] + chunk.tokens + [self.id_end]
            chunk.multipliers = [1.0] + chunk.multipliers + [1.0]
            last_comma = -1
            chunks.append(chunk)
            chunk = PromptChunk()

        for tokens, (text, weight) in zip(tokenized, parsed):
            if text == "BREAK" and weight == -1:
                next_chunk()
                continue
            for token in tokens:
                if token == self.comma_token:
                    last_comma = len(chunk.tokens)
                elif (
                    shared.opts.comma_padding_backtrack != 0
                    and len(chunk.tokens) == self.chunk_length
                    and last_comma != -1
                    and len(chunk.tokens) - last_comma <= shared.opts.comma_padding_backtrack
                ):
                    cut = last_comma + 1
                    moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                    chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                    next_chunk()
                    chunk.tokens, chunk.multipliers = moved_tokens, moved_mults
                if len(chunk.tokens) == self.chunk_length:
                    next_chunk()
                chunk.tokens.append(token)
                chunk.multipliers.append(weight)

        if chunk.tokens or not chunks:
            next_chunk(is_last=True)

        return chunks, token_count

    def process_texts(self, texts):
        cache = {}
        batch_chunks = []
        token_count = 0
        for line in texts:
            if line not in cache:
                cache[line] = self.tokenize_line(line)
            chunks, current = cache[line]
            token_count = max(current, token_count)
            batch_chunks.append(chunks)
        return batch_chunks, token_count

    def get_token_count(self, text):
        return self.process_texts([text])[1]

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def hidden_states(self, tokens):
        """The fake transformer's hidden states, as HF CLIP's output_hidden_states: the embeddings, then
        the output of each of the num_layers layers; layer k moves k/num_layers of the way from the
        embeddings to their causal running mean (the mixing of CLIP's causal mask)."""
        embedded = self.token_embedding[tokens] + self.position_embedding[: tokens.shape[1]]
        positions = torch.arange(1, tokens.shape[1] + 1, dtype=embedded.dtype).view(1, -1, 1)
        running_mean = embedded.cumsum(dim=1) / positions
        layers = [embedded + (k / self.num_layers) * (running_mean - embedded) for k in range(1, self.num_layers)]
        return (embedded, *layers, running_mean)

    def final_layer_norm(self, z):
        return F.layer_norm(z, z.shape[-1:]) + self.output_bias

    def encode_with_transformers(self, tokens):
        # mirrors sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords.encode_with_transformers: with clip
        # skip N > 1 the N-th hidden state from the end, through the final layer norm; otherwise the
        # last hidden state (the final layer norm of the last layer's output)
        hidden_states = self.hidden_states(tokens)
        clip_skip = shared.opts.CLIP_stop_at_last_layers if self.honours_clip_skip else 1
        if clip_skip > 1:
            return self.final_layer_norm(hidden_states[-clip_skip])
        return self.final_layer_norm(hidden_states[-1])

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        # mirrors TextConditionalModel.process_tokens: encode, then the emphasis option's after_transformers
        tokens = torch.asarray(remade_batch_tokens)
        z = self.encode_with_transformers(tokens)
        emphasis = sd_emphasis.get_current_option(shared.opts.emphasis)()
        emphasis.tokens = remade_batch_tokens
        emphasis.multipliers = torch.asarray(batch_multipliers, dtype=z.dtype)
        emphasis.z = z
        emphasis.after_transformers()
        return emphasis.z

    def forward(self, texts):
        # mirrors FrozenCLIPEmbedderWithCustomWordsBase.forward: chunk i of every prompt is encoded
        # together (missing chunks are empty chunks), the chunk outputs are concatenated on dim 1
        self.calls += 1
        batch_chunks, _ = self.process_texts(texts)
        chunk_count = max(len(x) for x in batch_chunks)
        zs = []
        for i in range(chunk_count):
            batch_chunk = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            zs.append(self.process_tokens([x.tokens for x in batch_chunk], [x.multipliers for x in batch_chunk]))
        if any(x for x in texts if "(" in x or "[" in x) and shared.opts.emphasis != "Original":
            from modules.sd_hijack import model_hijack

            model_hijack.extra_generation_params["Emphasis"] = shared.opts.emphasis
        return torch.hstack(zs)


class FakePosterior:
    """Stands in for ldm's DiagonalGaussianDistribution with zero variance."""

    def __init__(self, mean):
        self.mean = mean

    def sample(self):
        return self.mean

    def mode(self):
        return self.mean


class FakeVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("decode_matrix", CHEAP_APPROX_SD1.clone())
        self.register_buffer("encode_matrix", torch.linalg.pinv(CHEAP_APPROX_SD1))

    @property
    def dtype(self):
        return self.decode_matrix.dtype

    def decode(self, z):
        rgb = torch.einsum("bchw,cr->brhw", z.float(), self.decode_matrix)
        return F.interpolate(rgb, scale_factor=8, mode="nearest")

    def encode(self, x):
        pooled = F.avg_pool2d(x.float(), 8)
        return torch.einsum("brhw,rc->bchw", pooled, self.encode_matrix)


class DiffusionWrapper(nn.Module):
    """Mirrors ldm.models.diffusion.ddpm.DiffusionWrapper (crossattn / concat / hybrid keys)."""

    def __init__(self, diffusion_model, conditioning_key="crossattn"):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.conditioning_key = conditioning_key

    def forward(self, x, t, c_concat=None, c_crossattn=None, c_adm=None):
        if self.conditioning_key is None:
            return self.diffusion_model(x, t)
        if self.conditioning_key == "concat":
            return self.diffusion_model(torch.cat([x] + c_concat, dim=1), t)
        if self.conditioning_key == "crossattn":
            return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))
        if self.conditioning_key == "hybrid":
            return self.diffusion_model(torch.cat([x] + c_concat, dim=1), t, context=torch.cat(c_crossattn, 1))
        raise NotImplementedError(self.conditioning_key)


class SgmWrapper(nn.Module):
    """Mirrors sgm.modules.diffusionmodules.wrappers.OpenAIWrapper. ``vector`` is passed as ``y`` only to
    a U-Net with a label embedding (``num_classes`` set: the tiny SDXL refiner); the tiny SDXL base has
    none (the real one always gets ``y``)."""

    conditioning_key = "crossattn"  # set by the WebUI's sd_models_xl.extend_sdxl

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model

    def forward(self, x, t, c):
        x = torch.cat((x, c.get("concat", torch.Tensor([]).type_as(x))), dim=1)
        if getattr(self.diffusion_model, "num_classes", None) is not None:
            return self.diffusion_model(x, t, context=c.get("crossattn"), y=c.get("vector"))
        return self.diffusion_model(x, t, context=c.get("crossattn"))


def unet_context_dim(unet):
    for module in unet.modules():
        if isinstance(module, ldm_attention.SpatialTransformer):
            return module.transformer_blocks[0].attn2.to_k.in_features
    raise ValueError("the U-Net has no spatial transformer")


# width of the SDXL conditioner's "vector": base = pooled 1280 + original size, crop, target size (512
# each); refiner = pooled 1280 + original size, crop (512 each) + aesthetic score 256
_SDXL_VECTOR_WIDTH = {2048: 2816, 1280: 2560}


class StandInSDModel(nn.Module):
    """The object the harness puts in shared.sd_model."""

    def __init__(self, unet, text_seed=1234):
        super().__init__()
        context_dim = unet_context_dim(unet)
        # sd_models.set_model_type: SDXL base and refiner are both "is_sdxl" (they have a conditioner)
        self.is_sdxl = context_dim in _SDXL_VECTOR_WIDTH
        self.is_sd1 = context_dim == 768
        self.is_sd2 = context_dim == 1024
        self.is_sd3 = False
        self.is_ssd = False
        self.is_sdxl_inpaint = False
        self.latent_channels = 4
        self.parameterization = "eps"
        self.cond_stage_key = "txt"
        self.scale_factor = 0.13025 if self.is_sdxl else 0.18215

        self.model = SgmWrapper(unet) if self.is_sdxl else DiffusionWrapper(unet, "crossattn")
        self.first_stage_model = FakeVAE()
        # SD1's FrozenCLIPEmbedder honours clip skip; SD2's OpenCLIP and the SDXL encoders do not
        self.cond_stage_model = FakeTextEncoder(context_dim, seed=text_seed, honours_clip_skip=self.is_sd1)

        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, dim=0).float(), persistent=False)
        self.alphas_cumprod_original = self.alphas_cumprod  # set by the WebUI's sd_models.load_model

        # set by sd_models.load_model / load_model_weights, as in the real host
        self.sd_checkpoint_info = None
        self.sd_model_checkpoint = None
        self.sd_model_hash = None
        self.used_config = None
        self.lowvram = False
        self.cond_stage_model_empty_prompt = None

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
        crossattn = self.cond_stage_model(texts)
        if not self.is_sdxl:
            return crossattn
        pooled = crossattn.mean(dim=1)
        width = _SDXL_VECTOR_WIDTH[crossattn.shape[-1]]
        vector = torch.cat([pooled, torch.zeros(pooled.shape[0], width - pooled.shape[1])], dim=1)
        return prompt_parser.DictWithShape({"crossattn": crossattn, "vector": vector})

    def apply_model(self, x_noisy, t, cond, return_ids=False):
        if self.is_sdxl:
            return self.model(x_noisy, t, cond)  # mirrors sd_models_xl.apply_model
        if not isinstance(cond, dict):  # mirrors LatentDiffusion.apply_model
            cond = {
                "c_concat" if self.model.conditioning_key == "concat" else "c_crossattn": cond
                if isinstance(cond, list)
                else [cond]
            }
        return self.model(x_noisy, t, **cond)

    def decode_first_stage(self, z, predict_cids=False, force_not_quantize=False):
        return self.first_stage_model.decode(z)

    def encode_first_stage(self, x):
        return FakePosterior(self.first_stage_model.encode(x))

    def get_first_stage_encoding(self, encoder_posterior):
        if isinstance(encoder_posterior, FakePosterior):
            return encoder_posterior.sample()
        if isinstance(encoder_posterior, torch.Tensor):
            return encoder_posterior
        raise NotImplementedError(f"encoder_posterior of type '{type(encoder_posterior)}' not yet implemented")
