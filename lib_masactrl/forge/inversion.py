"""The model calls of real-image editing in WebUI Forge.

The WebUI side (:mod:`lib_masactrl.webui.inversion`) does the inversion the same way in both hosts:
the sampler's schedule, the sources' conditioning, the cache and the starting noise. Only the model
call differs. A1111's sampler has a model wrapper that takes the conditioning; Forge's has none.
Forge evaluates its model through ``calc_cond_uncond_batch``
(backend/sampling/sampling_function.py), which takes Forge's compiled conditions
(backend/sampling/condition.py, ``compile_conditions``). So :func:`denoiser` builds those conditions
for the sources' rows and calls that function with the pass's patcher: its options, and so its
patches (MasaCtrl's model wrapper included), ControlNet and LoRA, apply to the inversion. Guidance
is the engine's own (:func:`~lib_masactrl.inversion.classifier_free`), as in A1111, not the sampler
CFG functions other extensions may have added.

Forge loads the models (and moves LoRA weights onto them) and prepares ControlNet's schedule in
``sampling_prepare``, which its samplers run at the start of sampling. The inversion runs before
that, so :func:`sampling_ready` runs the same preparation around it, then the matching cleanup.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable, Iterator

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _backend(name: str) -> Any:
    """A module of Forge's ``backend``, imported when first used. Like :mod:`.unet`, this module is
    loaded, unused, in A1111 too, which has no ``backend``."""
    return importlib.import_module(f"backend.sampling.{name}")


def _fits(image: Any, x: torch.Tensor) -> bool:
    """Whether ``image`` is conditioning that goes beside the latent in the U-Net's input: one row
    per row of ``x`` at its height and width (an inpainting model's). Forge's denoiser applies the
    same test (sampling_function.py, ``sampling_function``); other models' image conditioning is a
    placeholder of another shape, which Forge leaves out."""
    return (isinstance(image, torch.Tensor) and image.dim() == x.dim() and image.shape[0] == x.shape[0]
            and tuple(image.shape[2:]) == tuple(x.shape[2:]))


def denoiser(patcher: Any, crossattn: Any, image: Any) -> Denoiser:
    """The denoiser of the sources' rows: ``patcher``'s model under ``patcher``'s options, conditioned
    on ``crossattn`` (one row per source: a tensor, or SDXL's dict with ``crossattn`` and ``vector``)
    and on the image conditioning ``image`` where it fits the latent."""
    condition = _backend("condition")
    evaluate = _backend("sampling_function").calc_cond_uncond_batch
    compiled = condition.compile_conditions(crossattn)
    concat = patcher.extra_concat_condition if getattr(patcher, "extra_concat_condition", None) is not None else image
    control = getattr(patcher, "controlnet_linked_list", None)
    if control is not None:
        compiled = [{**entry, "control": control} for entry in compiled]

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        entries = compiled
        if _fits(concat, x):
            entries = [{**entry, "model_conds": {**entry["model_conds"], "c_concat": condition.Condition(concat)}}
                       for entry in compiled]
        denoised, _ = evaluate(patcher.model, entries, None, x, sigma, patcher.model_options)
        return denoised

    return denoise


@contextlib.contextmanager
def sampling_ready(patcher: Any, x: torch.Tensor) -> Iterator[None]:
    """Forge's preparation for sampling ``x`` with ``patcher`` (models loaded, LoRA weights placed,
    ControlNet's schedule set), undone afterwards as Forge undoes it after sampling."""
    sampling = _backend("sampling_function")
    sampling.sampling_prepare(patcher, x)
    try:
        yield
    finally:
        sampling.sampling_cleanup(patcher)
