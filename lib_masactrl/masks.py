"""Foreground masks for mask-guided mutual self-attention (paper section 3.3; official
``MutualSelfAttentionControlMask`` and ``MutualSelfAttentionControlMaskAuto``).

Each image of a pair has a binary foreground mask. It comes from the user (:class:`MaskGuide`
``user_masks``: a float mask of any size, area-resized to each layer's token grid and foreground
where the result is at least 0.5), or from the cross-attention maps of the image's subject words
(``token_positions``, found with :mod:`lib_masactrl.words`):

- maps are taken at latent/4 resolution, as the official code does (16x16 for a 512x512 image):
  the attn2 calls whose query count is the latent's token grid downsampled twice, which are the
  down, middle (SDXL) and up blocks at that level. Sides halve rounding up, as ldm's stride-2
  convolutions do, so any latent size works, square or not;
- per cond row with subject tokens: the softmax over all context tokens of ``q k^T / sqrt(d)``
  computed from the host's own q and k (captured from ``to_q``/``to_k`` while the call runs, so a
  hypernetwork's or LoRA's change to the keys is in the map exactly as in the image), summed over
  the subject tokens and averaged over heads; then averaged per image over layers and AND
  sub-prompts, min-max normalised (a constant map becomes all zeros) and thresholded
  (``>= threshold``, default 0.1) into a mask at latent/4, upsampled (nearest) to each controlled
  layer's resolution when used.

Timing. The masks of a denoiser call are made from the maps collected during the previous
denoiser call of the pass (step t-1 for the first call of step t; the second call of a
second-order sampler's step uses its first call's maps). The official code instead clears its maps
after every step and, at each controlled layer, aggregates the latent/4 layers that already ran in
the same step. We chose the previous call because:

1. every controlled layer and row of a step sees the same mask, whatever layers are controlled:
   SDXL's default start layer 44 runs before 20 of its 60 latent/4 layers, so the same-step rule
   would give early controlled layers partial masks, and layers before the first latent/4 layer
   none at all;
2. the result does not depend on how the host splits a step into U-Net calls (with cond and uncond
   rows in separate calls, the uncond rows would see maps from more layers than the cond rows);
3. each step has one mask per image, which the host can show (:class:`UsedMasks`).

Maps change little from one step to the next, so the delay costs little. Its price: maps are also
collected during the step before the first controlled one, and when a pass's first controlled call
is its very first call (start step 0) that call runs unmasked (plain mutual self-attention), as
the official code does before any map exists.

Memory: only calls whose maps a later call can use collect (steps ``start_step - 1`` up to the
last controlled step), only at the latent/4 layers, only for cond rows with subject tokens; each
image keeps one running sum of ``(H/4) * (W/4)`` values, and a layer's probabilities
(heads x tokens x context tokens, one row at a time) live only while its call runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .attention import KeySplit
from .settings import DEFAULT_MASK_THRESHOLD, MasaCtrlSettings, SettingsError
from .words import Chunks, Tokenize, subprompt_positions

MAP_DOWNSAMPLING = 2
"""Cross-attention maps are aggregated at the latent size halved this many times (latent/4)."""

Grid = Tuple[int, int]


def downsampled(size: Grid, times: int) -> Grid:
    """The token grid of a U-Net level: each stride-2 convolution halves a side, rounding up."""
    height, width = size
    for _ in range(times):
        height, width = -(-height // 2), -(-width // 2)
    return height, width


def token_grid(latent_size: Grid, tokens: int, levels: int = 8) -> Grid | None:
    """The grid of a layer with ``tokens`` query tokens in a U-Net run on ``latent_size``, or
    ``None`` if no level has that many (token merging, extra tokens)."""
    for level in range(levels):
        grid = downsampled(latent_size, level)
        if grid[0] * grid[1] == tokens:
            return grid
    return None


def _as_mask(value: Any, image: int) -> torch.Tensor:
    mask = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value).detach()
    if mask.dtype == torch.uint8:
        mask = mask.float() / 255
    mask = mask.float().cpu()
    while mask.dim() > 2 and mask.shape[0] == 1:
        mask = mask[0]
    while mask.dim() > 2 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.dim() != 2 or mask.numel() == 0:
        raise SettingsError(f"the mask of image {image} must be one 2-D image, got shape {tuple(mask.shape)}")
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise SettingsError(f"the mask of image {image} must hold values from 0 to 1")
    return mask


@dataclass(frozen=True, eq=False)
class MaskGuide:
    """Where each image's mask comes from, for one batch. Images are the batch's images as in
    :meth:`StepLayout.cfg`'s ``image_sources``. Build it with :func:`mask_guide`, or directly."""

    token_positions: Mapping[int, Sequence[Sequence[int]]] = field(default_factory=dict)
    """Per image, per AND sub-prompt (its cond rows in order), the context positions of its
    subject tokens; an image absent here has no word mask."""
    user_masks: Mapping[int, Any] = field(default_factory=dict)
    """Per image, a mask of any size with values from 0 to 1 (tensor or array; uint8 is read as
    0..255). An image's user mask takes precedence over its words."""
    threshold: float = DEFAULT_MASK_THRESHOLD

    def __post_init__(self) -> None:
        positions = {
            int(image): tuple(tuple(int(p) for p in sub) for sub in subs)
            for image, subs in self.token_positions.items()
            if any(len(sub) for sub in subs) and image not in self.user_masks
        }
        object.__setattr__(self, "token_positions", positions)
        masks = {int(image): _as_mask(mask, int(image)) for image, mask in self.user_masks.items() if mask is not None}
        object.__setattr__(self, "user_masks", masks)

    @property
    def needs_maps(self) -> bool:
        return bool(self.token_positions)

    def positions(self, image: int, sub: int) -> Tuple[int, ...]:
        subs = self.token_positions.get(image, ())
        return subs[sub] if sub < len(subs) else ()

    def has_mask(self, image: int) -> bool:
        return image in self.user_masks or image in self.token_positions


