"""The CFG denoiser callback: before each denoiser call the session learns the noise level the
sampler calls the model at, which gives the call's step (:mod:`lib_masactrl.steps`), and how the
WebUI stacked its rows (sd_samplers_cfg_denoiser.py, ``CFGDenoiser.forward``). The callback may
replace the stacked input (``params.x``), which is how sources follow their inversion. In Forge the
callback sees one row per image and serves only that (:meth:`GenerationSession.images_call`)."""

from __future__ import annotations

from typing import Any, List

from modules import prompt_parser

from . import compat, generation, model


def _cond_repeats(p: Any, rows: int) -> List[int] | None:
    """Cond rows per image: one each, or one per AND sub-prompt (prompt_parser's multicond)."""
    if rows == 2 * p.batch_size:
        return None
    prompts = p.hr_prompts if getattr(p, "is_hr_pass", False) else p.prompts
    indexes, _, _ = prompt_parser.get_multicond_prompt_list(prompts)
    return [len(index) for index in indexes]


def on_cfg_denoiser(params: Any) -> None:
    denoiser = params.denoiser
    p = getattr(denoiser, "p", None)
    session = generation.session_of(p)
    if session is None:
        return
    if compat.is_forge():
        # Forge's ``x`` holds one row per image; its U-Net calls report their own steps and rows.
        params.x = session.images_call(model.loaded_unet(), float(params.sigma.max()), params.x)
        return
    params.x = session.denoiser_call(
        unet=model.loaded_unet(),
        level=float(params.sigma.max()),
        x=params.x,
        cond_repeats=_cond_repeats(p, params.x.shape[0]),
    )
