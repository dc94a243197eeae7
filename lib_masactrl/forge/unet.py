"""MasaCtrl on a WebUI Forge U-Net, installed the way Forge wants: on a clone of the pass's
``UnetPatcher``, through its model options, never on the shared modules.

Forge rebuilds ``p.sd_model.forge_objects`` before every sampling pass (modules/processing.py)
and then runs ``process_before_every_sampling``; :func:`attach` clones the pass's U-Net patcher
(backend/patcher/unet.py, ``UnetPatcher.clone``), adds to the clone

- an attn1 replace patch on each controlled layer (backend/nn/unet.py,
  ``BasicTransformerBlock._forward``): Forge hands it the projected queries, keys and values of
  every row and expects the attention's output before ``to_out``; it runs
  :meth:`~lib_masactrl.controller.MasaCtrlController.attention_qkv` with Forge's own attention
  kernel (``backend.attention.attention_function``, looked up once per pass) or the replace patch
  that was there before;
- with word masks, an attn2 replace patch on every layer that collects cross-attention maps
  from the queries and keys Forge hands it;
- a model function wrapper (backend/sampling/sampling_function.py, ``calc_cond_uncond_batch``)
  that tells the session, before every U-Net call, the call's noise level and its chunks
  (``cond_or_uncond``), which give its step and rows,

and hands the clone back to ``forge_objects``. The next pass's rebuild drops the clone, so nothing
is ever left on the model; :meth:`ForgeAttachment.detach` also makes the patches inert at once, in
case anything still holds the clone. Forge deep-copies model options whenever a patcher is cloned
again (by ControlNet, for instance), so every installed object deep-copies to itself.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ..controller import MasaCtrlController
from ..controlnet_rows import UnitMaps
from ..layers import LayerMap
from ..layout import COND, UNCOND
from ..masks import MaskGuide
from ..patching import PATCH_MARKER
from ..settings import MasaCtrlSettings, Mode, SettingsError

BlockKey = Tuple[str, int, int]
"""Forge's key of one transformer block in its replace patches: stage, block number, and the
block's index inside its spatial transformer."""

_STAGES = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}

# cond_or_uncond's values (sampling_function.py: COND = 0, UNCOND = 1).
_GROUPS = {0: COND, 1: UNCOND}

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
"""Forge's attention function (backend/attention.py, ``attention_function``): q, k, v, heads."""

CallListener = Callable[[float, List[str], int, Tuple[int, int] | None], Sequence[bool] | None]
"""What the wrapper tells before each U-Net call: noise level, chunk groups, rows, latent size.
It answers which of the call's rows keep their ControlNet residuals (``None``: all of them)."""

UnitRows = Callable[[int, int], Sequence[bool] | None]
"""Per ControlNet unit (its place among the enabled units, from 0) and the rows of one chunk of a
U-Net call: which of those rows the unit acts on (``None``: the rows cannot be told apart)."""

RowImages = Callable[[int], Sequence[int] | None]
"""Per U-Net call (its rows): the batch image of each row (``None``: unknown)."""


def block_key(name: str) -> BlockKey:
    """The replace-patch key of the transformer block at module path ``name`` of Forge's U-Net,
    such as ``input_blocks.1.1.transformer_blocks.0`` or ``middle_block.1.transformer_blocks.3``."""
    parts = name.split(".")
    stage = _STAGES.get(parts[0])
    if stage is None or "transformer_blocks" not in parts:
        raise SettingsError(f"the U-Net's transformer block {name} is not where Forge's U-Net keeps them")
    number = 0 if stage == "middle" else int(parts[1])
    return stage, number, int(parts[parts.index("transformer_blocks") + 1])


class _Installed:
    """Something installed in a clone's model options: inert once detached, and shared, not copied,
    when Forge deep-copies the options."""

    def __init__(self) -> None:
        setattr(self, PATCH_MARKER, True)
        self.controller: MasaCtrlController | None = None

    def __deepcopy__(self, memo: Dict[int, Any]) -> "_Installed":
        return self


