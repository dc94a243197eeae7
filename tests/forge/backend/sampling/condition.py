"""Stand-in for Forge's ``backend/sampling/condition.py``: the compiled conditions the sampler batches.

A compiled condition is a dict per prompt: ``model_conds`` maps each U-Net keyword (``c_crossattn``,
``c_concat``, ``y``) to a condition object, and the sampler may add ``control`` (the ControlNet chain)
and ``strength`` (an AND weight). Each condition object makes its rows for one U-Net call
(``process_cond``: repeated up to the call's images) and joins with the other chunks of the call
(``concat``). Kept from Forge: row repetition, the text context's token counts padded by repetition
to their least common multiple, and ``compile_conditions`` for a tensor or SDXL's
``{"crossattn", "vector"}`` dict. Left out: areas, the noise-shaped crop, constant conditions and the
concat-compatibility checks (the stand-in's chunks always join). ``compile_weighted_conditions`` makes
one entry per AND position from the WebUI's multi-prompt rows.
"""

from __future__ import annotations

import math

import torch


class Condition:
    """Mirrors ``Condition``: a tensor repeated along the batch to the call's image count."""

    def __init__(self, cond: torch.Tensor):
        self.cond = cond

    def process_cond(self, batch_size, device, **kwargs):
        rows = self.cond.shape[0]
        if rows != batch_size:
            if batch_size % rows:
                raise ValueError(f"{rows} condition rows do not divide a batch of {batch_size}")
            repeats = [batch_size // rows] + [1] * (self.cond.dim() - 1)
            return type(self)(self.cond.repeat(*repeats).to(device))
        return type(self)(self.cond.to(device))

    def concat(self, others):
        return torch.cat([self.cond] + [other.cond for other in others])


class ConditionCrossAttn(Condition):
    """Mirrors ``ConditionCrossAttn``: chunks whose prompts have different token counts are joined by
    repeating each context along its tokens up to their least common multiple."""

    def concat(self, others):
        contexts = [self.cond] + [other.cond for other in others]
        tokens = math.lcm(*(context.shape[1] for context in contexts))
        return torch.cat([context.repeat(1, tokens // context.shape[1], 1) for context in contexts])


def compile_conditions(cond):
    """Mirrors ``compile_conditions``: one compiled entry for a text context tensor, or for SDXL's dict
    (``crossattn`` context, ``vector`` pooled output, which becomes ``y``); ``None`` stays ``None``."""
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return [{"cross_attn": cond, "model_conds": {"c_crossattn": ConditionCrossAttn(cond)}}]
    entry = {"cross_attn": cond["crossattn"], "pooled_output": cond["vector"],
             "model_conds": {"c_crossattn": ConditionCrossAttn(cond["crossattn"]), "y": Condition(cond["vector"])}}
    return [entry]


def compile_weighted_conditions(cond, weights):
    """Mirrors ``compile_weighted_conditions``: one compiled entry per AND position. ``weights`` is the
    WebUI's composition, one list of ``(row, weight)`` per image; the n-th sub-prompt of every image
    becomes one entry made of those rows, its ``strength`` the weight of the last image's n-th
    sub-prompt (as in Forge, images are assumed to share the weights)."""
    entries = []
    for position in zip(*weights):
        rows = [row for row, _ in position]
        picked = {key: value[rows] for key, value in cond.items()} if isinstance(cond, dict) else cond[rows]
        entry = compile_conditions(picked)[0]
        entry["strength"] = position[-1][1]
        entries.append(entry)
    return entries
