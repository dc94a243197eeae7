"""Which rows of a denoiser call are sources, which are targets, and where each target reads.

The WebUI's CFG denoiser stacks one step's rows as ``[cond rows..., uncond rows...]``: image ``i``
has one cond row per AND sub-prompt, then every image has one uncond row. It then calls the U-Net
once for all rows or several times on consecutive slices (cond chunks, then the uncond rows), and
may leave the uncond rows out. A :class:`StepLayout` describes the whole stack; a
:class:`CallPlan` is the part one U-Net call holds.

A target's cond row ``j`` reads from its source's cond row ``j`` (or the source's last cond row
if the source has fewer sub-prompts); its uncond row reads from the source's uncond row. This is
the official code's pairing of uncond with uncond and cond with cond, extended to AND prompts.

WebUI Forge stacks a call's rows in chunks instead, each chunk holding every image once (the uncond
chunk first when it shares a call with cond chunks): :meth:`StepLayout.chunks` describes such a call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

COND = "cond"
UNCOND = "uncond"


class LayoutError(ValueError):
    """The batch cannot be paired as asked; the message says why."""


@dataclass(frozen=True)
class Row:
    image: int
    group: str
    sub: int = 0


@dataclass(frozen=True)
class CallPlan:
    """The rows ``start..stop-1`` of a step's stack that one U-Net call holds.

    ``sources[i]`` is the stack index local row ``i`` reads keys and values from, or ``None`` for
    a row that attends to itself. ``keep`` lists the local rows whose inputs a later call of the
    same step will read."""

    start: int
    stop: int
    sources: Tuple[int | None, ...]
    keep: Tuple[int, ...]

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def has_targets(self) -> bool:
        return any(source is not None for source in self.sources)

    def is_local(self, row: int) -> bool:
        return self.start <= row < self.stop


def check_sources(image_sources: Sequence[int | None]) -> None:
    """Every source must be an image of the batch that reads from no other."""
    images = len(image_sources)
    for target, source in enumerate(image_sources):
        if source is None:
            continue
        if not 0 <= source < images:
            raise LayoutError(f"image {target} reads from image {source}, which is not in the batch of {images}")
        if source == target:
            raise LayoutError(f"image {target} cannot be its own source")
        if image_sources[source] is not None:
            raise LayoutError(
                f"image {target} reads from image {source}, which is itself a target: "
                "every source must be an image that reads from no other"
            )


@dataclass(frozen=True)
class StepLayout:
    """All rows of one denoiser call, each with the stack index it reads from (``None``: itself)."""

    rows: Tuple[Row, ...]
    sources: Tuple[int | None, ...]
    _plans: Dict[Tuple[int, int], CallPlan] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def cfg(
        cls,
        image_sources: Sequence[int | None],
        cond_repeats: Sequence[int] | None = None,
        uncond: bool = True,
    ) -> "StepLayout":
        """Layout of the WebUI's CFG stack.

        ``image_sources[i]`` is the image that image ``i`` reads from (``None`` for sources and
        unpaired images); ``cond_repeats[i]`` the number of cond rows of image ``i`` (AND prompts;
        default one each); ``uncond`` whether the stack ends with one uncond row per image."""
        images = len(image_sources)
        repeats = tuple(cond_repeats) if cond_repeats is not None else (1,) * images
        if len(repeats) != images:
            raise LayoutError(f"{len(repeats)} cond repeat counts given for {images} images")
        if any(n < 1 for n in repeats):
            raise LayoutError(f"every image needs at least one cond row, got repeats {list(repeats)}")
        check_sources(image_sources)

        rows = []
        cond_index: Dict[Tuple[int, int], int] = {}
        for image, count in enumerate(repeats):
            for sub in range(count):
                cond_index[(image, sub)] = len(rows)
                rows.append(Row(image, COND, sub))
        uncond_index: Dict[int, int] = {}
        if uncond:
            for image in range(images):
                uncond_index[image] = len(rows)
                rows.append(Row(image, UNCOND))

        sources = []
        for row in rows:
            source = image_sources[row.image]
            if source is None:
                sources.append(None)
            elif row.group == COND:
                sources.append(cond_index[(source, min(row.sub, repeats[source] - 1))])
            else:
                sources.append(uncond_index[source])
        return cls(rows=tuple(rows), sources=tuple(sources))

    @classmethod
    def chunks(cls, image_sources: Sequence[int | None], groups: Sequence[str]) -> "StepLayout":
        """Layout of a call whose rows come in chunks that each hold every image of the batch once,
        in batch order: ``groups`` gives each chunk's group in the call's order (:data:`COND` or
        :data:`UNCOND`; the n-th cond chunk is AND sub-prompt n). WebUI Forge stacks its U-Net calls
        this way (uncond before cond when they share a call). A target's row reads from its source's
        row of the same chunk."""
        images = len(image_sources)
        check_sources(image_sources)
        rows, sources = [], []
        cond_chunks = 0
        for chunk, group in enumerate(groups):
            if group not in (COND, UNCOND):
                raise LayoutError(f"chunk {chunk} is neither {COND} nor {UNCOND}: {group!r}")
            sub = cond_chunks if group == COND else 0
            cond_chunks += group == COND
            for image, source in enumerate(image_sources):
                rows.append(Row(image, group, sub))
                sources.append(None if source is None else chunk * images + source)
        return cls(rows=tuple(rows), sources=tuple(sources))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def has_targets(self) -> bool:
        return any(source is not None for source in self.sources)

    def plan(self, start: int, stop: int) -> CallPlan:
        """The plan for a U-Net call holding stack rows ``start..stop-1``."""
        if not 0 <= start < stop <= len(self.rows):
            raise LayoutError(f"rows {start}..{stop - 1} are not in this step's {len(self.rows)} rows")
        key = (start, stop)
        plan = self._plans.get(key)
        if plan is None:
            read_later = {source for row, source in enumerate(self.sources) if row >= stop and source is not None}
            plan = CallPlan(
                start=start,
                stop=stop,
                sources=self.sources[start:stop],
                keep=tuple(row - start for row in range(start, stop) if row in read_later),
            )
            self._plans[key] = plan
        return plan
