"""Stand-in for the WebUI's modules/prompt_parser.py: the prompt syntax the text encoder sees.

Three layers of syntax live in a prompt, and each has its reader here:
- prompt editing, ``[from:to:when]`` / ``[to:when]`` / ``[from::when]`` and alternation ``[a|b|...]``:
  ``get_learned_conditioning_prompt_schedules`` turns a prompt into the texts in force over the steps;
- composition, ``a AND b :0.5``: ``get_multicond_prompt_list`` splits prompts into weighted sub-prompts;
- emphasis, ``(word)``, ``[word]``, ``(word:1.3)`` and ``BREAK``: ``parse_prompt_attention``.
The encoded schedules travel as ``ScheduledPromptConditioning`` lists and are turned into per-step
batches by ``reconstruct_cond_batch`` / ``reconstruct_multicond_batch``.

The real file reads prompt editing with a lark grammar; here a small recursive-descent reader of the
same grammar does it: same results on the real file's examples (except the one it marks as unhandled);
where the grammar is ambiguous (a stray bracket right after an edit, as in ``[a:1]]``) lark's choice
is not reproduced, the edit is taken.
"""

from __future__ import annotations

import re
from collections import namedtuple
from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------------------
# prompt editing


class _Unparsable(Exception):
    """The prompt does not fit the editing grammar: the real parser then uses it verbatim."""


@dataclass
class _Edit:
    """``[before:after:when]``; ``before`` is None for the two-part form."""

    before: list | None
    after: list
    when_text: str
    when: int = 0


@dataclass
class _Alternation:
    """``[a|b|...]``: option ``(step - 1) % len(options)`` is in force at a step."""

    options: list


_EDIT_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))\s*")
_INNER_STOPS = ":|])"


class _EditingReader:
    """Reads one prompt into a flat node list: strings (kept verbatim, brackets of emphasis included),
    ``_Edit`` and ``_Alternation``. Inside brackets any construct that does not close makes the
    enclosing construct fail; at the top level a failed construct leaves its bracket as plain text (the
    grammar's stray ``[ ] ( ) :``), while a stray ``|`` makes the whole prompt unparsable."""

    def __init__(self, text: str):
        self.text = text
        self.at = 0

    def peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def read_run(self, top: bool) -> list:
        nodes: list = []
        while self.at < len(self.text):
            char = self.peek()
            if char == "\\":
                escaped = self.text[self.at + 1 : self.at + 2]
                if escaped in ("", "\n"):
                    raise _Unparsable(self.text)
                nodes.append(char + escaped)
                self.at += 2
            elif char in "([":
                start = self.at
                try:
                    nodes.extend(self.read_group())
                except _Unparsable:
                    if not top:
                        raise
                    self.at = start + 1
                    nodes.append(char)
            elif char == "|" and top:
                raise _Unparsable(self.text)
            elif char in _INNER_STOPS:
                if not top:
                    break
                nodes.append(char)
                self.at += 1
            else:
                end = self.at
                while end < len(self.text) and self.text[end] not in "\\([" + _INNER_STOPS:
                    end += 1
                nodes.append(self.text[self.at : end])
                self.at = end
        return nodes

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _Unparsable(self.text)
        self.at += 1

    def read_group(self) -> list:
        opener = self.peek()
        self.at += 1
        parts = [self.read_run(top=False)]
        separators = []
        while self.peek() in (":", "|"):
            separators.append(self.peek())
            self.at += 1
            parts.append(self.read_run(top=False))
        if opener == "(":
            # emphasis "(x)" or "(x:y)" only matters to parse_prompt_attention: kept as text
            if separators not in ([], [":"]):
                raise _Unparsable(self.text)
            self.expect(")")
            return ["(", *_join(parts, separators), ")"]
        self.expect("]")
        if not separators:
            return ["[", *parts[0], "]"]
        if set(separators) == {"|"}:
            return [_Alternation(parts)]
        if set(separators) == {":"} and len(parts) in (2, 3):
            when = _EDIT_WHEN.fullmatch("".join(x for x in parts[-1] if isinstance(x, str)))
            if when and all(isinstance(x, str) for x in parts[-1]):
                before = parts[0] if len(parts) == 3 else None
                return [_Edit(before, parts[-2], when.group(1))]
        raise _Unparsable(self.text)


def _join(parts: list, separators: list) -> list:
    joined = list(parts[0])
    for separator, part in zip(separators, parts[1:]):
        joined += [separator, *part]
    return joined


def _nodes_within(nodes: list):
    for node in nodes:
        yield node
        if isinstance(node, _Edit):
            yield from _nodes_within((node.before or []) + node.after)
        elif isinstance(node, _Alternation):
            for option in node.options:
                yield from _nodes_within(option)


