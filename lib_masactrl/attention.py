"""Mutual self-attention computed through the host's own attention forward.

Self-attention projects keys and values from its context, which is the row's own hidden states.
Handing a target row its source row's hidden states as the context therefore makes the target
attend with its own queries over exactly the source's keys and values. Doing it this way, instead
of with a private attention kernel, means the call runs whatever attention the host installed
(SDPA, xformers, sub-quadratic, split, upcast to fp32 or not), applies the host's hypernetworks
and LoRA to the projections, never builds an attention matrix the host would not, and leaves
source rows bit-identical to plain generation. The only extra work is one gather of the context.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import torch

from .settings import Mode

AttentionCall = Callable[..., torch.Tensor]


def controlled_self_attention(
    call: AttentionCall,
    x: torch.Tensor,
    context: torch.Tensor | None,
    bank: torch.Tensor,
    kv_rows: List[int],
    mode: Mode,
    extra: Dict[str, Any],
) -> torch.Tensor:
    """Run one controlled attn1 call.

    ``bank`` holds the context rows keys and values may come from: this call's own contexts
    (rows ``0..len(x)-1``), followed by contexts kept from an earlier call of the same step.
    ``kv_rows[i]`` is the bank row whose keys and values row ``i`` reads; ``kv_rows[i] == i``
    means plain self-attention. ``context`` is the explicit context the caller passed (``None``
    for ordinary self-attention, where the row's own hidden states are used)."""
    index = torch.tensor(kv_rows, device=bank.device)
    if mode is Mode.MUTUAL:
        return call(x, context=bank.index_select(0, index), **extra)

    own = x if context is None else context
    targets = [i for i, row in enumerate(kv_rows) if row != i]
    others = [i for i, row in enumerate(kv_rows) if row == i]
    target_index = torch.tensor(targets, device=x.device)
    union_context = torch.cat(
        [bank.index_select(0, index.index_select(0, target_index)), own.index_select(0, target_index)], dim=1
    )
    target_out = call(x.index_select(0, target_index), context=union_context, **extra)
    if not others:
        return target_out
    other_index = torch.tensor(others, device=x.device)
    other_context = None if context is None else context.index_select(0, other_index)
    other_out = call(x.index_select(0, other_index), context=other_context, **extra)
    out = target_out.new_empty((x.shape[0],) + tuple(target_out.shape[1:]))
    out.index_copy_(0, target_index, target_out)
    out.index_copy_(0, other_index, other_out)
    return out
