"""Stand-in for Forge's ``backend/attention.py``.

Forge picks one of several kernels (xformers, PyTorch SDPA, split, sub-quadratic) at import time and
binds it to the module attribute ``attention_function``. They agree on the contract mirrored here:
``attention_function(q, k, v, heads, mask=None)`` takes projected tensors laid out as
``(batch, tokens, heads * dim_head)`` and returns the same layout. The stand-in has one kernel
(PyTorch's scaled dot product) and no precision or memory options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _heads_first(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads*d) -> (batch, heads, tokens, d)."""
    batch, tokens, width = t.shape
    return t.reshape(batch, tokens, heads, width // heads).permute(0, 2, 1, 3)


def attention_function(q, k, v, heads, mask=None):
    """Mirrors ``attention_function`` of ``backend/attention.py``: multi-head softmax attention of
    ``q`` over ``k``/``v``, each head scaled by 1/sqrt(dim_head). ``mask`` (additive float or boolean)
    may be (queries, keys), (batch, queries, keys) or already per head; it is broadcast over heads.
    Simplified: a single kernel, no upcasting switch, no ``skip_reshape`` argument."""
    if mask is not None and mask.dim() == 3:
        mask = mask.unsqueeze(1)
    attended = F.scaled_dot_product_attention(
        _heads_first(q, heads), _heads_first(k, heads), _heads_first(v, heads), attn_mask=mask
    )
    batch, _, tokens, dim_head = attended.shape
    return attended.permute(0, 2, 1, 3).reshape(batch, tokens, heads * dim_head)