def _text_at(nodes: list, step: int) -> str:
    pieces = []
    for node in nodes:
        if isinstance(node, str):
            pieces.append(node)
        elif isinstance(node, _Edit):
            pieces.append(_text_at(node.before or [] if step <= node.when else node.after, step))
        else:
            pieces.append(_text_at(node.options[(step - 1) % len(node.options)], step))
    return "".join(pieces)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    """Mirrors prompt_parser.get_learned_conditioning_prompt_schedules: for every prompt, the list of
    ``[last step, text]`` over the steps. A ``when`` with a decimal point is a fraction of the steps
    (in the hires pass, of the hires steps counted from 1.0), one without is a step number (in the hires
    pass counted from the first pass's steps); with ``use_old_scheduling`` any value below 1 is a
    fraction. Alternation changes the text at every step.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:2] d"], 4)
    [[[2, 'a b d'], [4, 'a c d']]]
    """
    hires = hires_steps is not None and not use_old_scheduling
    steps = hires_steps if hires else base_steps

    def step_of(when_text: str) -> int:
        value = float(when_text)
        if use_old_scheduling:
            value = value * steps if value < 1 else value
        elif "." in when_text:
            value = (value - (1.0 if hires else 0.0)) * steps
        else:
            value = value - (base_steps if hires else 0)
        return min(steps, int(value))

    def schedule(prompt: str) -> list:
        try:
            nodes = _EditingReader(prompt).read_run(top=True)
        except _Unparsable:
            return [[steps, prompt]]
        boundaries = {steps}
        for node in _nodes_within(nodes):
            if isinstance(node, _Edit):
                node.when = step_of(node.when_text)
                if node.when >= 1:
                    boundaries.add(node.when)
            elif isinstance(node, _Alternation):
                boundaries.update(range(1, steps + 1))
        return [[step, _text_at(nodes, step)] for step in sorted(boundaries)]

    known = {prompt: schedule(prompt) for prompt in set(prompts)}
    return [known[prompt] for prompt in prompts]


# --------------------------------------------------------------------------------------------------
# conditioning containers

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
"""Mirrors prompt_parser.ScheduledPromptConditioning: ``cond`` is in force up to ``end_at_step``."""


class SdConditioning(list):
    """Mirrors prompt_parser.SdConditioning: a list of prompts that also says whether they are negative
    prompts and the image size (read by SDXL's conditioner); copied from ``copy_from`` when not given."""

    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__(prompts)
        source = prompts if copy_from is None else copy_from
        self.is_negative_prompt = is_negative_prompt or getattr(source, "is_negative_prompt", False)
        self.width = width or getattr(source, "width", None)
        self.height = height or getattr(source, "height", None)


@dataclass(eq=False)
class ComposableScheduledPromptConditioning:
    """Mirrors prompt_parser.ComposableScheduledPromptConditioning: one AND sub-prompt's schedule and weight."""

    schedules: list[ScheduledPromptConditioning]
    weight: float = 1.0


@dataclass(eq=False)
class MulticondLearnedConditioning:
    """Mirrors prompt_parser.MulticondLearnedConditioning: per image, its composable sub-prompts;
    ``shape`` = (number of images,), which the timestep samplers read."""

    shape: tuple
    batch: list[list[ComposableScheduledPromptConditioning]]


class DictWithShape(dict):
    """Mirrors prompt_parser.DictWithShape: an SDXL cond dict whose ``shape`` is its "crossattn" tensor's."""

    def __init__(self, x, shape=None):
        super().__init__(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def get_learned_conditioning(model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False):
    """Mirrors prompt_parser.get_learned_conditioning: per prompt, its schedule with each text encoded.
    Each distinct prompt costs one ``model.get_learned_conditioning`` call over all its schedule's texts;
    SDXL's dict conds are split per text key by key."""
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    encoded: dict[str, list[ScheduledPromptConditioning]] = {}
    for prompt, schedule in zip(prompts, schedules):
        if prompt in encoded:
            continue
        conds = model.get_learned_conditioning(SdConditioning([text for _, text in schedule], copy_from=prompts))
        if isinstance(conds, dict):
            conds = [{key: value[row] for key, value in conds.items()} for row in range(len(schedule))]
        encoded[prompt] = [ScheduledPromptConditioning(end, conds[row]) for row, (end, _) in enumerate(schedule)]
    return [encoded[prompt] for prompt in prompts]


# --------------------------------------------------------------------------------------------------
# composition (AND)

_AND = re.compile(r"\bAND\b")
_TRAILING_WEIGHT = re.compile(r"\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+))\s*$")


def _weighted(subprompt: str) -> tuple[str, float]:
    found = _TRAILING_WEIGHT.search(subprompt)
    if found is None:
        return subprompt.rstrip(), 1.0
    return subprompt[: found.start()], float(found.group(1))


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    """Mirrors prompt_parser.get_multicond_prompt_list: splits every prompt at ``AND`` into sub-prompts
    with an optional trailing ``:weight``. Returns, per prompt, ``[(index, weight), ...]`` into the flat
    list of distinct sub-prompt texts (an SdConditioning like ``prompts``), and the text -> index map."""
    flat = SdConditioning(prompts)
    flat.clear()
    index_of: dict[str, int] = {}
    per_prompt = []
    for prompt in prompts:
        entries = []
        for text, weight in map(_weighted, _AND.split(prompt)):
            if text not in index_of:
                index_of[text] = len(flat)
                flat.append(text)
            entries.append((index_of[text], weight))
        per_prompt.append(entries)
    return per_prompt, flat, index_of


def get_multicond_learned_conditioning(
    model, prompts, steps, hires_steps=None, use_old_scheduling=False
) -> MulticondLearnedConditioning:
    """Mirrors prompt_parser.get_multicond_learned_conditioning: every distinct sub-prompt encoded once."""
    per_prompt, flat, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, flat, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in entries] for entries in per_prompt]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


