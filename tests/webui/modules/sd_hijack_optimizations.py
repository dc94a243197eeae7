"""Stand-in for the WebUI's modules/sd_hijack_optimizations.py, limited to the two optimisations built on
torch's scaled_dot_product_attention: "sdp" and "sdp-no-mem". Applying one assigns its forward to the
class attribute ``ldm.modules.attention.CrossAttention.forward``, as the real file does.

Left out: xformers, Doggettx, InvokeAI, sub-quadratic, split-v1; sgm's CrossAttention (not installed;
the tiny SDXL U-Nets' attention overrides ``forward`` itself) and the VAE's AttnBlock (the stand-in VAE
has no attention).
"""

from __future__ import annotations

import torch.nn.functional as F

import ldm.modules.attention
from modules import shared
from modules.hypernetworks import hypernetwork


class SdOptimization:
    """Mirrors sd_hijack_optimizations.SdOptimization: an entry of the "Cross attention optimization"
    setting. ``attention_forward`` is what ``apply`` installs on CrossAttention; ``undo`` puts back the
    WebUI's default forward."""

    name: str = None
    label: str | None = None
    cmd_opt: str | None = None
    priority: int = 0
    attention_forward = None

    def title(self):
        return self.name if self.label is None else f"{self.name} - {self.label}"

    def is_available(self):
        return callable(getattr(F, "scaled_dot_product_attention", None))

    def apply(self):
        ldm.modules.attention.CrossAttention.forward = type(self).attention_forward

    def undo(self):
        ldm.modules.attention.CrossAttention.forward = hypernetwork.attention_CrossAttention_forward


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    """Mirrors sd_hijack_optimizations.scaled_dot_product_attention_forward: the keys and values come from
    the context after the loaded hypernetworks, the heads go through torch's SDPA (in float32 with
    opts.upcast_attn), then ``to_out``. A mask is ldm's per-key boolean mask."""
    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, x if context is None else context)
    projected = (self.to_q(x), self.to_k(context_k), self.to_v(context_v))
    q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in projected)
    dtype = q.dtype
    if shared.opts.upcast_attn:
        q, k, v = q.float(), k.float(), v.float()
    if mask is not None:
        mask = mask.reshape(mask.shape[0], 1, 1, -1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return self.to_out(out.transpose(1, 2).flatten(2).to(dtype))


def scaled_dot_product_no_mem_attention_forward(self, x, context=None, mask=None, **kwargs):
    """Mirrors sd_hijack_optimizations.scaled_dot_product_no_mem_attention_forward: the same, with SDPA's
    memory-efficient kernel excluded (flash or math only)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
        return scaled_dot_product_attention_forward(self, x, context, mask)


class SdOptimizationSdp(SdOptimization):
    """sd_hijack_optimizations.SdOptimizationSdp ("sdp", --opt-sdp-attention)."""

    name, label, cmd_opt, priority = "sdp", "scaled dot product", "opt_sdp_attention", 70
    attention_forward = scaled_dot_product_attention_forward


class SdOptimizationSdpNoMem(SdOptimization):
    """sd_hijack_optimizations.SdOptimizationSdpNoMem ("sdp-no-mem", --opt-sdp-no-mem-attention)."""

    name, cmd_opt, priority = "sdp-no-mem", "opt_sdp_no_mem_attention", 80
    label = "scaled dot product without memory efficient attention"
    attention_forward = scaled_dot_product_no_mem_attention_forward


def list_optimizers(res):
    """Mirrors sd_hijack_optimizations.list_optimizers, the on_list_optimizers callback the WebUI registers."""
    res.extend(optimization() for optimization in (SdOptimizationSdpNoMem, SdOptimizationSdp))
