"""The engine driven directly inside the stand-in WebUI, as any host other than MasaCtrl's adapter
would drive it: the prompts and seeds given as lists, the CFG row layout built here from the
pairing, and each denoiser call's step taken from the sampler's own progress (the steps it has
reported through ``callback_state``). The script's images are compared with these."""

from __future__ import annotations

from typing import Sequence

import torch


def engine_reference(
    reads_from: Sequence[int | None],
    prompts: Sequence[str],
    seeds: Sequence[int],
    settings,
    sampler: str = "Euler",
    steps: int = 4,
    **kwargs,
) -> torch.Tensor:
    """The latents of a txt2img batch of ``prompts`` with MasaCtrl's engine attached: image ``i``
    reads from image ``reads_from[i]``."""
    from lib_masactrl import StepLayout, attach
    from modules import processing, script_callbacks, sd_samplers_common, shared

    layout = StepLayout.cfg(tuple(reads_from))
    attachment = attach(shared.sd_model.model.diffusion_model, settings)
    reported = []
    original = sd_samplers_common.Sampler.callback_state

    def callback_state(sampler_object, d):
        reported.append(d["i"])
        return original(sampler_object, d)

    def drive(params):
        attachment.controller.begin_step(min(len(reported), steps - 1), layout)

    sd_samplers_common.Sampler.callback_state = callback_state
    script_callbacks.on_cfg_denoiser(drive, name="engine_reference")
    p = processing.StableDiffusionProcessingTxt2Img(
        sd_model=shared.sd_model, prompt=list(prompts), seed=list(seeds), subseed=[0] * len(prompts),
        batch_size=len(prompts), steps=steps, sampler_name=sampler, cfg_scale=7.0, width=64, height=64,
        do_not_save_samples=True, do_not_save_grid=True, **kwargs,
    )
    try:
        return processing.process_images(p).standin_latents
    finally:
        sd_samplers_common.Sampler.callback_state = original
        script_callbacks.remove_callbacks_for_function(drive)
        attachment.detach()
        p.close()
