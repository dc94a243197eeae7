"""What the infotext holds beyond the field table, and pasting it back."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

from ..fields import fill_pasted_defaults, recorded_inversion
from ..pairing import Pairing
from . import options

TARGET_PROMPT_KEY = "MasaCtrl target prompt"


def target_prompt_of_sources(pairing: Pairing) -> Callable[..., str | None]:
    """Infotext value for source images: the main prompt, which their targets have. A source
    image's own prompt is the source prompt, so pasting its parameters would otherwise make the
    source prompt the main prompt. ``create_infotext`` calls it with its locals (``all_prompts``,
    ``index``)."""

    def value(all_prompts: Sequence[str] | None = None, index: int = 0, **_: Any) -> str | None:
        if not all_prompts or len(all_prompts) % len(pairing) or pairing.is_target(index):
            return None
        reader = pairing.reader_of(index)
        return None if reader is None else all_prompts[reader]

    return value


def on_infotext_pasted(infotext: str, params: Dict[str, Any]) -> None:
    if TARGET_PROMPT_KEY in params:
        params["Prompt"] = params.pop(TARGET_PROMPT_KEY)
    if recorded_inversion(params):
        params.setdefault(options.READS_INFOTEXT, options.READS_BEFORE.value)
    fill_pasted_defaults(params)