# --------------------------------------------------------------------------------------------------
# per-step batches


def _in_force(schedule: list[ScheduledPromptConditioning], current_step):
    return next((entry.cond for entry in schedule if current_step <= entry.end_at_step), schedule[0].cond)


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    """Mirrors prompt_parser.reconstruct_cond_batch: row i = prompt i's cond in force at ``current_step``
    (past the last entry: the first one, as the real loop leaves it). Like the real one it fails when the
    prompts encode to different token lengths."""
    rows = [_in_force(schedule, current_step) for schedule in c]
    if isinstance(rows[0], dict):
        return DictWithShape({key: torch.stack([row[key] for row in rows]) for key in rows[0]})
    return torch.stack(rows)


def stack_conds(tensors):
    """Mirrors prompt_parser.stack_conds: stacks conds of different token lengths, repeating the last
    row of the shorter ones."""
    longest = max(tensor.shape[0] for tensor in tensors)
    return torch.stack([torch.cat([t, t[-1:].expand(longest - t.shape[0], *t.shape[1:])]) for t in tensors])


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    """Mirrors prompt_parser.reconstruct_multicond_batch: one row per sub-prompt, image after image, and
    ``conds_list[i] = [(row, weight), ...]`` for image i."""
    rows, conds_list = [], []
    for composables in c.batch:
        conds_list.append([(len(rows) + k, composable.weight) for k, composable in enumerate(composables)])
        rows += [_in_force(composable.schedules, current_step) for composable in composables]
    if isinstance(rows[0], dict):
        return conds_list, DictWithShape({key: stack_conds([row[key] for row in rows]) for key in rows[0]})
    return conds_list, stack_conds(rows)


# --------------------------------------------------------------------------------------------------
# emphasis

_ATTENTION_PIECE = re.compile(r"\\([()\[\]\\]?)|:\s*([+-]?[.\d]+)\s*\)|([()\[\]])|([^\\()\[\]:]+|:)")
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_BRACKET_FACTOR = {"(": 1.1, "[": 1 / 1.1}
_CLOSER = {")": "(", "]": "["}


def parse_prompt_attention(text):
    """Mirrors prompt_parser.parse_prompt_attention: ``[[text, weight], ...]`` where ``(x)`` multiplies
    by 1.1, ``[x]`` divides by 1.1, ``(x:w)`` multiplies by w (each at its closing bracket, innermost
    first), brackets left open apply at the end (round before square), ``\\(`` etc. are literal,
    ``BREAK`` becomes ``["BREAK", -1]`` and neighbours of equal weight are merged.

    >>> parse_prompt_attention("a (b:1.5) [c]")
    [['a ', 1.0], ['b', 1.5], [' ', 1.0], ['c', 0.9090909090909091]]
    """
    pieces: list[list] = []
    open_brackets: list[tuple[str, int]] = []  # (opening bracket, index of its first piece)

    def scale_from(first: int, factor: float) -> None:
        for piece in pieces[first:]:
            piece[1] *= factor

    def close(opener: str) -> int | None:
        for k in range(len(open_brackets) - 1, -1, -1):
            if open_brackets[k][0] == opener:
                return open_brackets.pop(k)[1]
        return None

    def add_text(chunk: str) -> None:
        for k, part in enumerate(_BREAK.split(chunk)):
            if k:
                pieces.append(["BREAK", -1])
            pieces.append([part, 1.0])

    for found in _ATTENTION_PIECE.finditer(text):
        escaped, weight, bracket, plain = found.groups()
        if escaped is not None:
            pieces.append([escaped, 1.0])
        elif bracket in _BRACKET_FACTOR:
            open_brackets.append((bracket, len(pieces)))
        elif plain is not None:
            add_text(plain)
        else:  # a closing bracket, or ":weight)"; without an open bracket to close it is text
            opener = _CLOSER.get(bracket, "(")
            first = close(opener)
            if first is None:
                add_text(found.group(0))
            else:
                scale_from(first, _BRACKET_FACTOR[opener] if weight is None else float(weight))

    for opener in "([":
        for kind, first in open_brackets:
            if kind == opener:
                scale_from(first, _BRACKET_FACTOR[opener])

    merged: list[list] = []
    for piece in pieces or [["", 1.0]]:
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return merged
