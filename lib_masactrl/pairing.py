"""The batch convention: which image of a batch is a source and which source each target reads from.

It is stated once per layout, in :func:`pair_halves` and :func:`one_source`; prompts, seeds, row
layouts, ControlNet rows and maps, masks and the per-image lists of a result are all derived from
a :class:`Pairing`, so that no other code knows how a batch is arranged.

Indexes given to a :class:`Pairing` count images over a whole generation, batch after batch, as the
WebUI's ``all_prompts`` and ``all_seeds`` do: index ``i`` is image ``i % batch_size`` of batch
``i // batch_size``, and a target reads from a source of its own batch. Targets are also numbered
over the whole generation, in order (:meth:`Pairing.target_number`): that is how target prompts and
control maps are handed out, one per target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple, TypeVar

from .layout import LayoutError
from .settings import Choice, SettingsError

T = TypeVar("T")


class Layout(Choice):
    """How a batch is arranged into sources and targets."""

    PAIRS = "pairs"
    """The first half of the batch are sources, the second half their targets, one each."""

    ONE_SOURCE = "one source"
    """Image 1 is the source of every other image of the batch; every batch repeats that source,
    so all targets of a generation share one identity (a sequence: poses, frames)."""

    @classmethod
    def noun(cls) -> str:
        return "layout"


def pair_halves(batch_size: int) -> Tuple[int | None, ...]:
    """The pairs layout: images ``0..n/2-1`` are sources, image ``i + n/2`` reads from ``i``.

    Returns, per image, the index of the image it reads from (``None`` for sources)."""
    if batch_size < 2 or batch_size % 2:
        raise LayoutError(
            f"MasaCtrl needs an even batch size of at least 2 (sources, then as many targets); "
            f"the batch size is {batch_size}"
        )
    half = batch_size // 2
    return (None,) * half + tuple(range(half))


def one_source(batch_size: int) -> Tuple[int | None, ...]:
    """The one-source layout: image 0 is the source, every other image reads from it."""
    if batch_size < 2:
        raise LayoutError(
            f"MasaCtrl's one-source layout needs a batch size of at least 2 (the source, then its targets); "
            f"the batch size is {batch_size}"
        )
    return (None,) + (0,) * (batch_size - 1)


@dataclass(frozen=True)
class Pairing:
    """One batch's arrangement: ``reads_from[i]`` is the image image ``i`` reads keys and values
    from, ``None`` for a source. The same arrangement repeats in every batch of a generation; with
    ``repeats_sources`` every batch's sources are the first batch's (same prompt and seed)."""

    reads_from: Tuple[int | None, ...]
    repeats_sources: bool = False

    @classmethod
    def of(cls, layout: Layout | str, batch_size: int) -> "Pairing":
        if Layout.parse(layout) is Layout.ONE_SOURCE:
            return cls(one_source(batch_size), repeats_sources=True)
        return cls(pair_halves(batch_size))

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

    @property
    def targets(self) -> List[int]:
        """The images of a batch that read from a source, in order."""
        return [image for image, source in enumerate(self.reads_from) if source is not None]

    def target_number(self, index: int) -> int | None:
        """Image ``index``'s place among all targets of the generation, counted from 0, or
        ``None`` for a source."""
        image = index % len(self)
        if not self.is_target(image):
            return None
        return index // len(self) * len(self.targets) + self.targets.index(image)

    def targets_in(self, images: int) -> int:
        """How many targets a generation of ``images`` images holds."""
        return sum(1 for index in range(images) if self.is_target(index))

    def reader_of(self, index: int) -> int | None:
        """The generation-wide index of the first target that reads from image ``index``."""
        image = index % len(self)
        reader = next((target for target, source in enumerate(self.reads_from) if source == image), None)
        return None if reader is None else index - image + reader

    def prompts(
        self, prompts: Sequence[str], source_prompt: str | None, target_prompts: Sequence[str] = ()
    ) -> List[str]:
        """Per-image prompts with every source's replaced by ``source_prompt`` (``None`` keeps
        them) and, when target prompts are given, target ``k``'s by ``target_prompts[k]``, or every
        target's by the one given. Raises :class:`SettingsError` when there are neither one nor as
        many as targets."""
        count = self.targets_in(len(prompts))
        if len(target_prompts) not in (0, 1, count):
            raise SettingsError(
                f"{len(target_prompts)} target prompts were given for the {count} targets of this generation: "
                "give one line per target, in order, or a single line for all of them"
            )

        def prompt_of(index: int, prompt: str) -> str:
            number = self.target_number(index)
            if number is None:
                return prompt if source_prompt is None else source_prompt
            return target_prompts[number % len(target_prompts)] if target_prompts else prompt

        return [prompt_of(index, prompt) for index, prompt in enumerate(prompts)]

    def seeds(self, seeds: Sequence[int]) -> List[int]:
        """Per-image seeds with every target's replaced by its source's, so both start from the
        same noise; with ``repeats_sources`` every image takes the first source's."""
        if self.repeats_sources:
            return [seeds[self.sources[0]]] * len(seeds)
        return [seed if self.source_of(i) is None else seeds[self.source_of(i)] for i, seed in enumerate(seeds)]

    def targets_only(self, values: Sequence[T]) -> List[T]:
        """The entries of per-image values (one batch, or all batches in order) that are targets."""
        return [value for i, value in enumerate(values) if self.is_target(i)]

    def shown(self, batch: int, every_source: bool) -> List[int]:
        """The images of batch number ``batch`` (counted from 0) that a result shows: all of them,
        except that a repeated source is shown once, in the first batch, unless ``every_source``."""
        if not self.repeats_sources or every_source or batch == 0:
            return list(range(len(self)))
        return self.targets
