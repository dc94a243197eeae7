"""The batch convention: which image of a batch is a source and which source each target reads from.

It is stated once, in :func:`pair_halves`; prompts, seeds, row layouts, ControlNet rows, masks and the
per-image lists of a result are all derived from a :class:`Pairing`, so that another arrangement
of the batch (one source and many targets, say) changes one function, not every place that reads
the batch.

Indexes given to a :class:`Pairing` count images over a whole generation, batch after batch, as the
WebUI's ``all_prompts`` and ``all_seeds`` do: index ``i`` is image ``i % batch_size`` of batch
``i // batch_size``, and a target reads from a source of its own batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple, TypeVar

from .layout import LayoutError

T = TypeVar("T")


def pair_halves(batch_size: int) -> Tuple[int | None, ...]:
    """The product's pairing: images ``0..n/2-1`` are sources, image ``i + n/2`` reads from ``i``.

    Returns, per image, the index of the image it reads from (``None`` for sources)."""
    if batch_size < 2 or batch_size % 2:
        raise LayoutError(
            f"MasaCtrl needs an even batch size of at least 2 (sources, then as many targets); "
            f"the batch size is {batch_size}"
        )
    half = batch_size // 2
    return (None,) * half + tuple(range(half))


@dataclass(frozen=True)
class Pairing:
    """One batch's arrangement: ``reads_from[i]`` is the image image ``i`` reads keys and values
    from, ``None`` for a source. The same arrangement repeats in every batch of a generation."""

    reads_from: Tuple[int | None, ...]

    @classmethod
    def halves(cls, batch_size: int) -> "Pairing":
        return cls(pair_halves(batch_size))

    def __len__(self) -> int:
        return len(self.reads_from)

    def source_of(self, index: int) -> int | None:
        """The generation-wide index of the source that image ``index`` reads from, or ``None``."""
        source = self.reads_from[index % len(self)]
        return None if source is None else index - index % len(self) + source

    def is_target(self, index: int) -> bool:
        return self.reads_from[index % len(self)] is not None

    @property
    def sources(self) -> List[int]:
        """The images of a batch that read from no other."""
        return [image for image, source in enumerate(self.reads_from) if source is None]

    def reader_of(self, index: int) -> int | None:
        """The generation-wide index of the first target that reads from image ``index``."""
        image = index % len(self)
        reader = next((target for target, source in enumerate(self.reads_from) if source == image), None)
        return None if reader is None else index - image + reader

    def prompts(self, prompts: Sequence[str], source_prompt: str) -> List[str]:
        """Per-image prompts with every source's replaced by ``source_prompt``."""
        return [prompt if self.is_target(i) else source_prompt for i, prompt in enumerate(prompts)]

    def seeds(self, seeds: Sequence[int]) -> List[int]:
        """Per-image seeds with every target's replaced by its source's, so both start from the
        same noise."""
        return [seed if self.source_of(i) is None else seeds[self.source_of(i)] for i, seed in enumerate(seeds)]

    def targets_only(self, values: Sequence[T]) -> List[T]:
        """The entries of per-image values (one batch, or all batches in order) that are targets."""
        return [value for i, value in enumerate(values) if self.is_target(i)]
