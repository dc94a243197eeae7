"""Mirrors modules/prompt_parser.py: prompt-editing schedules, AND sub-prompts, cond batches, emphasis.

Simplified: the real file parses prompt editing with a lark grammar; the stand-in uses a small
hand-written parser covering the same syntax ([from:to:when], [to:when], [from::when], [a|b|...],
nesting, "(...)" kept literally, unbalanced brackets kept literally). Edge cases the lark grammar
resolves by ambiguity (e.g. a bracket group mixing ':' and '|') are kept as literal text here."""

from __future__ import annotations

import re
from collections import namedtuple

import torch

_re_number = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*$")


class _Scheduled:
    def __init__(self, before, after, when_text):
        self.before = before
        self.after = after
        self.when_text = when_text
        self.when = None


class _Alternate:
    def __init__(self, options):
        self.options = options


def _parse(text):
    """Parses ``text`` into a list of str / _Scheduled / _Alternate / ("lit", open, nodes, close)."""

    def parse_sequence(pos, stops):
        # returns (nodes, pos, stop_char or None); parses until one of ``stops`` at this depth
        nodes = []
        plain = []

        def flush():
            if plain:
                nodes.append("".join(plain))
                plain.clear()

        while pos < len(text):
            ch = text[pos]
            if ch == "\\" and pos + 1 < len(text):
                plain.append(text[pos : pos + 2])
                pos += 2
            elif ch in stops:
                flush()
                return nodes, pos, ch
            elif ch == "[":
                node, new_pos = parse_square(pos)
                if node is None:
                    plain.append("[")
                    pos += 1
                else:
                    flush()
                    nodes.append(node)
                    pos = new_pos
            elif ch == "(":
                inner, end, stop = parse_sequence(pos + 1, ")")
                if stop is None:
                    plain.append("(")
                    pos += 1
                else:
                    flush()
                    nodes.append(("lit", "(", inner, ")"))
                    pos = end + 1
            else:
                plain.append(ch)
                pos += 1
        flush()
        return nodes, pos, None

    def parse_square(pos):
        # parses "[...]" starting at pos; returns (node, position after "]") or (None, pos) if unbalanced
        parts, separators = [], []
        cursor = pos + 1
        while True:
            nodes, cursor, stop = parse_sequence(cursor, ":|]")
            if stop is None:
                return None, pos
            parts.append(nodes)
            if stop == "]":
                break
            separators.append(stop)
            cursor += 1
        end = cursor + 1

        if separators and all(s == "|" for s in separators):
            return _Alternate(parts), end
        if separators and all(s == ":" for s in separators) and len(parts) in (2, 3):
            last = parts[-1]
            if len(last) == 1 and isinstance(last[0], str) and _re_number.match(last[0]):
                number = _re_number.match(last[0]).group(1)
                if len(parts) == 2:
                    return _Scheduled(None, parts[0], number), end
                return _Scheduled(parts[0], parts[1], number), end
            if not last:
                return None, pos
        literal = []
        for index, nodes in enumerate(parts):
            if index:
                literal.append(separators[index - 1])
            literal.extend(nodes)
        return ("lit", "[", literal, "]"), end

    nodes, _, _ = parse_sequence(0, "")
    return nodes


def _walk(nodes):
    for node in nodes:
        yield node
        if isinstance(node, _Scheduled):
            yield from _walk(node.before or [])
            yield from _walk(node.after)
        elif isinstance(node, _Alternate):
            for option in node.options:
                yield from _walk(option)
        elif isinstance(node, tuple):
            yield from _walk(node[2])


def _render(nodes, step):
    out = []
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Scheduled):
            out.append(_render(node.before or [], step) if step <= node.when else _render(node.after, step))
        elif isinstance(node, _Alternate):
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
        else:
            out.append(node[1] + _render(node[2], step) + node[3])
    return "".join(out)


