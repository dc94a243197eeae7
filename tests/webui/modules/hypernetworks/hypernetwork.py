"""Mirrors the inference half of modules/hypernetworks/hypernetwork.py: hypernetwork context hooks and
the WebUI's default (non-optimised) CrossAttention forward. Training/loading is not provided;
tests put objects with a ``layers`` dict {context_dim: (module_k, module_v)} in
shared.loaded_hypernetworks to exercise the hook."""

import torch
from einops import rearrange, repeat
from torch import einsum

from ldm.util import default
from modules import devices, shared


def apply_single_hypernetwork(hypernetwork, context_k, context_v, layer=None):
    # mirrors hypernetwork.apply_single_hypernetwork: layers are looked up by the context width
    layers = (hypernetwork.layers if hypernetwork is not None else {}).get(context_k.shape[2], None)
    if layers is None:
        return context_k, context_v
    if layer is not None:
        layer.hyper_k = layers[0]
        layer.hyper_v = layers[1]
    context_k = devices.cond_cast_unet(layers[0](devices.cond_cast_float(context_k)))
    context_v = devices.cond_cast_unet(layers[1](devices.cond_cast_float(context_v)))
    return context_k, context_v


def apply_hypernetworks(hypernetworks, context, layer=None):
    # mirrors hypernetwork.apply_hypernetworks: chains every loaded hypernetwork on k and v separately
    context_k = context
    context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v, layer)
    return context_k, context_v


def attention_CrossAttention_forward(self, x, context=None, mask=None, **kwargs):
    # mirrors hypernetwork.attention_CrossAttention_forward: ldm's einsum attention with the hypernetwork hook
    h = self.heads
    q = self.to_q(x)
    context = default(context, x)
    context_k, context_v = apply_hypernetworks(shared.loaded_hypernetworks, context, self)
    k = self.to_k(context_k)
    v = self.to_v(context_v)
    q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=h) for t in (q, k, v))
    sim = einsum("b i d, b j d -> b i j", q, k) * self.scale
    if mask is not None:
        mask = rearrange(mask, "b ... -> b (...)")
        mask = repeat(mask, "b j -> (b h) () j", h=h)
        sim.masked_fill_(~mask, -torch.finfo(sim.dtype).max)
    attn = sim.softmax(dim=-1)
    out = einsum("b i j, b j d -> b i d", attn, v)
    out = rearrange(out, "(b h) n d -> b n (h d)", h=h)
    return self.to_out(out)
