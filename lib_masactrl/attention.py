"""Mutual self-attention computed through the host's own attention forward.

Self-attention projects keys and values from its context, which is the row's own hidden states.
Handing a target row its source row's hidden states as the context therefore makes the target
attend with its own queries over exactly the source's keys and values. Doing it this way, instead
of with a private attention kernel, means the call runs whatever attention the host installed
(SDPA, xformers, sub-quadratic, split, upcast to fp32 or not), applies the host's hypernetworks
and LoRA to the projections and never builds an attention matrix the host would not. The only
extra work is one gather of the context.

What happens to the source rows is the contract the tests hold the engine to. In mutual mode every
row runs in the one call that holds the whole batch, shaped exactly as without control, and a
source row's inputs are its own: it is bit-identical to the same batch uncontrolled. Union and
masked attention give the targets other key counts than the sources, so those run in calls of
their own, and the source rows then run in a smaller call than the uncontrolled batch's. The
kernels may round a smaller call differently (matrix products pick their blocking by size, which
differs from machine to machine), so there the sources equal the uncontrolled ones up to float
rounding only. Computing them inside a whole-batch call as well would cost one more attention
pass over every target row in each controlled layer, for a difference no image shows.

Strength below 1 blends each target's controlled output with its own self-attention
(:func:`strength_blend`), which costs exactly that: one more call of the host's forward over the
target rows. The sources are not touched by the blend.

Row indexes come from a :class:`~lib_masactrl.indexes.DeviceIndexes`, made on the device once per
pass and layout, so that a controlled call copies nothing from the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple, Union

import torch

from .indexes import DeviceIndexes
from .settings import Mode


@dataclass(frozen=True)
class KeyValues:
    """Keys and values already projected, for hosts that hand over q, k and v instead of calling a
    forward with a context (Forge's attention replace patches): rows and tokens of both are
    selected and joined together, so that every equation below works on either."""

    keys: torch.Tensor
    values: torch.Tensor

    def index_select(self, dim: int, index: torch.Tensor) -> "KeyValues":
        return KeyValues(self.keys.index_select(dim, index), self.values.index_select(dim, index))

    @property
    def device(self) -> torch.device:
        return self.keys.device

    @property
    def shape(self) -> torch.Size:
        return self.keys.shape


Sources = Union[torch.Tensor, KeyValues]
"""What a row's keys and values come from: a context tensor, which the host's forward projects
(ldm/sgm), or projected keys and values (:class:`KeyValues`)."""

Attend = Callable[[torch.Tensor, Sources | None], torch.Tensor]
"""The host's attention over some rows: ``attend(queries, sources)`` with the rows' queries (or the
hidden states they are projected from) and their keys' and values' sources; ``None`` means the
rows' own, plain self-attention."""


def join(parts: Sequence[Sources], dim: int) -> Sources:
    """Sources joined along rows (``dim`` 0) or tokens (``dim`` 1)."""
    if isinstance(parts[0], KeyValues):
        return KeyValues(torch.cat([part.keys for part in parts], dim), torch.cat([part.values for part in parts], dim))
    return torch.cat(list(parts), dim)


def _rows_of(sources: Sources | None, index: torch.Tensor) -> Sources | None:
    return None if sources is None else sources.index_select(0, index)


def controlled_self_attention(
    attend: Attend,
    queries: torch.Tensor,
    own: Sources | None,
    bank: Sources,
    kv_rows: List[int],
    mode: Mode,
    indexes: DeviceIndexes,
) -> torch.Tensor:
    """Run one controlled self-attention call.

    ``bank`` holds the sources keys and values may come from: this call's own (rows
    ``0..len(queries)-1``), followed by those kept from an earlier call of the same step.
    ``kv_rows[i]`` is the bank row whose keys and values row ``i`` reads; ``kv_rows[i] == i``
    means plain self-attention. ``own`` is the call's own sources as the host gave them (``None``:
    the rows' hidden states themselves, ordinary self-attention). ``indexes`` makes the row index
    tensors once per pass."""
    index = indexes.rows(kv_rows, bank.device)
    if mode is Mode.MUTUAL:
        return attend(queries, bank.index_select(0, index))

    targets = target_rows(kv_rows)
    others = [i for i, row in enumerate(kv_rows) if row == i]
    target_index = indexes.rows(targets, queries.device)
    own_sources = queries if own is None else own
    union = join([bank.index_select(0, index.index_select(0, target_index)), own_sources.index_select(0, target_index)], 1)
    pieces = [(targets, attend(queries.index_select(0, target_index), union))]
    if others:
        other_index = indexes.rows(others, queries.device)
        pieces.append((others, attend(queries.index_select(0, other_index), _rows_of(own, other_index))))
    return _in_row_order(pieces, indexes)


def target_rows(kv_rows: Sequence[int]) -> List[int]:
    """The rows that read keys and values from another row: the controlled targets."""
    return [i for i, row in enumerate(kv_rows) if row != i]


def strength_blend(controlled: torch.Tensor, own: torch.Tensor, strength: float) -> torch.Tensor:
    """How much of the source a target takes: ``strength * controlled + (1 - strength) * own``,
    where ``controlled`` is a target's controlled self-attention output and ``own`` its plain
    self-attention output. Not in the paper; strength 1 is the paper's control."""
    return torch.lerp(own, controlled, strength)


def with_strength(
    attend: Attend,
    queries: torch.Tensor,
    own: Sources | None,
    kv_rows: List[int],
    controlled: torch.Tensor,
    strength: float,
    indexes: DeviceIndexes,
) -> torch.Tensor:
    """``controlled`` (the output of a controlled call, every row) with each target row blended
    with its own self-attention by :func:`strength_blend`. The targets' own attention is one more
    call of the host's attention over the target rows; the other rows are returned as they are."""
    targets = target_rows(kv_rows)
    if not targets:
        return controlled
    index = indexes.rows(targets, queries.device)
    plain = attend(queries.index_select(0, index), _rows_of(own, index))
    return controlled.index_copy(0, index, strength_blend(controlled.index_select(0, index), plain, strength))


def _in_row_order(pieces: List[Tuple[List[int], torch.Tensor]], indexes: DeviceIndexes) -> torch.Tensor:
    """One output from the outputs of row groups computed apart, each with the rows it holds.
    A single group holds every row in order and is returned as it is."""
    if len(pieces) == 1:
        return pieces[0][1]
    first = pieces[0][1]
    rows = sum(len(members) for members, _ in pieces)
    out = first.new_empty((rows,) + tuple(first.shape[1:]))
    for members, values in pieces:
        out.index_copy_(0, indexes.rows(members, out.device), values)
    return out


@dataclass(frozen=True, eq=False)
class KeySplit:
    """A source image's tokens at one layer's resolution, split by its mask. Rows whose sources
    are the same image share one split object and are computed together."""

    foreground: torch.Tensor
    """Token positions inside the source's mask (long, sorted)."""
    background: torch.Tensor
    """Token positions outside it."""


RowMask = Tuple[KeySplit, torch.Tensor]
"""For one masked target row: its source's key split, and its own foreground mask over its query
tokens (bool, one entry per token)."""


def masked_self_attention(
    attend: Attend,
    queries: torch.Tensor,
    bank: Sources,
    kv_rows: List[int],
    row_masks: Sequence[RowMask | None],
    indexes: DeviceIndexes,
) -> torch.Tensor:
    """Mask-guided mutual self-attention (the paper's section 3.3).

    A masked target row's queries attend twice to its source's keys and values: once to the
    source's foreground tokens only, once to its background tokens only. Each query token takes
    the first result where the target's mask is set and the second elsewhere. Restricting the
    keys is done by handing the host's attention only those tokens of the source's sources, which
    equals masking the excluded keys out of the softmax while running the host's own attention.
    Rows without a mask (``None``: sources, rows whose masks are missing or whose source mask is
    all foreground or all background, where both halves would be plain mutual attention) run as in
    :func:`controlled_self_attention` in mutual mode. Arguments as there."""
    index = indexes.rows(kv_rows, bank.device)
    plain = [i for i, masks in enumerate(row_masks) if masks is None]
    groups: Dict[int, List[int]] = {}
    for i, masks in enumerate(row_masks):
        if masks is not None:
            groups.setdefault(id(masks[0]), []).append(i)

    pieces: List[Tuple[List[int], torch.Tensor]] = []
    if plain:
        rows = indexes.rows(plain, queries.device)
        pieces.append((plain, attend(queries.index_select(0, rows), bank.index_select(0, index[rows]))))
    for members in groups.values():
        split = row_masks[members[0]][0]
        rows = indexes.rows(members, queries.device)
        group = queries.index_select(0, rows)
        sources = bank.index_select(0, index[rows])
        foreground = attend(group, sources.index_select(1, split.foreground))
        background = attend(group, sources.index_select(1, split.background))
        blend = torch.stack([row_masks[i][1] for i in members]).unsqueeze(-1)
        pieces.append((members, torch.where(blend, foreground, background)))

    return _in_row_order(pieces, indexes)
