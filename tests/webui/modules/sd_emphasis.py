"""Stand-in for the WebUI's modules/sd_emphasis.py: the "Emphasis mode" setting (``opts.emphasis``), i.e.
what the text encoder does with the ``(word:1.2)`` weights once a chunk has been through the transformer.

The modes (the real file has a class per mode):
- "Original": each token's row scaled by its weight, then the chunk rescaled to its former mean;
- "No norm": the scaling without the rescale;
- "Ignore": the prompt is parsed (brackets disappear), the weights are not applied;
- "None": the encoder does not parse emphasis at all (brackets stay text); nothing to apply here.
An unknown name means "Original", as in the real ``get_current_option``.
"""

from __future__ import annotations

import functools

import torch

_MODES = {  # name: (applies the weights, restores the mean)
    "Original": (True, True),
    "No norm": (True, False),
    "Ignore": (False, False),
    "None": (False, False),
}


class Emphasis:
    """Mirrors sd_emphasis.Emphasis for one mode. The encoder (sd_hijack_clip's process_tokens) fills
    ``tokens``, ``multipliers`` (one weight per token row) and ``z`` (the transformer output of one chunk
    for the whole batch), calls ``after_transformers()`` and reads ``z`` back."""

    tokens: list[list[int]]
    multipliers: torch.Tensor
    z: torch.Tensor

    def __init__(self, name: str = "Original"):
        self.name = name
        self.applies_weights, self.keeps_mean = _MODES[name]

    def after_transformers(self):
        if not self.applies_weights:
            return
        mean_before = self.z.mean()
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)
        if self.keeps_mean:
            # the mean over the whole batch's chunk, as the real "Original" mode takes it
            self.z = self.z * (mean_before / self.z.mean())


def get_current_option(emphasis_option_name):
    """Mirrors sd_emphasis.get_current_option: what makes the Emphasis object of that mode."""
    return functools.partial(Emphasis, emphasis_option_name if emphasis_option_name in _MODES else "Original")
