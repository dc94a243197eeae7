"""Mirrors modules/torch_utils.py (the parts the samplers use)."""

from __future__ import annotations

import torch


def get_param(model) -> torch.nn.Parameter:
    # mirrors torch_utils.get_param: the first parameter of a module (or of a model's .model)
    if hasattr(model, "model") and hasattr(model.model, "parameters"):
        model = model.model
    for param in model.parameters():
        return param
    raise ValueError(f"No parameters found in model {model!r}")


def float64(t: torch.Tensor):
    # mirrors torch_utils.float64: float64, except on devices without it (mps, xpu)
    return torch.float32 if t.device.type in ("mps", "xpu") else torch.float64