def mask_guide(
    settings: MasaCtrlSettings,
    image_sources: Sequence[int | None],
    subprompts: Sequence[Sequence[str]],
    tokenize_line: Callable[[str], Chunks] | None,
    tokenize: Tokenize | None,
    user_masks: Mapping[int, Any] | None = None,
) -> MaskGuide | None:
    """The batch's masks from the settings' subject words and the user's masks; ``None`` when
    neither is given.

    ``subprompts[i]`` are image ``i``'s AND sub-prompts (one for a plain prompt) as the user wrote
    them; ``tokenize_line`` gives a prompt's chunks as they fill the context rows and ``tokenize``
    a word's BPE ids (see :mod:`lib_masactrl.words`). Sources use ``settings.source_words``,
    targets ``settings.target_words``; an image with a user mask uses that. Raises
    :class:`SettingsError` for a word missing from a prompt, and for a pair where only one image
    has a mask."""
    user_masks = {image: mask for image, mask in (user_masks or {}).items() if mask is not None}
    if not user_masks and not (settings.source_words or settings.target_words):
        return None
    read_from = {source for source in image_sources if source is not None}
    positions: Dict[int, Tuple[Tuple[int, ...], ...]] = {}
    for image, source in enumerate(image_sources):
        role = "target" if source is not None else "source" if image in read_from else None
        words = settings.target_words if role == "target" else settings.source_words
        if role is None or image in user_masks or not words:
            continue
        if tokenize_line is None or tokenize is None:
            raise ValueError("subject words need the host's tokenize_line and tokenize")
        subs = list(subprompts[image])
        prompt = " AND ".join(subs)
        positions[image] = subprompt_positions([tokenize_line(sub) for sub in subs], words, tokenize, prompt, f"{role} prompt")
    guide = MaskGuide(token_positions=positions, user_masks=user_masks, threshold=settings.mask_threshold)
    for target, source in enumerate(image_sources):
        if source is not None and guide.has_mask(target) != guide.has_mask(source):
            missing, role = (source, "source") if guide.has_mask(target) else (target, "target")
            raise SettingsError(
                f"image {target} and its source image {source} need a mask each, but the {role} image {missing} "
                f"has none: give {role} subject words or a {role} mask"
            )
    return guide


@dataclass(frozen=True, eq=False)
class UsedMasks:
    """The masks the last masked step used, per image, at latent/4 resolution (float 0/1, CPU)."""

    step: int
    masks: Dict[int, torch.Tensor]


def subject_attention(q: torch.Tensor, k: torch.Tensor, heads: int, positions: torch.Tensor) -> torch.Tensor:
    """One row's cross-attention to its subject tokens: ``q`` (tokens, inner) and ``k`` (context
    tokens, inner) give the softmax over all context tokens per head; the probabilities of the
    context ``positions`` (a long tensor on ``q``'s device) are summed and averaged over heads.
    Computed in float32 or wider."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    q = q.to(dtype).unflatten(-1, (heads, -1)).transpose(0, 1)
    k = k.to(dtype).unflatten(-1, (heads, -1)).transpose(0, 1)
    probabilities = torch.softmax(q @ k.transpose(1, 2) * q.shape[-1] ** -0.5, dim=-1)
    return probabilities.index_select(-1, positions).sum(-1).mean(0)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise one map to 0..1; a constant map becomes all zeros."""
    low, high = maps.min(), maps.max()
    if high <= low:
        return torch.zeros_like(maps)
    return (maps - low) / (high - low)


