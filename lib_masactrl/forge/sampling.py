"""One Forge sampling pass with MasaCtrl, and what MasaCtrl does not do in Forge yet.

The WebUI-side work (arguments, pairing, infotext, notes, refusals) is the same as in A1111 and is
done by :mod:`lib_masactrl.webui.generation`, which also counts the ControlNet units; for each pass
it gives the session :func:`attacher_for`, which installs MasaCtrl on a clone of the pass's U-Net
patcher (:mod:`.unet`) and hands the clone to ``p.sd_model.forge_objects``. Each of the pass's
U-Net calls then reports its own noise level and chunks; Forge's ``on_cfg_denoiser``, whose ``x``
holds one row per image, serves only the sources' trajectory and the refiner switch
(:meth:`~lib_masactrl.session.GenerationSession.images_call`).
"""

from __future__ import annotations

from typing import Any, List, Sequence, Tuple

import torch

from ..controlnet_rows import Assignment, UnitMaps, maps_unit_missing
from ..fields import ControlNetScope, ScriptArgs
from ..masks import MaskGuide
from ..pairing import Pairing
from ..session import Attacher, GenerationSession
from ..settings import MasaCtrlSettings, SettingsError
from ..steps import PassSteps
from . import model, unet


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


def unit_assignments(args: ScriptArgs, control_units: int) -> Tuple[Assignment, ...] | None:
    """What each of the built-in ControlNet's ``control_units`` enabled units acts on, when the
    user assigns them one by one ('per unit'); ``None`` otherwise. Raises :class:`SettingsError`
    when the list does not give one entry per enabled unit."""
    if args.controlnet != ControlNetScope.PER_UNIT.value or not control_units:
        return None
    given = args.controlnet_assignments()
    assignments = (given,) * control_units if isinstance(given, Assignment) else tuple(given)
    if len(assignments) != control_units:
        given = ", ".join(assignment.value for assignment in assignments)
        raise SettingsError(
            f"'per unit' lists {len(assignments)} ControlNet assignment{'s' * (len(assignments) != 1)} ({given}) for "
            f"{control_units} enabled ControlNet unit{'s' * (control_units != 1)}: give one entry per enabled unit, "
            "in tab order"
        )
    return assignments


def check_units(p: Any, control_units: int, feature: str) -> None:
    """Raise :class:`SettingsError` when the built-in ControlNet (whose script runs before this
    extension's) has put a chain of units on this pass's patcher that does not hold one link per
    enabled unit: per-unit assignment finds a unit by its place in the chain, and a unit missing
    from it would shift every later unit's place."""
    linked = getattr(model.patcher_of(p.sd_model), "list_controlnets", None)
    links = len(linked()) if linked is not None else 0
    if links and links != control_units:
        raise SettingsError(
            f"{feature} cannot tell the ControlNet units apart in this pass: Forge applies {links} of the "
            f"{control_units} enabled units as ControlNet models (the others are IP-Adapter or reference units, "
            "or are limited to the other pass of hires fix): use ControlNet models in every enabled unit"
        )


def unit_maps(p: Any, pairing: Pairing, args: ScriptArgs, maps: Sequence[Any], control_units: int) -> UnitMaps:
    """The control maps of this batch's targets for the chosen unit (RGB arrays, height x width x
    3, from :func:`lib_masactrl.webui.controlnet.load_maps`), fitted to each call's size as Forge
    fits the unit's own image (:func:`.unet.fitted`)."""
    index = args.control_maps_unit - 1
    if index >= control_units:
        raise maps_unit_missing(index, control_units)
    batch = getattr(p, "iteration", 0) * len(pairing)
    images = {image: pairing.target_number(batch + image) for image in pairing.targets}

    def hint(number: int, size: Tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        rgb = torch.as_tensor(maps[number][..., :3]).permute(2, 0, 1)[None].float() / 255.0
        return unet.fitted(rgb, size).to(device=like.device, dtype=like.dtype)

    return UnitMaps(index, images, hint)


def has_control(p: Any) -> bool:
    """Whether the built-in ControlNet put units on this pass's U-Net patcher."""
    return getattr(model.patcher_of(p.sd_model), "controlnet_linked_list", None) is not None


def _acts_on(assignment: Assignment, target: bool) -> bool:
    return assignment is Assignment.BOTH or (assignment is Assignment.TARGET) == target


def attacher_for(p: Any, session: GenerationSession, narrow: bool,
                 assignments: Sequence[Assignment] | None = None, maps: UnitMaps | None = None) -> Attacher:
    """Installs MasaCtrl for one pass on a clone of the pass's U-Net patcher and puts the clone in
    ``forge_objects``, where the pass's sampler reads it. With ``narrow``, every U-Net call keeps
    ControlNet's residuals on the targets' rows only; with ``assignments``, each unit acts on the
    rows its assignment names; ``maps`` give one unit a control map per target."""
    images = len(session.pairing)

    def row_images(rows: int) -> List[int] | None:
        """The batch image of each of a call's ``rows``: the inversion's rows are sources, in
        order; a sampling call holds whole chunks of the batch."""
        if session.inverting:
            sources = session.source_images
            return [sources[row % len(sources)] for row in range(rows)]
        if rows % images:
            return None
        return [row % images for row in range(rows)]

    def unit_rows(unit: int, rows: int) -> List[bool] | None:
        held = row_images(rows)
        if assignments is None or unit >= len(assignments) or held is None:
            return None
        return [_acts_on(assignments[unit], session.pairing.is_target(image)) for image in held]

    def listener(level: float, groups: List[str], rows: int, latent: Tuple[int, int] | None) -> List[bool] | None:
        session.chunked_call(level, groups, rows, latent)
        held = row_images(rows) if narrow else None
        return None if held is None else [session.pairing.is_target(image) for image in held]

    def install(network: Any, settings: MasaCtrlSettings, masks: MaskGuide | None) -> unet.ForgeAttachment:
        objects = p.sd_model.forge_objects
        clone, attachment = unet.attach(objects.unet, network, settings, masks, listener,
                                        unit_rows if assignments is not None else None, maps, row_images)
        objects.unet = clone
        return attachment

    return install


def pass_attacher(p: Any, session: GenerationSession, control_units: int,
                  map_images: Sequence[Any] | None) -> Tuple[Attacher, bool]:
    """This pass's attacher (:func:`attacher_for`) from the built-in ControlNet's ``control_units``
    enabled units, the user's scope or per-unit assignments and the control maps (``map_images``,
    if any); and whether it must stay attached to a pass MasaCtrl does not control, where the units
    still need their rows. Raises :class:`SettingsError` for assignments or maps that do not fit
    the units."""
    narrow = narrows_control(session.args, control_units)
    assignments = unit_assignments(session.args, control_units)
    maps = unit_maps(p, session.pairing, session.args, map_images, control_units) if map_images else None
    if assignments is not None or maps is not None:
        check_units(p, control_units, "'per unit'" if maps is None else "the control maps")
    rows_needed = narrow or assignments is not None or maps is not None
    return attacher_for(p, session, narrow, assignments, maps), rows_needed
