"""MasaCtrl for the AUTOMATIC1111 WebUI: the script the WebUI loads, and the callbacks it registers.

Everything it does is delegated: the WebUI adapter is ``lib_masactrl.webui`` (the only code that
reads WebUI state), the engine the rest of ``lib_masactrl``. The WebUI runs this file again on
*Reload UI* and clears the callbacks before, so the bootstrap lines at the bottom register each
callback exactly once per load.
"""

from __future__ import annotations

from typing import Any, List

from lib_masactrl.webui import compat, denoiser, generation, infotext, options, ui, xyz
from modules import script_callbacks, scripts


class MasaCtrlScript(scripts.Script):
    def title(self) -> str:
        return "MasaCtrl"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> List[Any]:
        problem = compat.host_problem()
        accordion = ui.build_unsupported(self.elem_id, problem) if problem else ui.build(self.elem_id, is_img2img)
        self.infotext_fields = accordion.infotext_fields
        # "Send to img2img" copies the fields named here from tab to tab; MasaCtrl's settings mean
        # other things on the two tabs, so none is copied.
        self.paste_field_names = []
        return accordion.ordered

    def process(self, p: Any, *args: Any) -> None:
        generation.start(p, args)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        generation.before_sampling(p, **kwargs)

    def post_sample(self, p: Any, ps: Any, *args: Any) -> None:
        generation.after_sampling(p, ps)

    def postprocess_batch_list(self, p: Any, pp: Any, *args: Any, **kwargs: Any) -> None:
        generation.drop_hidden_sources(p, pp)

    def postprocess_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        generation.end_batch(p)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        generation.finish(p, processed)


compat.announce()
script_callbacks.on_cfg_denoiser(denoiser.on_cfg_denoiser)
script_callbacks.on_ui_settings(options.on_ui_settings)
script_callbacks.on_infotext_pasted(infotext.on_infotext_pasted)
script_callbacks.on_model_loaded(generation.on_model_loaded)
script_callbacks.on_script_unloaded(generation.on_script_unloaded)
# The X/Y/Z plot takes its axis list when its UI is built, which with --nowebui happens before the
# before_ui callbacks (webui.py, api_only): add the axes now too; the plot script loads first.
xyz.register_axes()
script_callbacks.on_before_ui(xyz.register_axes)