def get_learned_conditioning_prompt_schedules(prompts, base_steps, hires_steps=None, use_old_scheduling=False):
    # mirrors prompt_parser.get_learned_conditioning_prompt_schedules: for each prompt, a list of
    # [end_at_step, text]; "when" with a decimal point is a fraction of the steps (offset by 1 in the
    # hires pass), without one an absolute step (offset by the first-pass steps in the hires pass)
    if hires_steps is None or use_old_scheduling:
        int_offset, flt_offset, steps = 0, 0, base_steps
    else:
        int_offset, flt_offset, steps = base_steps, 1.0, hires_steps

    def schedule_of(prompt):
        try:
            tree = _parse(prompt)
        except Exception:
            return [[steps, prompt]]
        boundaries = {steps}
        for node in _walk(tree):
            if isinstance(node, _Scheduled):
                value = float(node.when_text)
                if use_old_scheduling:
                    value = value * steps if value < 1 else value
                elif "." in node.when_text:
                    value = (value - flt_offset) * steps
                else:
                    value = value - int_offset
                node.when = min(steps, int(value))
                if node.when >= 1:
                    boundaries.add(node.when)
            elif isinstance(node, _Alternate):
                boundaries.update(range(1, steps + 1))
        return [[t, _render(tree, t)] for t in sorted(boundaries)]

    by_prompt = {prompt: schedule_of(prompt) for prompt in set(prompts)}
    return [by_prompt[prompt] for prompt in prompts]


ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])


class SdConditioning(list):
    # mirrors prompt_parser.SdConditioning: a list of prompts that also carries width/height and
    # whether it holds negative prompts
    def __init__(self, prompts, is_negative_prompt=False, width=None, height=None, copy_from=None):
        super().__init__()
        self.extend(prompts)
        if copy_from is None:
            copy_from = prompts
        self.is_negative_prompt = is_negative_prompt or getattr(copy_from, "is_negative_prompt", False)
        self.width = width or getattr(copy_from, "width", None)
        self.height = height or getattr(copy_from, "height", None)


def get_learned_conditioning(model, prompts: SdConditioning | list[str], steps, hires_steps=None, use_old_scheduling=False):
    # mirrors prompt_parser.get_learned_conditioning: one model call per distinct prompt, encoding all
    # texts of its schedule; returns a list (one per prompt) of ScheduledPromptConditioning lists
    result = []
    schedules = get_learned_conditioning_prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
    cache = {}

    for prompt, schedule in zip(prompts, schedules):
        cached = cache.get(prompt, None)
        if cached is not None:
            result.append(cached)
            continue

        texts = SdConditioning([x[1] for x in schedule], copy_from=prompts)
        conds = model.get_learned_conditioning(texts)

        cond_schedule = []
        for i, (end_at_step, _) in enumerate(schedule):
            cond = {k: v[i] for k, v in conds.items()} if isinstance(conds, dict) else conds[i]
            cond_schedule.append(ScheduledPromptConditioning(end_at_step, cond))

        cache[prompt] = cond_schedule
        result.append(cond_schedule)

    return result


re_AND = re.compile(r"\bAND\b")
re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")


def get_multicond_prompt_list(prompts: SdConditioning | list[str]):
    # mirrors prompt_parser.get_multicond_prompt_list: splits on AND, reads ":weight" suffixes, and
    # deduplicates sub-prompt texts across the whole batch
    res_indexes = []
    prompt_indexes = {}
    prompt_flat_list = SdConditioning(prompts)
    prompt_flat_list.clear()

    for prompt in prompts:
        indexes = []
        for subprompt in re_AND.split(prompt):
            match = re_weight.search(subprompt)
            text, weight = match.groups() if match is not None else (subprompt, 1.0)
            weight = float(weight) if weight is not None else 1.0

            index = prompt_indexes.get(text, None)
            if index is None:
                index = len(prompt_flat_list)
                prompt_flat_list.append(text)
                prompt_indexes[text] = index
            indexes.append((index, weight))
        res_indexes.append(indexes)

    return res_indexes, prompt_flat_list, prompt_indexes


class ComposableScheduledPromptConditioning:
    def __init__(self, schedules, weight=1.0):
        self.schedules: list[ScheduledPromptConditioning] = schedules
        self.weight: float = weight


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape: tuple = shape
        self.batch: list[list[ComposableScheduledPromptConditioning]] = batch


