"""An in-memory LRU of inversions, so that editing the same image again (a new target prompt,
other MasaCtrl settings) skips the inversion.

A hit must give exactly what a fresh inversion would, so the key holds everything the result
depends on (:class:`InversionKey`), and only complete inversions are stored, with their whole
trajectory (one latent per level and source: a 512x512 SD image's latent is 64 KiB in float32,
so 30 levels take about 2 MiB a source). Entries are kept on the CPU, away from the GPU memory
the sampler needs, and handed out as copies, so that the host may write into what it gets.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence, Tuple

import torch

from .inversion import Denoiser, InterruptCheck, InversionLevel, Progress, Trajectory, invert, schedule_levels

logger = logging.getLogger("masactrl")


def tensor_digest(tensor: torch.Tensor) -> str:
    """A content hash of a tensor: its dtype, shape and bytes (not its device, which does not
    change the values)."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{data.dtype}{tuple(tensor.shape)}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def conditioning_digest(parts: Sequence[Any]) -> str:
    """A content hash of conditioning as the model receives it: tensors, dicts of tensors (SDXL's
    ``crossattn``, ``vector``, ...) and lists of those, in order."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            digest.update(tensor_digest(value).encode())
        elif isinstance(value, Mapping):
            for key in sorted(value):
                digest.update(f"{key}:".encode())
                add(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"[{len(value)}]".encode())
            for item in value:
                add(item)
        else:
            digest.update(repr(value).encode())

    add(list(parts))
    return digest.hexdigest()


@dataclass(frozen=True)
class InversionKey:
    """Everything an inversion's result depends on. Build it with :meth:`create`.

    - ``content``: the init latent's digest, all rows (or the host's digest of what made it).
    - ``model``: the host's identity of everything the denoiser computes with: checkpoint, active
      networks (LoRA, hypernetworks), U-Net replacements, precision; best of all the digest of the
      denoiser's answer to a fixed input, which no change to the model can leave equal.
    - ``sigmas``, ``sigma_min`` and ``reads``: the schedule walked, the level of the first eps read
      in the current-level convention, and the convention. The schedule's values stand for steps,
      denoising strength, scheduler and every option that shapes them: two settings giving the
      same values give the same inversion.
    - ``conditioning`` and ``cfg_scale``: the digest of the conditioning tensors the inversion's
      model calls receive (cond, and uncond when the scale is not 1, since guidance 1 never reads
      it; image conditioning), and the scale. Keying on the tensors rather than on the prompts and
      the settings that turn them into tensors (clip skip, emphasis, styles, textual inversion,
      SDXL's size conditioning) means that no list of such settings can go out of date.
    - ``extra``: anything else the host knows to matter, as sorted name/value pairs.
    """

    content: str
    model: str
    sigmas: Tuple[float, ...]
    sigma_min: float
    reads: InversionLevel
    conditioning: str
    cfg_scale: float
    extra: Tuple[Tuple[str, str], ...]

    @classmethod
    def create(
        cls,
        x0: torch.Tensor,
        sigmas: torch.Tensor | Sequence[float],
        sigma_min: float,
        *,
        model: str,
        conditioning: Sequence[Any],
        reads: InversionLevel | str = InversionLevel.CURRENT,
        cfg_scale: float = 1.0,
        content: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> "InversionKey":
        """The key of inverting ``x0`` along ``sigmas``; ``content`` defaults to ``x0``'s digest and
        ``conditioning`` lists what the model calls receive besides the latent and the noise level."""
        return cls(
            content=tensor_digest(x0) if content is None else content,
            model=model,
            sigmas=tuple(schedule_levels(sigmas)),
            sigma_min=float(sigma_min),
            reads=InversionLevel.parse(reads),
            conditioning=conditioning_digest(conditioning),
            cfg_scale=float(cfg_scale),
            extra=tuple(sorted((extra or {}).items())),
        )


class _Entry(NamedTuple):
    trajectory: Trajectory
    device: torch.device


class InversionCache:
    """Least-recently-used inversions, at most :attr:`max_entries` of them (0 disables)."""

    def __init__(self, max_entries: int = 4) -> None:
        self._entries: "OrderedDict[InversionKey, _Entry]" = OrderedDict()
        self._lock = threading.Lock()
        self._max_entries = 0
        self.max_entries = max_entries

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @max_entries.setter
    def max_entries(self, value: int) -> None:
        """Resize; the host sets this from its setting before each use, and shrinking drops the
        least recently used entries at once."""
        if value < 0:
            raise ValueError(f"the inversion cache size must be 0 or more, got {value}")
        with self._lock:
            self._max_entries = int(value)
            self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: InversionKey) -> bool:
        return key in self._entries

    def get(self, key: InversionKey) -> Trajectory | None:
        """A copy of the stored trajectory on the device it came from, or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        return Trajectory(entry.trajectory.levels, entry.trajectory.latents.to(entry.device, copy=True))

    @property
    def nbytes(self) -> int:
        """The memory the stored trajectories take (on the CPU)."""
        with self._lock:
            return sum(entry.trajectory.nbytes for entry in self._entries.values())

    def put(self, key: InversionKey, trajectory: Trajectory) -> None:
        """Store a CPU copy of a complete inversion's trajectory."""
        if self._max_entries == 0:
            return
        latents = trajectory.latents
        entry = _Entry(Trajectory(trajectory.levels, latents.detach().to("cpu", copy=True)), latents.device)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._evict()

    def clear(self) -> int:
        """Forget every entry; returns how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
        return count

    def _evict(self) -> None:
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
            logger.debug("inversion cache: evicted the least recently used entry")


class Inverted(NamedTuple):
    trajectory: Trajectory
    cached: bool
    """Whether the trajectory came from the cache (no model call was made)."""


def invert_cached(
    cache: InversionCache,
    key: InversionKey,
    x0: torch.Tensor,
    denoise: Denoiser,
    *,
    progress: Progress | None = None,
    interrupted: InterruptCheck | None = None,
) -> Inverted:
    """:func:`invert` along ``key``'s schedule, through ``cache``. The schedule, ``sigma_min`` and
    convention are taken from the key, so a stored trajectory always matches its key. An
    interrupted inversion raises :class:`InversionInterrupted` and stores nothing."""
    trajectory = cache.get(key)
    if trajectory is not None:
        logger.info("MasaCtrl inversion: reusing the cached inversion (%d steps)", len(key.sigmas) - 1)
        return Inverted(trajectory, True)
    trajectory = invert(
        x0, key.sigmas, denoise, key.sigma_min, reads=key.reads, progress=progress, interrupted=interrupted
    )
    cache.put(key, trajectory)
    return Inverted(trajectory, False)
