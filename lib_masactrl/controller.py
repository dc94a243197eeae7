"""Per-generation state: which step and rows are running, and what each attn1 call must do.

The host tells the controller the step and the step's row layout once per denoiser call
(:meth:`MasaCtrlController.begin_step`); the controller never counts attention calls to guess
them. Each U-Net call of that step then takes the next consecutive rows of the layout, which is
how the WebUI slices its CFG stack (all rows, or cond chunks followed by the uncond rows).

With a :class:`~lib_masactrl.masks.MaskGuide`, controlled targets whose image and source image both
have masks use mask-guided mutual self-attention (:func:`~lib_masactrl.attention.masked_self_attention`),
and the attn2 calls at latent/4 collect the cross-attention maps that word masks are made from
(:mod:`lib_masactrl.masks` explains which calls and why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch

from .attention import (
    Attend,
    KeyValues,
    RowMask,
    Sources,
    controlled_self_attention,
    join,
    masked_self_attention,
    with_strength,
)
from .indexes import DeviceIndexes
from .layout import COND, CallPlan, StepLayout
from .masks import Grid, MaskGuide, MaskState, UsedMasks, subject_attention, token_grid
from .settings import MasaCtrlSettings, Schedule

# Keyword arguments sgm's attn1 receives; any other value than these defaults changes what the
# context means, so such calls run unchanged.
_NEUTRAL_KWARGS = {"additional_tokens": None, "n_times_crossframe_attn_in_self": 0}


@dataclass
class ControlStats:
    """Counts the host reads after a run to tell a working control from one that never acted
    (for example a U-Net replacement that bypasses the ldm attention modules)."""

    unet_calls: int = 0
    controlled_calls: int = 0
    fallback_rows: int = 0
    masked_calls: int = 0
    """Controlled attn1 calls in which at least one target row used masks."""
    map_captures: int = 0
    """attn2 calls whose cross-attention maps were collected for word masks."""


@dataclass(frozen=True)
class MapRequest:
    """An attn2 call whose maps are to be collected: its local cond rows, their images and
    subject token positions, and the grid of its query tokens."""

    rows: Tuple[Tuple[int, int, Tuple[int, ...]], ...]
    grid: Grid


class MasaCtrlController:
    def __init__(self, settings: MasaCtrlSettings, schedule: Schedule, masks: MaskGuide | None = None) -> None:
        self.settings = settings
        self.schedule = schedule
        self.indexes = DeviceIndexes()
        """Row and token index tensors of this attachment's calls, made once per device."""
        self.masks: MaskState | None = MaskState(masks) if masks is not None else None
        self._latent_size: Grid | None = None
        self.stats = ControlStats()
        self._notes: Dict[str, str] = {}
        self._layer_notes: Dict[str, Tuple[str, List[int]]] = {}
        self._step: int | None = None
        self._layout: StepLayout | None = None
        self._cursor = 0
        self._plan: CallPlan | None = None
        self._kept: Dict[Tuple[int, int], Sources] = {}

    # --- host side -------------------------------------------------------------------------

    def begin_step(self, step: int | None, layout: StepLayout | None) -> None:
        """Start a denoiser call: ``step`` is the sampler step, ``layout`` the rows it stacks.
        ``None`` for either means the coming U-Net calls run without control. Contexts kept from
        the previous denoiser call are dropped here."""
        self._step = step
        self._layout = layout
        self._cursor = 0
        self._plan = None
        self._kept.clear()
        if self.masks is not None:
            self.masks.begin_call(collect=self._maps_needed(step, layout))

    def _maps_needed(self, step: int | None, layout: StepLayout | None) -> bool:
        """Whether this call's maps can serve a controlled call: the next call is of this step or
        the next one (see :mod:`lib_masactrl.masks`, "Timing")."""
        if step is None or layout is None or not layout.has_targets:
            return False
        return self.schedule.controls_step(step) or self.schedule.controls_step(step + 1)

    @property
    def used_masks(self) -> UsedMasks | None:
        """The masks of the last step that used masks, per image at latent/4 resolution, for the
        host to show; ``None`` if no step did. Kept after :meth:`close`."""
        return self.masks.used if self.masks is not None else None

    def close(self) -> None:
        self.begin_step(None, None)
        self.indexes.clear()

    @property
    def step_is_controlled(self) -> bool:
        return (
            self._step is not None
            and self._layout is not None
            and self._layout.has_targets
            and self.schedule.controls_step(self._step)
        )

    @property
    def current_plan(self) -> CallPlan | None:
        """The rows of the U-Net call now running as the cursor placed them in the step's layout;
        ``None`` outside a call that fits it. Other row-wise patches (ControlNet units) read it."""
        return self._plan

    @property
    def current_images(self) -> List[int] | None:
        """Per row of the U-Net call now running, the batch image it belongs to; ``None`` outside
        a call that fits the step's layout."""
        if self._plan is None or self._layout is None:
            return None
        return [self._layout.rows[self._plan.start + row].image for row in range(self._plan.size)]

    def note(self, key: str, message: str) -> None:
        """Report a problem once per attachment, to the host via :attr:`notes`, which shows it to
        the user and the console."""
        self._notes.setdefault(key, message)

    def layer_note(self, kind: str, layer: int, template: str) -> None:
        """Report a problem that repeats layer by layer once, naming every layer it hit. The first
        ``template`` of a kind is kept; its ``{layers}`` becomes "layer 12" or "layers 10-15", its
        ``{that}`` "that layer" or "those layers"."""
        _, layers = self._layer_notes.setdefault(kind, (template, []))
        if layer not in layers:
            layers.append(layer)

    @property
    def notes(self) -> List[str]:
        """Every problem reported so far, in the order first reported by kind."""
        layered = [
            template.format(layers=_layer_phrase(layers), that="that layer" if len(layers) == 1 else "those layers")
            for template, layers in self._layer_notes.values()
        ]
        return [*self._notes.values(), *layered]

    # --- engine side -----------------------------------------------------------------------

    def begin_unet_call(self, rows: int, latent_size: Grid | None = None) -> None:
        """Called before every U-Net forward with the number of rows it holds and the height and
        width of its latent input, which give each layer's token grid for masks."""
        self.stats.unet_calls += 1
        if latent_size is not None:
            self._latent_size = (int(latent_size[0]), int(latent_size[1]))
        layout = self._layout
        self._plan = None
        if layout is None:
            return
        start, stop = self._cursor, self._cursor + rows
        self._cursor = stop
        if stop <= len(layout):
            self._plan = layout.plan(start, stop)
        elif self.step_is_controlled:
            self.note(
                "unexpected-call",
                f"a U-Net call with {rows} rows did not fit the {len(layout)} rows of step {self._step}; "
                "that call ran without MasaCtrl",
            )

    def _wants(self, layer: int) -> CallPlan | None:
        """The plan of the U-Net call now running, if this layer's self-attention is to be
        controlled in it (or keeps rows that a later call of the step reads)."""
        plan = self._plan
        if (
            plan is None
            or not (plan.has_targets or plan.keep)
            or not self.step_is_controlled
            or not self.schedule.controls_layer(layer)
        ):
            return None
        return plan

    def attention(self, layer: int, call: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        """Handle one attn1 call of a patched layer of a host whose attention projects its own keys
        and values from a context (ldm/sgm): controlled when the step, the layer and the rows call
        for it, otherwise ``call(*args, **kwargs)`` unchanged."""
        plan = self._wants(layer)
        parsed = self._parse(layer, plan, args, kwargs) if plan is not None else None
        if parsed is None:
            return call(*args, **kwargs)
        x, context, extra = parsed

        def attend(queries: torch.Tensor, sources: Sources | None) -> torch.Tensor:
            return call(queries, context=sources, **extra)

        return self._controlled(layer, plan, x, context, attend, lambda: call(*args, **kwargs))

    def attention_qkv(
        self, layer: int, attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    ) -> torch.Tensor:
        """Handle one self-attention call of a host that projects queries, keys and values itself
        and hands them over (rows, tokens, channels): ``attend(q, k, v)`` is its attention. The same
        equations as :meth:`attention`, on :class:`~lib_masactrl.attention.KeyValues`."""
        plan = self._wants(layer)
        if plan is None or not self._fits(layer, plan, q, k, v):
            return attend(q, k, v)

        def attend_sources(queries: torch.Tensor, sources: Sources | None) -> torch.Tensor:
            return attend(queries, sources.keys, sources.values)

        return self._controlled(layer, plan, q, KeyValues(k, v), attend_sources, lambda: attend(q, k, v))

    def _controlled(
        self, layer: int, plan: CallPlan, queries: torch.Tensor, own: Sources | None, attend: Attend,
        plain: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """The controlled call: ``own`` are the call's own keys' and values' sources (``None``: the
        queries' hidden states), ``plain()`` runs the call as without control."""
        strength = self.settings.strength
        if strength == 0:
            # Nothing of the sources is taken: the call runs exactly as without control.
            self.stats.controlled_calls += plan.has_targets
            return plain()

        sources = queries if own is None else own
        for row in plan.keep:
            self._kept[(layer, plan.start + row)] = _row_copy(sources, row)
        if not plan.has_targets:
            return plain()

        kv_rows, kept_rows = self._kv_rows(layer, plan)
        bank = join([sources] + kept_rows, 0) if kept_rows else sources
        self.stats.controlled_calls += 1
        row_masks = self._row_masks(layer, plan, queries, sources, kv_rows) if self.masks is not None else None
        if row_masks is not None:
            self.stats.masked_calls += 1
            out = masked_self_attention(attend, queries, bank, kv_rows, row_masks, self.indexes)
        else:
            out = controlled_self_attention(attend, queries, own, bank, kv_rows, self.settings.mode, self.indexes)
        if strength < 1:
            out = with_strength(attend, queries, own, kv_rows, out, strength, self.indexes)
        return out

    def _fits(self, layer: int, plan: CallPlan, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
        """Whether handed-over queries, keys and values are the call's rows of self-attention."""
        shapes = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in (q, k, v)]
        if any(shape is None or len(shape) != 3 or shape[0] != plan.size for shape in shapes) or k.shape[1] != v.shape[1]:
            self.layer_note(
                "qkv", layer,
                f"{{layers}} self-attention received queries, keys and values of shapes {shapes} where {plan.size} rows "
                "of (tokens, channels) were expected; {that} ran without MasaCtrl",
            )
            return False
        return True

    def _row_masks(
        self, layer: int, plan: CallPlan, x: torch.Tensor, sources: Sources, kv_rows: List[int]
    ) -> List[RowMask | None] | None:
        """Per local row, the source's key split and the target's mask; ``None`` when no row of
        this call is masked, so that it runs exactly as plain mutual self-attention."""
        masks, layout = self.masks, self._layout
        tokens = x.shape[1]
        grid = token_grid(self._latent_size, tokens) if self._latent_size is not None else None
        if grid is None or sources.shape[1] != tokens:
            self.layer_note(
                "mask-grid", layer,
                f"{{layers}} self-attention had {tokens} query tokens and "
                f"{sources.shape[1]} key tokens, which do not form a token grid "
                f"of the {self._latent_size} latent (token merging or extra tokens); {{that}} ran without masks",
            )
            return None
        rows: List[RowMask | None] = []
        pairs = set()
        for i, source in enumerate(plan.sources):
            rows.append(None)
            if source is None or kv_rows[i] == i:
                continue
            target_image, source_image = layout.rows[plan.start + i].image, layout.rows[source].image
            split = masks.split(source_image, grid, x.device)
            target_mask = masks.mask(target_image, grid, x.device)
            if target_mask is None or masks.mask(source_image, grid, x.device) is None:
                if masks.maps_expected:
                    self.note(
                        f"mask-missing-{target_image}",
                        f"image {target_image} or its source image {source_image} had no mask at step {self._step} "
                        "(no cross-attention map at latent/4 resolution was collected); it used unmasked control",
                    )
                continue
            pairs.update((target_image, source_image))
            if split is not None:
                rows[i] = (split, target_mask)
        if pairs:
            masks.record(self._step, sorted(pairs), masks.map_grid(self._latent_size), x.device)
        return rows if any(row is not None for row in rows) else None

    # --- cross-attention maps ----------------------------------------------------------------

    def map_request(self, layer: int, args: tuple, kwargs: dict) -> MapRequest | None:
        """For an attn2 call: whether to collect its maps, and for which rows. Only calls of
        collecting denoiser calls, at latent/4 resolution, in a U-Net call that fits the layout."""
        masks, plan, layout = self.masks, self._plan, self._layout
        if masks is None or not masks.collecting or plan is None or layout is None or self._latent_size is None:
            return None
        x = args[0] if args else kwargs.get("x")
        grid = masks.map_grid(self._latent_size)
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[0] != plan.size or x.shape[1] != grid[0] * grid[1]:
            return None
        rows = []
        for i in range(plan.size):
            row = layout.rows[plan.start + i]
            positions = masks.guide.positions(row.image, row.sub) if row.group == COND else ()
            if positions:
                rows.append((i, row.image, positions))
        return MapRequest(rows=tuple(rows), grid=grid) if rows else None

    def add_maps(self, layer: int, request: MapRequest, heads: int, q: torch.Tensor, k: torch.Tensor) -> None:
        """Collect the maps of an attn2 call from its queries and keys (all rows of the call)."""
        rows = len(self._plan.sources) if self._plan is not None else -1
        tokens = request.grid[0] * request.grid[1]
        last = max(max(positions) for _, _, positions in request.rows)
        if q.dim() != 3 or k.dim() != 3 or q.shape[:2] != (rows, tokens) or k.shape[0] != rows or k.shape[1] <= last:
            self.layer_note(
                "map-shape", layer,
                f"{{layers}} cross-attention had queries {tuple(q.shape)} and keys {tuple(k.shape)}, which do not fit "
                f"{rows} rows of {tokens} tokens and subject tokens up to {last}; the maps of {{that}} were not used",
            )
            return
        with torch.no_grad():
            for i, image, positions in request.rows:
                subject = self.indexes.rows(positions, q.device)
                self.masks.add_map(image, subject_attention(q[i], k[i], heads, subject), request.grid)
        self.stats.map_captures += 1

    def _parse(
        self, layer: int, plan: CallPlan, args: tuple, kwargs: dict
    ) -> Tuple[torch.Tensor, torch.Tensor | None, Dict[str, Any]] | None:
        names = ("x", "context", "mask")
        bound = dict(zip(names, args))
        bound.update({name: kwargs[name] for name in names if name in kwargs})
        extra = {key: value for key, value in kwargs.items() if key not in names}
        x, context, mask = bound.get("x"), bound.get("context"), bound.get("mask")
        unusual = ["mask"] * (mask is not None) + ["positional arguments"] * (len(args) > len(names))
        unusual += sorted(key for key, value in extra.items() if key not in _NEUTRAL_KWARGS or _is_set(value))
        if unusual:
            self.layer_note(
                "arguments", layer,
                f"{{layers}} self-attention was called with extra inputs ({', '.join(unusual)}); "
                "{that} ran without MasaCtrl",
            )
            return None
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            self.layer_note(
                "hidden-state", layer,
                f"{{layers}} self-attention received hidden states of shape {shape} where (rows, tokens, "
                "channels) was expected (another extension changes the attention's input); {that} ran without MasaCtrl",
            )
            return None
        if x.shape[0] != plan.size or (context is not None and context.shape[0] != plan.size):
            self.layer_note(
                "rows", layer,
                f"{{layers}} self-attention saw {x.shape[0]} rows where the U-Net call had {plan.size} "
                "(another extension reshapes the batch); {that} ran without MasaCtrl",
            )
            return None
        return x, context, extra

    def _kv_rows(self, layer: int, plan: CallPlan) -> Tuple[List[int], List[Sources]]:
        kv_rows: List[int] = []
        kept_rows: List[Sources] = []
        kept_position: Dict[int, int] = {}
        for i, source in enumerate(plan.sources):
            if source is None:
                kv_rows.append(i)
            elif plan.is_local(source):
                kv_rows.append(source - plan.start)
            elif source in kept_position:
                kv_rows.append(kept_position[source])
            elif (layer, source) in self._kept:
                kept_position[source] = plan.size + len(kept_rows)
                kept_rows.append(self._kept[(layer, source)])
                kv_rows.append(kept_position[source])
            else:
                kv_rows.append(i)
                self.stats.fallback_rows += 1
                self.note(
                    f"missing-source-{plan.start + i}",
                    f"the source of row {plan.start + i} had not been computed when the row ran at "
                    f"step {self._step}, layer {layer}; it used plain self-attention there",
                )
        return kv_rows, kept_rows


def _row_copy(sources: Sources, row: int) -> Sources:
    """One row of a call's sources, kept beyond the call."""
    if isinstance(sources, KeyValues):
        return KeyValues(sources.keys[row:row + 1].clone(), sources.values[row:row + 1].clone())
    return sources[row:row + 1].clone()


def _layer_phrase(layers: List[int]) -> str:
    """"layer 12", "layers 10-15", "layers 3, 10-15"."""
    ordered = sorted(layers)
    runs: List[List[int]] = []
    for layer in ordered:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    text = ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)
    return f"layer{'s' * (len(ordered) > 1)} {text}"


def _is_set(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, torch.Tensor):
        return True
    return bool(value)
