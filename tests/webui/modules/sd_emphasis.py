"""Mirrors modules/sd_emphasis.py: the "Emphasis mode" option (opts.emphasis) decides what the text
encoder does with the (word:1.1) weights of a chunk once the transformer has encoded it."""

from __future__ import annotations

import torch


class Emphasis:
    # mirrors sd_emphasis.Emphasis: the sd_hijack_clip process_tokens step sets tokens, multipliers
    # (one per token) and z (the encoder output), calls after_transformers() and reads z back
    name: str = "Base"
    description: str = ""

    tokens: list[list[int]]
    multipliers: torch.Tensor
    z: torch.Tensor

    def after_transformers(self):
        pass


class EmphasisNone(Emphasis):
    # "None": the prompt is not parsed for emphasis at all (tokenize_line), brackets stay literal text
    name = "None"
    description = "disable the mechanism entirely and treat (:.1.1) as literal characters"


class EmphasisIgnore(Emphasis):
    # "Ignore": parsed, but the weights are not applied
    name = "Ignore"
    description = "treat all empasised words as if they have no emphasis"


class EmphasisOriginal(Emphasis):
    # "Original": scale each token's row by its weight, then rescale so the mean is what it was
    name = "Original"
    description = "the original emphasis implementation"

    def after_transformers(self):
        mean_before = self.z.mean()
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)
        self.z = self.z * (mean_before / self.z.mean())


class EmphasisOriginalNoNorm(EmphasisOriginal):
    # "No norm": the weights without restoring the mean
    name = "No norm"
    description = "same as original, but without normalization (seems to work better for SDXL)"

    def after_transformers(self):
        self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)


def get_current_option(emphasis_option_name):
    # mirrors sd_emphasis.get_current_option: unknown names fall back to Original
    return next(iter([x for x in options if x.name == emphasis_option_name]), EmphasisOriginal)


def get_options_descriptions():
    return ", ".join(f"{x.name}: {x.description}" for x in options)


options = [
    EmphasisNone,
    EmphasisIgnore,
    EmphasisOriginal,
    EmphasisOriginalNoNorm,
]
