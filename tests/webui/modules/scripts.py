"""Stand-in for modules/scripts.py: the ``Script`` base class extensions subclass, the loading of script
files, and ``ScriptRunner``, which builds each tab's script UIs and calls the scripts' hooks.

How the pieces meet, as in the real host:

- ``load_scripts()`` executes every script file (the WebUI root's ``scripts/``, each active extension's
  ``scripts/``, then ``modules/processing_scripts/``) and records every ``Script`` subclass found in it
  in ``scripts_data``. It first forgets all script_callbacks registrations, since the files register
  theirs again when they run.
- Each tab has a runner (``scripts_txt2img`` / ``scripts_img2img``) that makes one instance per class.
  ``show()`` returning ``AlwaysVisible`` makes an always-on script (its UI is always there and its hooks
  run on every generation); another true value makes a selectable script (an entry of the "Script"
  dropdown, run by ``run()`` instead of the normal processing).
- The UI's inputs are one flat list: index 0 is the "Script" dropdown (the 1-based index of the selected
  script, 0 for none), then every script's controls. ``args_from`` / ``args_to`` delimit a script's own
  slice, which is what its hooks receive after ``p`` (``p.script_args[args_from:args_to]``).
- Every hook runner calls the always-on scripts that override the hook, in load order; an exception
  from one script is reported with ``errors.report`` and the others still run (the real runners catch
  it the same way, so a failing ``process()`` does not stop the generation).

Simplified: no ordering by the extensions' metadata.ini (Requires / Before / After) or by the user's
callback-order settings, no Extras-tab runner and no element-id component callbacks
(``Script.on_before_component``); ``api_info`` is left None (nothing reads the script list endpoint).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections import namedtuple
from typing import Any, Callable, List

import gradio as gr

from modules import errors, extensions, paths, script_callbacks, script_loading, scripts_postprocessing, shared
from modules.util import keep_arguments

AlwaysVisible = object()
"""What ``Script.show`` returns for an always-on script (modules/scripts.py AlwaysVisible)."""


class MaskBlendArgs:
    """scripts.py MaskBlendArgs, passed to ``on_mask_blend``: an inpainting blend of the current latent
    with the original one. Without a ``denoiser`` it is the final blend after sampling."""

    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        keep_arguments(self, locals())
        self.is_final_blend = denoiser is None


class PostSampleArgs:
    """scripts.py PostSampleArgs, passed to ``post_sample``: the sampled latents, before decoding."""

    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    """scripts.py PostprocessImageArgs, passed to ``postprocess_image*``: one image; assigning
    ``image`` replaces it."""

    def __init__(self, image):
        self.image = image


class PostProcessMaskOverlayArgs:
    """scripts.py PostProcessMaskOverlayArgs, passed to ``postprocess_maskoverlay``."""

    def __init__(self, index, mask_for_overlay, overlay_image):
        keep_arguments(self, locals())


class PostprocessBatchListArgs:
    """scripts.py PostprocessBatchListArgs, passed to ``postprocess_batch_list``: the batch's images as a
    list a script may change the length of."""

    def __init__(self, images):
        self.images = images


class Script:
    """modules/scripts.py Script. Subclasses override ``title``, ``show``, ``ui`` and the hooks they need,
    and may set ``section`` (the settings-column section of an always-on script's UI), ``create_group``,
    ``infotext_fields`` / ``paste_field_names`` (from ``ui``)."""

    # set by the runner (name: the lowercase title, once the script has a UI)
    name = filename = tabname = group = controls = api_info = None
    args_from: int | None = None
    args_to: int | None = None
    alwayson = is_txt2img = is_img2img = False
    # a subclass's choices
    section: str | None = None
    create_group = True
    setup_for_ui_only = False
    infotext_fields = paste_field_names = None

    # what the script is and shows
    def show(self, is_img2img):
        """False: hidden on this tab; AlwaysVisible: always on; another true value: selectable."""
        return True

    def title(self):
        """The name in the "Script" dropdown / the API's alwayson_scripts key."""
        raise NotImplementedError("a Script must have a title")

    def ui(self, is_img2img):
        """Build the components; return the ones whose values the hooks receive, in order."""

    def run(self, p, *args):
        """A selectable script's replacement of process_images; returns the Processed."""

    # hooks of always-on scripts, in the order processing calls them
    def setup(self, p, *args):
        """Right after p is made, before anything else (once, even for an X/Y/Z plot)."""

    def before_process(self, p, *args):
        """First thing in process_images, before override settings are applied."""

    def process(self, p, *args):
        """After the prompts and seeds are set up, before sampling starts."""

    def before_process_batch(self, p, *args, **kwargs):
        """Per batch, before its prompts are parsed; kwargs batch_number, prompts, seeds, subseeds."""

    def after_extra_networks_activate(self, p, *args, **kwargs):
        """Per batch, once the prompt's extra networks are active; kwargs include extra_network_data."""

    def process_batch(self, p, *args, **kwargs):
        """Per batch, right before sampling; kwargs batch_number, prompts, seeds, subseeds."""

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Before each sampling pass (the hires pass too); kwargs x, noise, c, uc."""

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        """Inpainting: whenever the latent is blended with the original under the mask."""

    def post_sample(self, p, ps: PostSampleArgs, *args):
        """Per batch, after sampling, before the latents are decoded."""

    def postprocess_batch(self, p, *args, **kwargs):
        """Per batch, on the decoded images tensor; kwargs images, batch_number."""

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        """Per batch, on the decoded images as a list; kwargs batch_number."""

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        """Per image, before it is saved."""

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs, *args):
        """Per inpainted image, before its mask overlay is drawn."""

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        """Per inpainted image, after it was composited over the original."""

    def postprocess(self, p, processed, *args):
        """Once, with the finished Processed."""

    def before_hr(self, p, *args):
        """Before the hires fix's second pass."""

    # UI construction hooks (every script, not only always-on ones)
    def before_component(self, component, **kwargs):
        """Before any gradio component of the tab is created; kwargs are its constructor's."""

    def after_component(self, component, **kwargs):
        """After any gradio component of the tab is created."""

    def _tab_prefix(self) -> str:
        # the tab goes into element ids only when the script shows the same way on both tabs
        if self.show(True) != self.show(False):
            return ""
        return ("img2img" if self.is_img2img else "txt2img") + "_"

    def elem_id(self, item_id):
        """scripts.py Script.elem_id: ``script_[<tab>_]<title as an identifier>_<item_id>``."""
        slug = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{self._tab_prefix()}{slug}_{item_id}"


class ScriptBuiltinUI(Script):
    """scripts.py ScriptBuiltinUI: the WebUI's own controls written as scripts (sampler, seed, refiner).
    Their element ids are the plain ``[<tab>_]<item_id>``, and ``setup`` is skipped for API requests."""

    setup_for_ui_only = True

    def show(self, is_img2img):
        return AlwaysVisible

    def elem_id(self, item_id):
        return f"{self._tab_prefix()}{item_id}"


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])