def get_multicond_learned_conditioning(
    model, prompts, steps, hires_steps=None, use_old_scheduling=False
) -> MulticondLearnedConditioning:
    # mirrors prompt_parser.get_multicond_learned_conditioning
    res_indexes, prompt_flat_list, _ = get_multicond_prompt_list(prompts)
    learned = get_learned_conditioning(model, prompt_flat_list, steps, hires_steps, use_old_scheduling)
    batch = [[ComposableScheduledPromptConditioning(learned[i], weight) for i, weight in indexes] for indexes in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


class DictWithShape(dict):
    # mirrors prompt_parser.DictWithShape: an SDXL cond dict whose .shape is that of "crossattn"
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


def _current_index(schedule, current_step):
    for index, entry in enumerate(schedule):
        if current_step <= entry.end_at_step:
            return index
    return 0


def reconstruct_cond_batch(c: list[list[ScheduledPromptConditioning]], current_step):
    # mirrors prompt_parser.reconstruct_cond_batch: one row per prompt, taken from the schedule entry
    # current at this step. Like the real one it fails if the prompts have different token lengths.
    param = c[0][0].cond
    is_dict = isinstance(param, dict)

    if is_dict:
        result = {k: torch.zeros((len(c),) + v.shape, device=v.device, dtype=v.dtype) for k, v in param.items()}
        result = DictWithShape(result, (len(c),) + param["crossattn"].shape)
    else:
        result = torch.zeros((len(c),) + param.shape, device=param.device, dtype=param.dtype)

    for i, schedule in enumerate(c):
        target = schedule[_current_index(schedule, current_step)].cond
        if is_dict:
            for k, v in target.items():
                result[k][i] = v
        else:
            result[i] = target

    return result


def stack_conds(tensors):
    # mirrors prompt_parser.stack_conds: pads shorter conds by repeating their last row
    token_count = max(x.shape[0] for x in tensors)
    for i in range(len(tensors)):
        if tensors[i].shape[0] != token_count:
            last = tensors[i][-1:]
            tensors[i] = torch.vstack([tensors[i], last.repeat([token_count - tensors[i].shape[0], 1])])
    return torch.stack(tensors)


def reconstruct_multicond_batch(c: MulticondLearnedConditioning, current_step):
    # mirrors prompt_parser.reconstruct_multicond_batch: one row per AND sub-prompt, images in order;
    # conds_list[i] = [(row index, weight), ...] for image i
    param = c.batch[0][0].schedules[0].cond
    tensors = []
    conds_list = []

    for composable_prompts in c.batch:
        conds_for_image = []
        for composable in composable_prompts:
            target = composable.schedules[_current_index(composable.schedules, current_step)].cond
            conds_for_image.append((len(tensors), composable.weight))
            tensors.append(target)
        conds_list.append(conds_for_image)

    if isinstance(tensors[0], dict):
        keys = list(tensors[0].keys())
        stacked = {k: stack_conds([x[k] for x in tensors]) for k in keys}
        stacked = DictWithShape(stacked, stacked["crossattn"].shape)
    else:
        stacked = stack_conds(tensors).to(device=param.device, dtype=param.dtype)

    return conds_list, stacked


re_attention = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)

re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    # mirrors prompt_parser.parse_prompt_attention: [[text, weight], ...] with (x)=*1.1, [x]=/1.1,
    # (x:w)=*w, escapes, BREAK as ["BREAK", -1], runs of equal weight merged
    res = []
    round_brackets = []
    square_brackets = []

    def multiply_range(start, multiplier):
        for p in range(start, len(res)):
            res[p][1] *= multiplier

    for m in re_attention.finditer(text):
        piece = m.group(0)
        weight = m.group(1)

        if piece.startswith("\\"):
            res.append([piece[1:], 1.0])
        elif piece == "(":
            round_brackets.append(len(res))
        elif piece == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif piece == ")" and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif piece == "]" and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(re.split(re_break, piece)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])

    for pos in round_brackets:
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)

    if len(res) == 0:
        res = [["", 1.0]]

    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1

    return res