class MaskState:
    """One pass's masks: collects maps during a denoiser call, turns them into masks for the next,
    resizes masks to each layer's grid, and remembers the masks used last."""

    def __init__(self, guide: MaskGuide) -> None:
        self.guide = guide
        self.collecting = False
        self.maps_expected = False
        """Whether the previous call collected maps (so a missing word mask is worth a note)."""
        self.maps: Dict[int, torch.Tensor] = {}
        """The normalised maps the current call's word masks were made from (latent/4 grid)."""
        self._sums: Dict[int, torch.Tensor] = {}
        self._counts: Dict[int, int] = {}
        self._sum_grid: Grid | None = None
        self._word_masks: Dict[int, torch.Tensor] = {}
        self._resized: Dict[Tuple[int, Grid, Any], torch.Tensor] = {}
        self._user_resized: Dict[Tuple[int, Grid, Any], torch.Tensor] = {}
        self._splits: Dict[Tuple[int, Grid, Any], KeySplit | None] = {}
        self._user_splits: Dict[Tuple[int, Grid, Any], KeySplit | None] = {}
        self._used: Dict[int, torch.Tensor] = {}
        self._used_step: int | None = None

    # --- calls -----------------------------------------------------------------------------

    def begin_call(self, collect: bool) -> None:
        """Start a denoiser call: the maps collected so far become this call's word masks."""
        self.maps = {}
        if self._sums and self._sum_grid is not None:
            for image, total in self._sums.items():
                self.maps[image] = normalise(total / self._counts[image]).reshape(self._sum_grid)
        self._word_masks = {image: maps >= self.guide.threshold for image, maps in self.maps.items()}
        self.maps_expected = self.collecting
        self._sums.clear()
        self._counts.clear()
        self._resized.clear()
        self._splits.clear()
        self.collecting = collect and self.guide.needs_maps

    def map_grid(self, latent_size: Grid) -> Grid:
        return downsampled(latent_size, MAP_DOWNSAMPLING)

    def add_map(self, image: int, values: torch.Tensor, grid: Grid) -> None:
        if self._sum_grid != grid:
            self._sums.clear()
            self._counts.clear()
            self._sum_grid = grid
        if image in self._sums:
            self._sums[image] = self._sums[image] + values
            self._counts[image] += 1
        else:
            self._sums[image] = values
            self._counts[image] = 1

    # --- masks -----------------------------------------------------------------------------

    def mask(self, image: int, grid: Grid, device: Any) -> torch.Tensor | None:
        """Image ``image``'s mask at ``grid``, flattened (bool), or ``None`` if it has none yet."""
        key = (image, grid, device)
        if key in self._resized:
            return self._resized[key]
        if image in self.guide.user_masks:
            mask = self._user_mask(image, grid, device)
        elif image in self._word_masks:
            word_mask = self._word_masks[image].to(device=device, dtype=torch.float32)
            mask = F.interpolate(word_mask[None, None], size=grid, mode="nearest")[0, 0] > 0.5
        else:
            return None
        self._resized[key] = mask.flatten()
        return self._resized[key]

    def _user_mask(self, image: int, grid: Grid, device: Any) -> torch.Tensor:
        key = (image, grid, device)
        if key not in self._user_resized:
            mask = self.guide.user_masks[image].to(device)
            self._user_resized[key] = F.adaptive_avg_pool2d(mask[None, None], grid)[0, 0] >= 0.5
        return self._user_resized[key]

    def split(self, image: int, grid: Grid, device: Any) -> KeySplit | None:
        """The source image's tokens at ``grid`` split by its mask; ``None`` when the mask is all
        foreground or all background (both halves would then attend over every token)."""
        key = (image, grid, device)
        # An uploaded mask is the same in every call: split it once per pass. A word mask changes
        # with every denoiser call; its split has a data-dependent size, which the host reads from
        # the device once per image and resolution in each call.
        splits = self._user_splits if image in self.guide.user_masks else self._splits
        if key not in splits:
            mask = self.mask(image, grid, device)
            split = None
            if mask is not None and bool(mask.any()) and not bool(mask.all()):
                split = KeySplit(foreground=mask.nonzero().flatten(), background=(~mask).nonzero().flatten())
            splits[key] = split
        return splits[key]

    # --- what the host reads -----------------------------------------------------------------

    def record(self, step: int, images: Sequence[int], grid: Grid, device: Any) -> None:
        if self._used_step != step:
            self._used = {}
            self._used_step = step
        for image in images:
            if image not in self._used:
                mask = self.mask(image, grid, device)
                if mask is not None:
                    self._used[image] = mask.reshape(grid)

    @property
    def used(self) -> UsedMasks | None:
        if self._used_step is None:
            return None
        return UsedMasks(self._used_step, {image: mask.float().cpu() for image, mask in sorted(self._used.items())})