scripts_data: List[ScriptClassData] = []
"""Every Script subclass found by load_scripts, in load order (extensions find the X/Y/Z plot here)."""
postprocessing_scripts_data: List[ScriptClassData] = []
"""Every Extras-tab (ScriptPostprocessing) class found by load_scripts."""

current_basedir = paths.script_path


def basedir():
    """scripts.py basedir: while a script file runs, the folder of the extension it belongs to (the WebUI
    root for the host's own scripts); the WebUI root at any other time."""
    return current_basedir


def _files_in(root: str, subdir: str) -> List[ScriptFile]:
    folder = os.path.join(root, subdir)
    if not os.path.isdir(folder):
        return []
    found = [ScriptFile(root, name, os.path.join(folder, name)) for name in sorted(os.listdir(folder))]
    return [entry for entry in found if entry.filename.lower().endswith(".py") and os.path.isfile(entry.path)]


def _script_files() -> List[ScriptFile]:
    """scripts.py list_scripts, without metadata.ini ordering: the root's scripts, each active
    extension's (in the extensions' order), then the built-in processing scripts."""
    found = _files_in(paths.script_path, "scripts")
    for extension in extensions.active():
        found += _files_in(extension.path, "scripts")
    return found + _files_in(paths.script_path, os.path.join("modules", "processing_scripts"))


def _collect_classes(module, source: ScriptFile) -> None:
    # every class in the module's namespace counts, imported ones included, as in the real loader
    classes = [value for value in list(vars(module).values()) if inspect.isclass(value)]
    for kind, found in ((Script, scripts_data), (scripts_postprocessing.ScriptPostprocessing, postprocessing_scripts_data)):
        found += [ScriptClassData(cls, source.path, source.basedir, module) for cls in classes if issubclass(cls, kind)]