class _LayerPatch(_Installed):
    """A replace patch of one layer, over whatever replace patch the layer had before (``previous``);
    without one, ``kernel`` is Forge's attention function."""

    def __init__(self, layer: int, controller: MasaCtrlController, previous: Any, kernel: Kernel) -> None:
        super().__init__()
        self.layer = layer
        self.controller = controller
        self.previous = previous
        self.kernel = kernel

    def host_attention(self, extra_options: Dict[str, Any]) -> Callable[..., torch.Tensor]:
        """The attention the block would have run: the earlier replace patch, else Forge's kernel."""
        previous = self.previous
        if previous is not None:
            return lambda q, k, v: previous(q, k, v, extra_options)
        kernel, heads = self.kernel, int(extra_options["n_heads"])
        return lambda q, k, v: kernel(q, k, v, heads)


class _SelfAttention(_LayerPatch):
    """attn1 replace patch: controlled self-attention."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Dict[str, Any]) -> torch.Tensor:
        attend = self.host_attention(extra_options)
        controller = self.controller
        if controller is None:
            return attend(q, k, v)
        return controller.attention_qkv(self.layer, attend, q, k, v)


class _CrossAttentionMaps(_LayerPatch):
    """attn2 replace patch: plain cross-attention, whose maps are collected when the controller asks
    for them."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: Dict[str, Any]) -> torch.Tensor:
        out = self.host_attention(extra_options)(q, k, v)
        controller = self.controller
        if controller is not None:
            request = controller.map_request(self.layer, (q,), {})
            if request is not None:
                controller.add_maps(self.layer, request, int(extra_options["n_heads"]), q, k)
        return out


class _CallWrapper(_Installed):
    """Model function wrapper: reports each U-Net call, takes the ControlNet residuals off the rows
    the listener says, then runs the call as before."""

    def __init__(self, listener: CallListener, previous: Any, controller: MasaCtrlController) -> None:
        super().__init__()
        self.listener: CallListener | None = listener
        self.previous = previous
        self.controller = controller
        self._weights: Dict[Tuple[Tuple[bool, ...], torch.device, torch.dtype], torch.Tensor] = {}
        """Row weights per row choice, device and dtype, made once per attachment."""

    def __call__(self, apply_model: Callable[..., torch.Tensor], call: Dict[str, Any]) -> torch.Tensor:
        listener = self.listener
        if listener is not None:
            x, levels = call["input"], call["timestep"]
            groups = [_GROUPS.get(int(group), str(group)) for group in call.get("cond_or_uncond", ())]
            latent = (int(x.shape[-2]), int(x.shape[-1])) if x.dim() == 4 else None
            keep = listener(float(levels.max()), groups, int(x.shape[0]), latent)
            if keep is not None and call["c"].get("control") is not None:
                call = {**call, "c": {**call["c"], "control": self._narrowed(call["c"]["control"], keep)}}
        if self.previous is not None:
            return self.previous(apply_model, call)
        return apply_model(call["input"], call["timestep"], **call["c"])

    def _narrowed(self, control: Dict[str, List[Any]], keep: Sequence[bool]) -> Dict[str, List[Any]]:
        """The built-in ControlNet's summed residuals (backend/patcher/controlnet.py,
        ``ControlBase.control_merge``: lists of tensors with one row per row of the call, which the
        U-Net adds to its features) with the rows not kept at zero. Adding zero changes nothing, so
        those rows run as without ControlNet. New lists: the U-Net pops them as it goes."""
        keep = tuple(bool(kept) for kept in keep)
        if all(keep):
            return control
        residuals = [item for values in control.values() for item in values if isinstance(item, torch.Tensor)]
        if any(item.dim() != 4 or item.shape[0] != len(keep) for item in residuals):
            if self.controller is not None:
                self.controller.note(
                    "controlnet-rows",
                    f"ControlNet's residuals did not have the {len(keep)} rows of a U-Net call, so they could not be "
                    "taken off the sources; those calls applied ControlNet to every image",
                )
            return control
        return {key: [item * self._weight(keep, item) if isinstance(item, torch.Tensor) else item for item in values]
                for key, values in control.items()}

    def _weight(self, keep: Tuple[bool, ...], like: torch.Tensor) -> torch.Tensor:
        key = (keep, like.device, like.dtype)
        weight = self._weights.get(key)
        if weight is None:
            weight = torch.tensor(keep, dtype=like.dtype, device=like.device)[:, None, None, None]
            self._weights[key] = weight
        return weight


