"""Where a prompt's subject words sit in the text conditioning that cross-attention reads.

The WebUI (``modules/sd_hijack_clip.py``, ``TextConditionalModel.tokenize_line``) turns a prompt
into chunks of 75 BPE tokens and wraps each as 77 context rows: ``[start, 75 tokens padded with
end, end]`` (``PromptChunk.tokens``); chunk ``k`` fills rows ``77 k .. 77 k + 76`` of the context.
Emphasis syntax is parsed before tokenising, so ``(corgi:1.2)`` reaches the chunks as the tokens of
``corgi``. A subject word is found as a run of its own BPE tokens among the chunks' content rows
(every row but each chunk's first and last); all occurrences count, and a multi-token word
contributes all its tokens. Content rows of consecutive chunks are adjacent in that search, so a
word that the 75-token limit split across two chunks is still found.

SDXL: both text encoders (CLIP ViT-L and OpenCLIP ViT-bigG) tokenise with the same BPE vocabulary
and the same chunking, and the conditioner concatenates their features along the channel axis, so
row ``r`` of the 2048-wide context holds token ``r`` of both: positions found with either
tokeniser are the SDXL context's positions. SD2's OpenCLIP shares the vocabulary as well.

A textual-inversion embedding is placed in the chunks as zeros (``PromptChunkFix``), so its name
cannot be a subject word.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

from .settings import SettingsError

Tokenize = Callable[[str], Sequence[int]]
"""BPE ids of a text without start and end tokens (the WebUI: ``model.tokenize([text])[0]``)."""

Chunks = Sequence[Sequence[int]]
"""A prompt's token ids, chunk by chunk, exactly as they fill the context rows (WebUI:
``[chunk.tokens for chunk in model.tokenize_line(prompt)[0]]``)."""


def _content(chunks: Chunks) -> Tuple[List[int], List[int]]:
    """The content tokens of all chunks and their context positions."""
    ids: List[int] = []
    positions: List[int] = []
    offset = 0
    for chunk in chunks:
        chunk = list(chunk)
        if len(chunk) < 3:
            raise ValueError(f"a prompt chunk must hold start, content and end tokens; got {chunk!r}")
        ids.extend(chunk[1:-1])
        positions.extend(range(offset + 1, offset + len(chunk) - 1))
        offset += len(chunk)
    return ids, positions


def _occurrences(ids: Sequence[int], positions: Sequence[int], word_ids: Sequence[int]) -> List[int]:
    n = len(word_ids)
    found: List[int] = []
    for start in range(len(ids) - n + 1):
        if list(ids[start : start + n]) == list(word_ids):
            found.extend(positions[start : start + n])
    return found


def _word_ids(word: str, tokenize: Tokenize, cache: Dict[str, List[int]]) -> List[int]:
    if word not in cache:
        ids = [int(i) for i in tokenize(word)]
        if not ids:
            raise SettingsError(f"subject word {word!r} has no tokens")
        cache[word] = ids
    return cache[word]


def word_positions(
    chunks: Chunks, words: Sequence[str], tokenize: Tokenize, prompt: str, role: str = "prompt"
) -> Tuple[int, ...]:
    """Context positions of every occurrence of every word in ``words``, sorted.

    Raises :class:`SettingsError` naming the first word that is not in the prompt; ``prompt`` and
    ``role`` ("prompt", "source prompt", ...) only word that message."""
    return subprompt_positions([chunks], words, tokenize, prompt, role)[0]


def subprompt_positions(
    subprompts: Sequence[Chunks], words: Sequence[str], tokenize: Tokenize, prompt: str, role: str = "prompt"
) -> Tuple[Tuple[int, ...], ...]:
    """Like :func:`word_positions` for a prompt made of AND sub-prompts, each with its own
    conditioning rows: per sub-prompt, the positions of the words it contains. A word must be in
    at least one of them."""
    cache: Dict[str, List[int]] = {}
    contents = [_content(chunks) for chunks in subprompts]
    found: List[set] = [set() for _ in subprompts]
    for word in words:
        word_ids = _word_ids(word, tokenize, cache)
        hits = [_occurrences(ids, positions, word_ids) for ids, positions in contents]
        if not any(hits):
            raise SettingsError(f"subject word {word!r} is not in the {role} {prompt!r}")
        for sub, sub_hits in enumerate(hits):
            found[sub].update(sub_hits)
    return tuple(tuple(sorted(sub)) for sub in found)