def load_scripts():
    """scripts.py load_scripts: forget the script classes and all callbacks, execute every script file
    again (an extension's folder first on sys.path, and returned by basedir(), while its file runs; a
    file that fails is reported and skipped), then make fresh runners for both tabs. Modules the script
    files import stay in sys.modules."""
    global current_basedir, scripts_txt2img, scripts_img2img
    scripts_data.clear()
    postprocessing_scripts_data.clear()
    script_callbacks.clear_callbacks()

    for source in _script_files():
        saved_path = sys.path
        if source.basedir != paths.script_path:
            sys.path = [source.basedir, *saved_path]
        current_basedir = source.basedir
        try:
            _collect_classes(script_loading.load_module(source.path), source)
        except Exception:
            errors.report(f"Error loading script: {source.filename}", exc_info=True)
        finally:
            sys.path = saved_path
            current_basedir = paths.script_path

    scripts_txt2img = ScriptRunner()
    scripts_img2img = ScriptRunner()


def wrap_call(func: Callable, filename: str, funcname: str, *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """scripts.py wrap_call: call a script's method; on an exception report it and return ``default``."""
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
        return default


_HOOKS = (
    "before_process process before_process_batch after_extra_networks_activate process_batch process_before_every_sampling "
    "on_mask_blend post_sample postprocess_batch postprocess_batch_list postprocess_image postprocess_maskoverlay "
    "postprocess_image_after_composite postprocess before_hr"
).split()
"""The hook runners ScriptRunner gets (see ``_hook_runner``)."""

_COMPONENT_HOOKS = ("before_component", "after_component")


def _instantiate(data: ScriptClassData) -> Script | None:
    try:
        return data.script_class()
    except Exception:
        errors.report(f"Error # failed to initialize Script {data.module}: ", exc_info=True)
        return None


class ScriptRunner:
    """modules/scripts.py ScriptRunner: one tab's script instances, their UI inputs and hook runners.

    Each hook runner ``runner.<hook>(p, *leading, **kwargs)`` calls ``script.<hook>(p, *leading,
    *script_args, **kwargs)`` for the always-on scripts overriding it; ``postprocess_batch(p, images,
    **kwargs)`` passes the images as the keyword ``images``, as the real one does."""

    def __init__(self):
        self.scripts: List[Script] = []
        self.selectable_scripts: List[Script] = []
        self.alwayson_scripts: List[Script] = []
        self.titles: List[str] = []
        self.title_map: dict = {}
        self.infotext_fields: list = []
        self.paste_field_names: list = []
        self.inputs: list = [None]

    def initialize_scripts(self, is_img2img):
        """scripts.py ScriptRunner.initialize_scripts: one instance of every loaded class, sorted into
        always-on and selectable by its ``show()``; a constructor that raises is reported and skipped."""
        for kept in (self.scripts, self.alwayson_scripts, self.selectable_scripts):
            kept.clear()
        tab = "img2img" if is_img2img else "txt2img"
        for data in scripts_data:
            script = _instantiate(data)
            if script is None:
                continue
            vars(script).update(filename=data.path, is_img2img=is_img2img, is_txt2img=not is_img2img, tabname=tab)
            shown = script.show(is_img2img)
            if not shown:
                continue
            script.alwayson = shown == AlwaysVisible
            (self.alwayson_scripts if script.alwayson else self.selectable_scripts).append(script)
            self.scripts.append(script)

    def prepare_ui(self):
        """scripts.py ScriptRunner.prepare_ui: the tab's inputs start over, with the dropdown's place."""
        self.inputs = [None]

    def create_script_ui(self, script):
        """scripts.py ScriptRunner.create_script_ui: call ``ui()`` and append its controls to the inputs;
        ``args_from``/``args_to`` become the script's slice (empty without a UI)."""
        script.args_from = script.args_to = len(self.inputs)
        try:
            controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
            script.controls = controls
            if controls is None:
                return
            script.name = wrap_call(script.title, script.filename, "title", default=script.filename).lower()
            self.infotext_fields += script.infotext_fields or []
            self.paste_field_names += script.paste_field_names or []
            self.inputs += controls
            script.args_to = len(self.inputs)
        except Exception:
            errors.report(f"Error creating UI for {script.name}: ", exc_info=True)

    def setup_ui_for_section(self, section, scriptlist=None):
        """scripts.py ScriptRunner.setup_ui_for_section: the UIs of the always-on scripts placed in
        ``section`` (or of ``scriptlist``), each inside its own gr.Group unless ``create_group`` is
        False; a selectable script's group starts hidden."""
        for script in self.alwayson_scripts if scriptlist is None else scriptlist:
            if script.alwayson and script.section != section:
                continue
            if not script.create_group:
                self.create_script_ui(script)
                continue
            with gr.Group(visible=script.alwayson) as group:
                self.create_script_ui(script)
            script.group = group

    def setup_ui(self):
        """scripts.py ScriptRunner.setup_ui: the section-less always-on UIs, the "Script" dropdown
        (inputs[0], an index), then the selectable scripts' hidden UIs; selecting a script shows its
        group, and pasting an infotext with "Script: <title>" selects it."""

        def title_of(script, fallback):
            return wrap_call(script.title, script.filename, "title") or fallback

        self.title_map = {title_of(script, script.filename).lower(): script for script in self.scripts}
        self.titles = [title_of(script, f"{script.filename} [error]") for script in self.selectable_scripts]

        self.setup_ui_for_section(None)
        dropdown = gr.Dropdown(label="Script", elem_id="script_list", choices=["None", *self.titles], value="None", type="index")
        self.inputs[0] = dropdown
        self.setup_ui_for_section(None, self.selectable_scripts)

        def show_selected(index):
            chosen = self.selectable_scripts[index - 1] if index else None
            return [gr.update(visible=script is chosen) for script in self.selectable_scripts]

        dropdown.change(fn=show_selected, inputs=[dropdown], outputs=[script.group for script in self.selectable_scripts])

        self.infotext_fields.append((dropdown, lambda params: gr.update(value=params.get("Script", "None"))))

        def shown_when_pasted(title):
            return lambda params: gr.update(visible=params.get("Script") == title)

        for title, script in zip(self.titles, self.selectable_scripts):
            self.infotext_fields.append((script.group, shown_when_pasted(title)))
        return self.inputs

    def script(self, title):
        """The script instance titled ``title`` (any case), or None."""
        return self.title_map.get(title.lower())

    def run(self, p, *args):
        """scripts.py ScriptRunner.run: the selected script's ``run`` with its slice of ``args``, or None
        when args[0] selects none. Its exceptions propagate."""
        index = args[0]
        if not index:
            return None
        script = self.selectable_scripts[index - 1]
        processed = script.run(p, *args[script.args_from : script.args_to])
        shared.total_tqdm.clear()
        return processed

    def ordered_scripts(self, method_name):
        """The scripts whose class overrides ``method_name``, in load order: the always-on ones for
        processing hooks, all of the tab's scripts for the component hooks."""
        candidates = self.scripts if method_name in _COMPONENT_HOOKS else self.alwayson_scripts
        inherited = getattr(Script, method_name, None)
        return [script for script in candidates if getattr(type(script), method_name, None) is not inherited]

    def _call_hook(self, method_name: str, p, leading: tuple, kwargs: dict) -> None:
        for script in self.ordered_scripts(method_name):
            try:
                own_args = p.script_args[script.args_from : script.args_to]
                getattr(script, method_name)(p, *leading, *own_args, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        """scripts.py ScriptRunner.setup_scrips (sic): every ``setup``, except the built-in UI scripts'
        for API requests."""
        for script in self.ordered_scripts("setup"):
            if script.setup_for_ui_only and not is_ui:
                continue
            try:
                script.setup(p, *p.script_args[script.args_from : script.args_to])
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def _call_component_hook(self, method_name: str, component, kwargs: dict) -> None:
        for script in self.ordered_scripts(method_name):
            try:
                getattr(script, method_name)(component, **kwargs)
            except Exception:
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def before_component(self, component, **kwargs):
        """scripts.py ScriptRunner.before_component: every script's before_component."""
        self._call_component_hook("before_component", component, kwargs)

    def after_component(self, component, **kwargs):
        """scripts.py ScriptRunner.after_component: every script's after_component."""
        self._call_component_hook("after_component", component, kwargs)


def _hook_runner(method_name: str) -> Callable:
    def run_hook(self, p, *leading, **kwargs):
        if method_name == "postprocess_batch":
            (kwargs["images"],) = leading
            leading = ()
        self._call_hook(method_name, p, leading, kwargs)

    run_hook.__name__ = run_hook.__qualname__ = method_name
    run_hook.__doc__ = f"scripts.py ScriptRunner.{method_name}: every always-on script's {method_name}, errors reported."
    return run_hook


for _method_name in _HOOKS:
    setattr(ScriptRunner, _method_name, _hook_runner(_method_name))


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
scripts_current: ScriptRunner | None = None
"""The runner whose tab the UI is building (its component hooks fire), None otherwise."""
