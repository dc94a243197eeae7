"""What the infotext holds beyond the field table, and pasting it back."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from ..fields import fill_pasted_defaults, recorded_inversion
from ..pairing import Pairing
from . import options

TARGET_PROMPT_KEY = "MasaCtrl target prompt"


def main_prompt_of_sources(pairing: Pairing, main_prompts: Sequence[str]) -> Callable[..., str | None]:
    """Infotext value for source images: the main prompt they replaced. A source image's own prompt
    is the source prompt, so pasting its parameters would otherwise make the source prompt the
    main prompt. ``create_infotext`` calls it with its locals: ``all_prompts`` is one batch's
    prompts (with ``index`` in the batch, ``p.iteration`` the batch) or the whole generation's."""

    def value(p: Any = None, all_prompts: Sequence[str] | None = None, index: int = 0, **_: Any) -> str | None:
        if not all_prompts or len(all_prompts) % len(pairing) or pairing.is_target(index):
            return None
        if len(all_prompts) != len(main_prompts):
            index += getattr(p, "iteration", 0) * len(all_prompts)
        return main_prompts[index] if index < len(main_prompts) else None

    return value


def on_infotext_pasted(infotext: str, params: Dict[str, Any]) -> None:
    if TARGET_PROMPT_KEY in params:
        params["Prompt"] = params.pop(TARGET_PROMPT_KEY)
    if recorded_inversion(params):
        params.setdefault(options.READS_INFOTEXT, options.READS_BEFORE.value)
    fill_pasted_defaults(params)
