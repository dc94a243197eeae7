"""Test infrastructure around the Forge stand-in (``tests/forge/backend``): tiny U-Nets with the real
SD1.x / SDXL transformer layouts, a ready ``UnetPatcher``, and one-call denoising.

Tests put ``tests/forge`` on ``sys.path`` (index 0) and import ``forge_unets`` and ``backend.*``.
"""

from __future__ import annotations

import torch
from backend.modules.k_model import KModel
from backend.nn.unet import IntegratedUNet2DConditionModel
from backend.patcher.unet import UnetPatcher
from backend.sampling.condition import compile_conditions
from backend.sampling.sampling_function import sampling_function_inner

# kind -> constructor arguments. SD1.x: 4 levels, one-block transformers at the top three levels and in
# the middle (16 layers), 768-wide text context; SD2.x: the same with a 1024-wide context. SDXL: 3 levels,
# no attention at the top level, depth 2 then 10, middle depth 10 (70 layers), 2048-wide context.
LAYOUTS = {
    "sd15": dict(channel_mult=(1, 2, 4, 4), transformer_depth=(1, 1, 1, 0), middle_depth=1, context_dim=768),
    "sd21": dict(channel_mult=(1, 2, 4, 4), transformer_depth=(1, 1, 1, 0), middle_depth=1, context_dim=1024),
    "sdxl": dict(channel_mult=(1, 2, 4), transformer_depth=(0, 2, 10), middle_depth=10, context_dim=2048),
}

# q/k projections get this extra gain so that attention maps are far from uniform: swapping keys or
# values between images then changes the output visibly.
QK_GAIN = 2.0
NORMS = (torch.nn.GroupNorm, torch.nn.LayerNorm)


def _seed_weights(module: torch.nn.Module, seed: int) -> None:
    """Normal weights scaled by 1/sqrt(fan-in), drawn in a fixed order from a seeded generator;
    normalisation layers are left neutral (scale 1, shift 0) so tokens keep distinct features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for owner_name, owner in module.named_modules():
            for name, parameter in owner.named_parameters(recurse=False):
                if isinstance(owner, NORMS):
                    parameter.fill_(1.0 if name == "weight" else 0.0)
                    continue
                fan_in = parameter[0].numel() if parameter.dim() > 1 else parameter.numel()
                values = torch.randn(parameter.shape, generator=generator) / max(fan_in, 1) ** 0.5
                if owner_name.endswith((".to_q", ".to_k")):
                    values = values * QK_GAIN
                parameter.copy_(values)


def tiny_forge_unet(kind: str = "sd15", seed: int = 0) -> IntegratedUNet2DConditionModel:
    """A seeded float32 stand-in U-Net (8 base channels, 2 heads) with ``kind``'s real layout."""
    unet = IntegratedUNet2DConditionModel(model_channels=8, num_heads=2, **LAYOUTS[kind])
    _seed_weights(unet, seed)
    return unet.eval().requires_grad_(False)


def standin_patcher(kind: str = "sd15", seed: int = 0) -> UnetPatcher:
    """What Forge exposes as ``p.sd_model.forge_objects.unet``: a ``UnetPatcher`` around a ``KModel``."""
    return UnetPatcher(KModel(tiny_forge_unet(kind, seed)))


def text_context(kind: str = "sd15", batch: int = 1, tokens: int = 77, seed: int = 1) -> torch.Tensor:
    """Seeded random text-encoder output of the right width for ``kind``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, LAYOUTS[kind]["context_dim"], generator=generator)


def compiled(value):
    """Forge's compiled conditions (``compile_conditions``) from a test's shorthand: a text context
    tensor, a ``{"crossattn": tensor, ...}`` dict whose other keys (``strength``, ``control``) are kept,
    or a list of those (one entry each); ``None`` stays ``None``."""
    if value is None:
        return None
    entries = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict):
            context, extra = item["crossattn"], {key: entry for key, entry in item.items() if key != "crossattn"}
        else:
            context, extra = item, {}
        entries.append({**compile_conditions(context)[0], **extra})
    return entries


def denoise(patcher, x, sigma, conds, uncond, cond_scale):
    """One guided evaluation through ``sampling_function_inner`` with the patcher's options. ``sigma``
    is a number or one value per image; ``conds``/``uncond`` are in :func:`compiled`'s shorthand."""
    sigmas = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1).expand(x.shape[0]).clone()
    with torch.no_grad():
        return sampling_function_inner(patcher.model, x, sigmas, compiled(uncond), compiled(conds), cond_scale,
                                       patcher.model_options)
