"""Stand-in for the inference half of the WebUI's modules/hypernetworks/hypernetwork.py: loaded
hypernetworks transform the text context before the keys and values of cross-attention, and the
WebUI's default ``CrossAttention.forward`` (what runs when no optimisation is applied) does so.

Loading and training hypernetworks is left out: ``shared.loaded_hypernetworks`` holds objects with a
``layers`` dict {context width: (module for the keys, module for the values)}. The stand-in host is
float32 only, so the real casts around the modules are left out too.
"""

from __future__ import annotations

import torch

from modules import shared


def apply_hypernetworks(hypernetworks, context, layer=None):
    """Mirrors hypernetwork.apply_hypernetworks: the context for the keys and the one for the values,
    each passed through the matching module of every loaded hypernetwork in turn (a hypernetwork without
    modules for this context width leaves both alone). The real one also records the modules on
    ``layer`` for training; not here."""
    context_k = context_v = context
    for network in hypernetworks:
        modules = (getattr(network, "layers", None) or {}).get(context_k.shape[2])
        if modules is not None:
            context_k, context_v = modules[0](context_k), modules[1](context_v)
    return context_k, context_v


def attention_CrossAttention_forward(self, x, context=None, mask=None, **kwargs):
    """Mirrors hypernetwork.attention_CrossAttention_forward: ldm's plain softmax attention (scores scaled
    by ``self.scale``, ldm's per-key boolean mask) with the hypernetworks applied to the context."""
    context_k, context_v = apply_hypernetworks(shared.loaded_hypernetworks, x if context is None else context, self)
    projected = (self.to_q(x), self.to_k(context_k), self.to_v(context_v))
    q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in projected)
    scores = q @ k.transpose(-1, -2) * self.scale
    if mask is not None:
        scores = scores.masked_fill(~mask.reshape(mask.shape[0], 1, 1, -1), -torch.finfo(scores.dtype).max)
    return self.to_out((scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2))
