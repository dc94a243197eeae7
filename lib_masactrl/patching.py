"""Install and remove MasaCtrl on a U-Net, leaving every module exactly as it was found.

Two things are installed, both removable without trace:

- on each controlled layer's attn1, a per-instance ``forward`` that hands the call to the
  controller. The forward it wraps is looked up at call time (the instance's previous ``forward``
  if it had one, else the class's current one), so an attention optimisation the host swaps in on
  the class later is still the one that runs;
- on the U-Net, a forward pre-hook that tells the controller how many rows each call holds and
  its latent size. A pre-hook runs whatever replaced the U-Net's ``forward`` (ControlNet does),
  which a patched ``forward`` would not;
- with word masks only: on every layer's attn2, a per-instance ``forward`` like attn1's. In the
  calls whose cross-attention maps are collected it registers forward hooks on that attn2's
  ``to_q`` and ``to_k`` for the duration of the call, to read the host's own queries and keys.

Every installed object carries :data:`PATCH_MARKER`, so :func:`detach_all` finds leftovers of a
run that never reached its cleanup, even after the extension's scripts were reloaded.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List

import torch
from torch import nn

from .controller import MasaCtrlController
from .layers import LayerMap
from .masks import MaskGuide
from .settings import MasaCtrlSettings, Mode, SettingsError

logger = logging.getLogger("masactrl")

PATCH_MARKER = "__masactrl_patch__"


class _AttentionForward:
    """The per-instance ``forward`` of a controlled attn1 module (or, with
    ``cross`` set, of an attn2 module whose cross-attention maps it collects)."""

    def __init__(self, module: nn.Module, layer: int, controller: MasaCtrlController, cross: bool = False) -> None:
        setattr(self, PATCH_MARKER, True)
        self.module = module
        self.layer = layer
        self.cross = cross
        self.controller: MasaCtrlController | None = controller
        self.previous: Callable[..., Any] | None = module.__dict__.get("forward")

    def wrapped(self) -> Callable[..., Any]:
        if self.previous is not None:
            return self.previous
        return type(self.module).forward.__get__(self.module)

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        controller = self.controller
        if controller is None:
            return self.wrapped()(*args, **kwargs)
        if self.cross:
            return self._collect_maps(controller, args, kwargs)
        return controller.attention(self.layer, self.wrapped(), args, kwargs)

    def _collect_maps(self, controller: MasaCtrlController, args: tuple, kwargs: dict) -> torch.Tensor:
        request = controller.map_request(self.layer, args, kwargs)
        if request is None:
            return self.wrapped()(*args, **kwargs)
        with CapturedProjections(self.module) as captured:
            out = self.wrapped()(*args, **kwargs)
        q, k = captured.q, captured.k
        if q is None or k is None:
            # The host's attention did not call to_q/to_k as modules: project here, without the
            # hypernetworks that only the host's forward applies to the context.
            x = args[0] if args else kwargs["x"]
            context = args[1] if len(args) > 1 else kwargs.get("context")
            with torch.no_grad():
                q = self.module.to_q(x) if q is None else q
                k = self.module.to_k(x if context is None else context) if k is None else k
        controller.add_maps(self.layer, request, self.module.heads, q, k)
        return out

    def remove(self) -> bool:
        """Restore the module's previous ``forward``. If someone else wrapped this patch since,
        it cannot be taken out from under them: it is made transparent instead and the next
        :func:`detach_all` removes it once it is on top again."""
        self.controller = None
        if self.module.__dict__.get("forward") is not self:
            return False
        if self.previous is None:
            del self.module.forward
        else:
            self.module.forward = self.previous
        return True


class CapturedProjections:
    """While open, keeps the last outputs of an attention module's ``to_q`` and ``to_k``: the
    queries and keys the host's attention actually used, after any hypernetwork or LoRA."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None
        self._handles: List[Any] = []

    def _keeper(self, name: str) -> Callable[..., None]:
        def keep(module: nn.Module, args: tuple, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                setattr(self, name, output)

        setattr(keep, PATCH_MARKER, True)
        return keep

    def __enter__(self) -> "CapturedProjections":
        for name in ("q", "k"):
            projection = getattr(self.module, f"to_{name}", None)
            if isinstance(projection, nn.Module):
                self._handles.append(projection.register_forward_hook(self._keeper(name)))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class _RowCounter:
    """U-Net forward pre-hook: reports each call's row count and latent size to the controller."""

    def __init__(self, controller: MasaCtrlController) -> None:
        setattr(self, PATCH_MARKER, True)
        self.controller: MasaCtrlController | None = controller

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        controller = self.controller
        if controller is None:
            return None
        x = args[0] if args else kwargs.get("x")
        if isinstance(x, torch.Tensor):
            controller.begin_unet_call(x.shape[0], tuple(x.shape[-2:]) if x.dim() == 4 else None)
        return None


class _StopOnCall:
    """U-Net forward pre-hook that raises a prepared error. Hosts that swallow exceptions raised
    in their plugin hooks still stop when the model itself raises, so this is how a refusal
    reaches the user instead of a silently uncontrolled image."""

    def __init__(self, error: Exception) -> None:
        setattr(self, PATCH_MARKER, True)
        self.error = error
        self.controller = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise self.error


def stop_on_next_call(unet: nn.Module, error: Exception) -> None:
    """Make the next call of ``unet`` raise ``error``; :func:`detach_all` removes the guard."""
    unet.register_forward_pre_hook(_StopOnCall(error), with_kwargs=True, prepend=True)


def _is_patch(obj: Any) -> bool:
    return getattr(obj, PATCH_MARKER, False) is True


class Attachment:
    """MasaCtrl installed on one U-Net. Use as a context manager or call :meth:`detach`."""

    def __init__(self, unet: nn.Module, layer_map: LayerMap, controller: MasaCtrlController) -> None:
        self.unet = unet
        self.layer_map = layer_map
        self.controller = controller
        self._patches: List[_AttentionForward] = []
        self._hook = None

    def _install(self) -> None:
        counter = _RowCounter(self.controller)
        self._hook = self.unet.register_forward_pre_hook(counter, with_kwargs=True)
        for layer in self.layer_map:
            if layer.self_attention and self.controller.schedule.controls_layer(layer.index):
                patch = _AttentionForward(layer.attn1, layer.index, self.controller)
                layer.attn1.forward = patch
                self._patches.append(patch)
        masks = self.controller.masks
        if masks is not None and masks.guide.needs_maps:
            for layer in self.layer_map:
                patch = _AttentionForward(layer.attn2, layer.index, self.controller, cross=True)
                layer.attn2.forward = patch
                self._patches.append(patch)

    @property
    def attached(self) -> bool:
        return self._hook is not None

    @property
    def intact(self) -> bool:
        """Still installed on the U-Net: a host may have removed every patch meanwhile (the
        WebUI's model-loaded callback after reloading weights into the same modules)."""
        return self._hook is not None and self._hook.id in self.unet._forward_pre_hooks

    def detach(self) -> None:
        """Remove everything :func:`attach` installed. Safe to call more than once."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        buried = [patch for patch in self._patches if not patch.remove()]
        if buried:
            logger.debug("MasaCtrl: %d attn1 patches were wrapped by another extension; left transparent", len(buried))
        self._patches.clear()
        self.controller.close()

    def __enter__(self) -> "Attachment":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.detach()


def detach_all(unet: nn.Module) -> int:
    """Remove every MasaCtrl patch found on ``unet`` (including ones from a run that crashed or
    from before a script reload). Returns how many were removed."""
    removed = 0
    for module in unet.modules():
        forward = module.__dict__.get("forward")
        while _is_patch(forward):
            forward.remove()
            removed += 1
            forward = module.__dict__.get("forward")
        for key, hook in list(module._forward_pre_hooks.items()):
            if _is_patch(hook):
                hook.controller = None
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)
                removed += 1
        for key, hook in list(module._forward_hooks.items()):
            if _is_patch(hook):
                del module._forward_hooks[key]
                module._forward_hooks_with_kwargs.pop(key, None)
                getattr(module, "_forward_hooks_always_called", {}).pop(key, None)
                removed += 1
    return removed


def attach(
    unet: nn.Module,
    settings: MasaCtrlSettings,
    total_steps: int | None = None,
    layer_map: LayerMap | None = None,
    masks: MaskGuide | None = None,
) -> Attachment:
    """Validate ``settings`` for this U-Net and install MasaCtrl on it. ``masks`` (see
    :func:`~lib_masactrl.masks.mask_guide`) turns on mask-guided control for the images it covers.

    Raises :class:`~lib_masactrl.settings.SettingsError` before touching the U-Net if the
    settings do not fit it. Patches left on the U-Net by an earlier attachment are removed first,
    so attaching twice never stacks."""
    layer_map = layer_map if layer_map is not None else LayerMap.from_unet(unet)
    controllable = sum(layer.self_attention for layer in layer_map)
    model_name = layer_map.family
    schedule = settings.schedule(len(layer_map) if controllable else 0, total_steps, model_name)
    if masks is not None and settings.mode is not Mode.MUTUAL:
        raise SettingsError(f"masks work with the mutual mode only, not with the {settings.mode.value} mode")
    stale = detach_all(unet)
    if stale:
        logger.info("MasaCtrl: removed %d patches left on the U-Net by an earlier run", stale)
    attachment = Attachment(unet, layer_map, MasaCtrlController(settings, schedule, masks))
    try:
        attachment._install()
    except BaseException:
        attachment.detach()
        raise
    return attachment