def fitted(hint: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``hint`` (rows, channels, height, width) cropped around its centre to the aspect of ``size``
    and resized to it by nearest pixels, as Forge fits a unit's image to each call's latent."""
    height, width = int(hint.shape[-2]), int(hint.shape[-1])
    if (height, width) == tuple(size):
        return hint
    scale = min(height / size[0], width / size[1])
    crop_h, crop_w = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    cropped = hint[..., top:top + crop_h, left:left + crop_w]
    return torch.nn.functional.interpolate(cropped, size=tuple(size), mode="nearest-exact")


class _UnitRows(_Installed):
    """ControlNet conditioning modifier (backend/patcher/controlnet.py, ``ControlNet.get_control``
    calls every ``controlnet_conditioning_modifiers`` entry of its transformer options with itself
    before it computes its residuals). A unit's place among the enabled units is its depth in the
    chain: each unit links the one applied before it (``previous_controlnet``). Two jobs:

    - with ``unit_rows``, each unit gets a weight per image, 1 on the rows it acts on and 0
      elsewhere, through the chain's own per-frame weights (``advanced_frame_weighting``, which
      ``compute_controlnet_weighting`` applies to that unit's residuals alone); a unit's own
      weights are multiplied in and put back on detach;
    - with ``maps``, the maps' unit gets a hint per row (``cond_hint``, which ``get_control`` keeps
      when its rows and size fit the call): each mapped target's own map, the unit's image for the
      other rows. Cleared on detach, so that Forge makes it again from the unit's image.
    """

    def __init__(self, controller: MasaCtrlController, unit_rows: UnitRows | None, maps: UnitMaps | None,
                 row_images: RowImages) -> None:
        super().__init__()
        self.controller = controller
        self.unit_rows = unit_rows
        self.maps = maps
        self.row_images: RowImages | None = row_images
        self._originals: Dict[int, Tuple[Any, Any]] = {}
        self._hints: Dict[Tuple[Any, ...], torch.Tensor] = {}
        """The maps' unit's hint per row choice, size, device and dtype, made once per attachment."""

    def __call__(self, unit: Any, x: torch.Tensor, timesteps: torch.Tensor, cond: Any, chunks: int) -> Tuple[Any, ...]:
        if self.row_images is None:
            return x, timesteps, cond, chunks
        if id(unit) not in self._originals:
            self._originals[id(unit)] = (unit, getattr(unit, "advanced_frame_weighting", None))
        depth, link = -1, unit
        while link is not None:
            depth, link = depth + 1, getattr(link, "previous_controlnet", None)
        if self.unit_rows is not None:
            self._weigh(unit, depth, x.shape[0] // max(int(chunks), 1))
        if self.maps is not None and self.maps.unit == depth:
            self._give_maps(unit, x)
        return x, timesteps, cond, chunks

    def _weigh(self, unit: Any, depth: int, rows: int) -> None:
        original = self._originals[id(unit)][1]
        acts = self.unit_rows(depth, rows)
        if acts is None or (original is not None and len(original) != rows):
            unit.advanced_frame_weighting = original
            self._note(f"unit-rows-{depth}", f"ControlNet unit {depth + 1}'s rows could not be told apart in some calls, "
                       "so it acted on every image there")
            return
        weights = [float(kept) for kept in acts]
        if original is not None:
            weights = [weight * float(own) for weight, own in zip(weights, original)]
        unit.advanced_frame_weighting = weights

    def _give_maps(self, unit: Any, x: torch.Tensor) -> None:
        own = getattr(unit, "cond_hint_original", None)
        images = self.row_images(x.shape[0])
        if own is None or images is None:
            self._note("unit-maps", f"ControlNet unit {self.maps.unit + 1} could not take the targets' control maps in "
                       "some calls, so it used its own image there")
            return
        size = (int(x.shape[-2]) * 8, int(x.shape[-1]) * 8)
        dtype = getattr(unit, "manual_cast_dtype", None) or getattr(getattr(unit, "control_model", None), "dtype", None)
        key = (tuple(images), size, own.device, dtype or own.dtype)
        if key not in self._hints:
            base = fitted(own, size).to(dtype=dtype or own.dtype)
            self._hints[key] = self.maps.rows(images, base[[image % base.shape[0] for image in images]])
        unit.cond_hint = self._hints[key]

    def _note(self, kind: str, message: str) -> None:
        """Report once per kind (and unit): one unit's trouble must not hide another's."""
        if self.controller is not None:
            self.controller.note(f"controlnet-{kind}", message)

    def restore(self) -> None:
        """Put every unit's own per-frame weights back, and clear the hint given to the maps' unit."""
        for unit, original in self._originals.values():
            unit.advanced_frame_weighting = original
            if self.maps is not None:
                unit.cond_hint = None
        self._originals.clear()
        self._hints.clear()


class ForgeAttachment:
    """MasaCtrl installed on a clone of one pass's U-Net patcher; the same face as
    :class:`~lib_masactrl.patching.Attachment` (``controller``, ``unet``, ``intact``, ``detach``)."""

    def __init__(self, patcher: Any, unet: nn.Module, controller: MasaCtrlController) -> None:
        self.patcher = patcher
        self.unet = unet
        self.controller = controller
        self._installed: List[_Installed] = []

    @property
    def intact(self) -> bool:
        return bool(self._installed)

    def detach(self) -> None:
        for installed in self._installed:
            installed.controller = None
            if isinstance(installed, _CallWrapper):
                installed.listener = None
                installed._weights.clear()
            if isinstance(installed, _UnitRows):
                installed.row_images = None
                installed.restore()
        self._installed.clear()
        self.controller.close()


def _replace_patches(patcher: Any, target: str) -> Dict[Any, Any]:
    return patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get(target, {})


def attach(
    patcher: Any, unet: nn.Module, settings: MasaCtrlSettings, masks: MaskGuide | None, listener: CallListener,
    unit_rows: UnitRows | None = None, maps: UnitMaps | None = None, row_images: RowImages | None = None,
) -> Tuple[Any, ForgeAttachment]:
    """Clone ``patcher`` (the pass's U-Net patcher, whose model is ``unet``) and install MasaCtrl on
    the clone; returns the clone, for the caller to hand to ``forge_objects``, and the attachment.
    ``listener`` hears every U-Net call; ``unit_rows``, if given, says which rows each ControlNet
    unit acts on, and ``maps`` give one unit the targets' control maps, placed by ``row_images``.
    Raises :class:`SettingsError` if the settings do not fit the U-Net; ``patcher`` itself is never
    changed."""
    if masks is not None and settings.mode is not Mode.MUTUAL:
        raise SettingsError(f"masks work with the mutual mode only, not with the {settings.mode.value} mode")
    layer_map = LayerMap.from_unet(unet)
    controllable = sum(layer.self_attention for layer in layer_map)
    schedule = settings.schedule(len(layer_map) if controllable else 0, None, layer_map.family)
    controller = MasaCtrlController(settings, schedule, masks)
    keys = {layer.index: block_key(layer.name) for layer in layer_map}
    # Forge picks its attention function when backend.attention is first imported; this module is
    # also loaded, unused, in A1111, which has no backend, so it is looked up here, once per pass.
    kernel: Kernel = importlib.import_module("backend.attention").attention_function
    clone = patcher.clone()
    attachment = ForgeAttachment(clone, unet, controller)
    self_replaced, cross_replaced = _replace_patches(clone, "attn1"), _replace_patches(clone, "attn2")
    for layer in layer_map:
        key = keys[layer.index]
        if layer.self_attention and schedule.controls_layer(layer.index):
            patch = _SelfAttention(layer.index, controller, self_replaced.get(key, self_replaced.get(key[:2])), kernel)
            clone.set_model_attn1_replace(patch, *key)
            attachment._installed.append(patch)
        if masks is not None and masks.needs_maps:
            previous = cross_replaced.get(key, cross_replaced.get(key[:2]))
            maps = _CrossAttentionMaps(layer.index, controller, previous, kernel)
            clone.set_model_attn2_replace(maps, *key)
            attachment._installed.append(maps)
    wrapper = _CallWrapper(listener, clone.model_options.get("model_function_wrapper"), controller)
    clone.set_model_unet_function_wrapper(wrapper)
    attachment._installed.append(wrapper)
    if (unit_rows is not None or maps is not None) and row_images is not None:
        units = _UnitRows(controller, unit_rows, maps, row_images)
        options = clone.model_options["transformer_options"]
        modifiers = [*options.get("controlnet_conditioning_modifiers", []), units]
        clone.model_options["transformer_options"] = {**options, "controlnet_conditioning_modifiers": modifiers}
        attachment._installed.append(units)
    return clone, attachment
