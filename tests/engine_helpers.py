"""Helpers for the engine tests: an independent reference of the method, call recording, and a
snapshot of everything on a U-Net that patching could change."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn


def reference_attention(
    attn: nn.Module,
    hidden: torch.Tensor,
    context: torch.Tensor | None,
    sources: Sequence[int | None],
    union: bool,
    strength: float = 1.0,
) -> torch.Tensor:
    """MasaCtrl self-attention written out with einsum, independently of the engine.

    Row ``i`` uses its own queries; its keys and values are projected from the context of row
    ``sources[i]`` (mutual), or from that context followed by its own (union); ``None`` means
    ordinary self-attention. With ``strength`` below 1 a target row's result is
    ``strength * controlled + (1 - strength) * own``, mixed before the output projection (which is
    affine, so mixing before or after it is the same)."""
    context = hidden if context is None else context
    heads = attn.heads
    q = attn.to_q(hidden)
    k = attn.to_k(context)
    v = attn.to_v(context)

    def attend(i: int, k_i: torch.Tensor, v_i: torch.Tensor) -> torch.Tensor:
        q_h = q[i].unflatten(-1, (heads, -1))
        k_h = k_i.unflatten(-1, (heads, -1))
        v_h = v_i.unflatten(-1, (heads, -1))
        scale = q_h.shape[-1] ** -0.5
        weights = torch.einsum("nhd,mhd->hnm", q_h, k_h).mul(scale).softmax(dim=-1)
        return torch.einsum("hnm,mhd->nhd", weights, v_h).flatten(1)

    outputs = []
    for i, source in enumerate(sources):
        own = attend(i, k[i], v[i])
        if source is None:
            outputs.append(own)
            continue
        if union:
            controlled = attend(i, torch.cat([k[source], k[i]]), torch.cat([v[source], v[i]]))
        else:
            controlled = attend(i, k[source], v[source])
        outputs.append(strength * controlled + (1 - strength) * own)
    return attn.to_out(torch.stack(outputs))


class ReferenceUNet:
    """Runs a U-Net with the reference attention on chosen attn1 modules, by per-instance
    ``forward`` attributes that are removed again on exit."""

    def __init__(
        self, attn1_modules: Sequence[nn.Module], sources: Sequence[int | None], union: bool, strength: float = 1.0
    ) -> None:
        self.modules = list(attn1_modules)
        self.sources = list(sources)
        self.union = union
        self.strength = strength

    def __enter__(self) -> "ReferenceUNet":
        for module in self.modules:
            def forward(x, context=None, mask=None, _module=module, **kwargs):
                return reference_attention(_module, x, context, self.sources, self.union, self.strength)
            module.forward = forward
        return self

    def __exit__(self, *exc_info) -> None:
        for module in self.modules:
            del module.forward


def module_state(root: nn.Module) -> Dict[str, tuple]:
    """Everything patching could change on each module: its class, the identity of every
    instance attribute that is not a submodule/parameter/buffer container, and its hooks."""
    state = {}
    for name, module in root.named_modules():
        attributes = tuple(
            sorted((key, id(value)) for key, value in vars(module).items() if not key.startswith("_") or key in ("_forward",))
        )
        hooks = tuple(
            (key, tuple(getattr(module, key).keys()), tuple(id(v) for v in getattr(module, key).values()))
            for key in ("_forward_pre_hooks", "_forward_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs")
        )
        state[name] = (type(module), attributes, hooks, "forward" in vars(module))
    return state


class CallRecorder:
    """Records the row count of every U-Net call (a forward pre-hook, removed on exit)."""

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet
        self.rows: List[int] = []

    def __enter__(self) -> "CallRecorder":
        self.handle = self.unet.register_forward_pre_hook(lambda module, args: self.rows.append(args[0].shape[0]))
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.remove()
