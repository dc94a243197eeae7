"""One Forge sampling pass with MasaCtrl, and what MasaCtrl does not do in Forge yet.

The WebUI-side work (arguments, pairing, infotext, notes, refusals) is the same as in A1111 and is
done by :mod:`lib_masactrl.webui.generation`, which also counts the ControlNet units; for each pass
it gives the session :func:`attacher_for`, which installs MasaCtrl on a clone of the pass's U-Net
patcher (:mod:`.unet`) and hands the clone to ``p.sd_model.forge_objects``. Each of the pass's
U-Net calls then reports its own noise level and chunks, so Forge's ``on_cfg_denoiser`` (whose
``x`` holds one row per image, not the U-Net's rows) is not used.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from ..fields import ControlNetScope, ScriptArgs
from ..masks import MaskGuide
from ..session import Attacher, GenerationSession
from ..settings import MasaCtrlSettings
from ..steps import PassSteps
from . import model, unet

NOT_YET = "MasaCtrl in WebUI Forge does not {what} yet; {fix}"


def unsupported_request(p: Any, args: ScriptArgs, control_units: int) -> str | None:
    """Why this Forge generation, with ``control_units`` ControlNet units on, asks for something
    MasaCtrl does not do in Forge yet, or ``None``."""
    problems: List[str] = []
    if args.uses_control_maps:
        problems.append(NOT_YET.format(what="give targets their own control maps", fix="set the maps in ControlNet's units"))
    if args.controlnet == ControlNetScope.PER_UNIT.value and control_units:
        problems.append(NOT_YET.format(what="give ControlNet units to sources or targets one by one",
                                       fix="set 'ControlNet units apply to' to targets or both"))
    if getattr(p, "refiner_checkpoint", None) not in (None, "", "None", "none"):
        problems.append(NOT_YET.format(what="follow a refiner", fix="turn the refiner off"))
    return "; ".join(problems) if problems else None


def levels_of(p: Any, steps: PassSteps) -> PassSteps:
    """The pass's levels as Forge's U-Net calls see them: a timestep sampler (DDIM, PLMS, UniPC)
    calls the model at the sigma of each timestep (modules/sd_samplers_cfg_denoiser.py,
    ``classic_ddim_eps_estimation``), so its timesteps become the predictor's sigmas."""
    if hasattr(p.sampler, "get_sigmas"):
        return steps
    sigmas = model.patcher_of(p.sd_model).model.predictor.sigmas
    last = int(sigmas.shape[0]) - 1
    return PassSteps.from_levels([float(sigmas[min(max(round(level), 0), last)]) for level in steps.levels])


def narrows_control(args: ScriptArgs, control_units: int) -> bool:
    """Whether the built-in ControlNet's ``control_units`` enabled units must be taken off the
    sources ("targets")."""
    return args.controlnet == ControlNetScope.TARGETS.value and control_units > 0


def has_control(p: Any) -> bool:
    """Whether the built-in ControlNet put units on this pass's U-Net patcher."""
    return getattr(model.patcher_of(p.sd_model), "controlnet_linked_list", None) is not None


def attacher_for(p: Any, session: GenerationSession, narrow: bool) -> Attacher:
    """Installs MasaCtrl for one pass on a clone of the pass's U-Net patcher and puts the clone in
    ``forge_objects``, where the pass's sampler reads it. With ``narrow``, every U-Net call keeps
    ControlNet's residuals on the targets' rows only."""
    images = len(session.pairing)

    def listener(level: float, groups: List[str], rows: int, latent: Tuple[int, int] | None) -> List[bool] | None:
        session.chunked_call(level, groups, rows, latent)
        if narrow and session.inverting:
            return [False] * rows  # the inversion's rows are all sources
        if not narrow or rows % images:
            return None
        return [session.pairing.is_target(row % images) for row in range(rows)]

    def install(network: Any, settings: MasaCtrlSettings, masks: MaskGuide | None) -> unet.ForgeAttachment:
        objects = p.sd_model.forge_objects
        clone, attachment = unet.attach(objects.unet, network, settings, masks, listener)
        objects.unet = clone
        return attachment

    return install
