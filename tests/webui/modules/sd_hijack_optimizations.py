"""Mirrors modules/sd_hijack_optimizations.py for the scaled-dot-product optimisations: SdOptimization,
SdOptimizationSdp ("sdp"), SdOptimizationSdpNoMem ("sdp-no-mem") and their CrossAttention forwards,
which the WebUI assigns to ``ldm.modules.attention.CrossAttention.forward``.

Simplified: only ldm's CrossAttention is patched (sgm is not installed; the tiny SDXL U-Net's
attention class overrides forward itself) and the VAE AttnBlock forwards are left alone (the stand-in
VAE has no attention). xformers/Doggettx/InvokeAI/sub-quadratic/V1 are not provided."""

import torch

import ldm.modules.attention
from ldm.util import default
from modules import shared
from modules.hypernetworks import hypernetwork


class SdOptimization:
    # mirrors sd_hijack_optimizations.SdOptimization: undo() puts back the WebUI's default forward
    name: str = None
    label: str = None
    cmd_opt: str = None
    priority: int = 0

    def title(self):
        return self.name if self.label is None else f"{self.name} - {self.label}"

    def is_available(self):
        return True

    def apply(self):
        pass

    def undo(self):
        ldm.modules.attention.CrossAttention.forward = hypernetwork.attention_CrossAttention_forward


class SdOptimizationSdpNoMem(SdOptimization):
    name = "sdp-no-mem"
    label = "scaled dot product without memory efficient attention"
    cmd_opt = "opt_sdp_no_mem_attention"
    priority = 80

    def is_available(self):
        return hasattr(torch.nn.functional, "scaled_dot_product_attention") and callable(
            torch.nn.functional.scaled_dot_product_attention
        )

    def apply(self):
        ldm.modules.attention.CrossAttention.forward = scaled_dot_product_no_mem_attention_forward


class SdOptimizationSdp(SdOptimizationSdpNoMem):
    name = "sdp"
    label = "scaled dot product"
    cmd_opt = "opt_sdp_attention"
    priority = 70

    def apply(self):
        ldm.modules.attention.CrossAttention.forward = scaled_dot_product_attention_forward


def list_optimizers(res):
    # mirrors sd_hijack_optimizations.list_optimizers (the subset above)
    res.extend([SdOptimizationSdpNoMem(), SdOptimizationSdp()])


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    # mirrors sd_hijack_optimizations.scaled_dot_product_attention_forward: hypernetwork hook on the
    # context, optional fp32 upcast (opts.upcast_attn), torch's SDPA, then to_out
    batch_size, sequence_length, inner_dim = x.shape

    if mask is not None:
        mask = self.prepare_attention_mask(mask, sequence_length, batch_size)
        mask = mask.view(batch_size, self.heads, -1, mask.shape[-1])

    h = self.heads
    q_in = self.to_q(x)
    context = default(context, x)

    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)
    k_in = self.to_k(context_k)
    v_in = self.to_v(context_v)

    head_dim = inner_dim // h
    q = q_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    k = k_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    v = v_in.view(batch_size, -1, h, head_dim).transpose(1, 2)
    del q_in, k_in, v_in

    dtype = q.dtype
    if shared.opts.upcast_attn:
        q, k, v = q.float(), k.float(), v.float()

    hidden_states = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, h * head_dim).to(dtype)

    hidden_states = self.to_out[0](hidden_states)  # linear
    hidden_states = self.to_out[1](hidden_states)  # dropout
    return hidden_states


def scaled_dot_product_no_mem_attention_forward(self, x, context=None, mask=None, **kwargs):
    # mirrors sd_hijack_optimizations.scaled_dot_product_no_mem_attention_forward
    # (the real one uses the deprecated torch.backends.cuda.sdp_kernel; same backend selection)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
        return scaled_dot_product_attention_forward(self, x, context, mask)
