# mirrors modules/processing_scripts/comments.py ScriptStripComments: an alwayson script whose process()
# removes "#..." comments from all prompts when opts.enable_prompt_comments is on (the default); it
# also registers the option and a before_token_counter callback at load time, like the real file.
import re

from modules import script_callbacks, scripts, shared


def strip_comments(text):
    text = re.sub("(^|\n)#[^\n]*(\n|$)", "\n", text)  # a whole-line comment
    text = re.sub("#[^\n]*(\n|$)", "\n", text)  # a comment after text on the line
    return text


class ScriptStripComments(scripts.Script):
    def title(self):
        return "Comments"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def process(self, p, *args):
        if not shared.opts.enable_prompt_comments:
            return

        p.all_prompts = [strip_comments(x) for x in p.all_prompts]
        p.all_negative_prompts = [strip_comments(x) for x in p.all_negative_prompts]
        p.main_prompt = strip_comments(p.main_prompt)
        p.main_negative_prompt = strip_comments(p.main_negative_prompt)

        if getattr(p, "enable_hr", False):
            p.all_hr_prompts = [strip_comments(x) for x in p.all_hr_prompts]
            p.all_hr_negative_prompts = [strip_comments(x) for x in p.all_hr_negative_prompts]
            p.hr_prompt = strip_comments(p.hr_prompt)
            p.hr_negative_prompt = strip_comments(p.hr_negative_prompt)


def before_token_counter(params: script_callbacks.BeforeTokenCounterParams):
    if not shared.opts.enable_prompt_comments:
        return
    params.prompt = strip_comments(params.prompt)


script_callbacks.on_before_token_counter(before_token_counter)

shared.options_templates.update(
    shared.options_section(
        ("sd", "Stable Diffusion", "sd"),
        {
            "enable_prompt_comments": shared.OptionInfo(True, "Enable comments"),
        },
    )
)
