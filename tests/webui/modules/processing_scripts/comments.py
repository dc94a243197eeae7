"""Stand-in for ``modules/processing_scripts/comments.py`` (WebUI v1.10.1): "#" comments in prompts.
Loading it registers the "enable_prompt_comments" option and a token-counter callback, as the real
file does."""

import re

from modules import script_callbacks, scripts, shared

# a comment on a line of its own goes with its line break; one after text leaves the line break
_COMMENTS = (re.compile("(^|\n)#[^\n]*(\n|$)"), re.compile("#[^\n]*(\n|$)"))


def strip_comments(text: str) -> str:
    for pattern in _COMMENTS:
        text = pattern.sub("\n", text)
    return text


class ScriptStripComments(scripts.Script):
    """comments.py ``ScriptStripComments``: with opts.enable_prompt_comments (the default), its
    ``process()`` removes comments from every prompt on ``p``, the hires prompts included."""

    def process(self, p, *args):
        if not shared.opts.enable_prompt_comments:
            return
        hires = getattr(p, "enable_hr", False)
        for name in ("main_prompt", "main_negative_prompt", *(("hr_prompt", "hr_negative_prompt") if hires else ())):
            setattr(p, name, strip_comments(getattr(p, name)))
        for name in ("all_prompts", "all_negative_prompts", *(("all_hr_prompts", "all_hr_negative_prompts") if hires else ())):
            setattr(p, name, [strip_comments(text) for text in getattr(p, name)])

    def title(self):
        return "Comments"

    def show(self, is_img2img):
        return scripts.AlwaysVisible


def before_token_counter(params: script_callbacks.BeforeTokenCounterParams):
    if shared.opts.enable_prompt_comments:
        params.prompt = strip_comments(params.prompt)


script_callbacks.on_before_token_counter(before_token_counter)
option = {"enable_prompt_comments": shared.OptionInfo(True, "Enable comments")}
shared.options_templates.update(shared.options_section(("sd", "Stable Diffusion", "sd"), option))
