"""Mirrors modules/scripts.py: the Script base class, script loading, and ScriptRunner.

Every hook runner calls the hook of each alwayson script that overrides it, in callback order, with
``p.script_args[script.args_from:script.args_to]``; an exception from one script is reported with
errors.report and the loop goes on, exactly as the real runners do."""

import inspect
import os
import re
import sys
from collections import namedtuple
from dataclasses import dataclass

import gradio as gr

from modules import errors, extensions, paths, script_callbacks, script_loading, scripts_postprocessing, shared, timer, util

topological_sort = util.topological_sort

AlwaysVisible = object()


class MaskBlendArgs:
    # mirrors scripts.MaskBlendArgs: is_final_blend when no denoiser is given (the blend after sampling)
    def __init__(self, current_latent, nmask, init_latent, mask, blended_latent, denoiser=None, sigma=None):
        self.current_latent = current_latent
        self.nmask = nmask
        self.init_latent = init_latent
        self.mask = mask
        self.blended_latent = blended_latent
        self.denoiser = denoiser
        self.is_final_blend = denoiser is None
        self.sigma = sigma


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostProcessMaskOverlayArgs:
    def __init__(self, index, mask_for_overlay, overlay_image):
        self.index = index
        self.mask_for_overlay = mask_for_overlay
        self.overlay_image = overlay_image


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


@dataclass
class OnComponent:
    component: gr.blocks.Block


class Script:
    # mirrors scripts.Script: the attributes and the (empty) hooks an extension overrides
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    on_before_component_elem_id = None
    on_after_component_elem_id = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, *args, **kwargs):
        pass

    def on_mask_blend(self, p, mba: MaskBlendArgs, *args):
        pass

    def post_sample(self, p, ps: PostSampleArgs, *args):
        pass

    def postprocess_image(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs, *args):
        pass

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_component(self, component, **kwargs):
        pass

    def after_component(self, component, **kwargs):
        pass

    def on_before_component(self, callback, *, elem_id):
        if self.on_before_component_elem_id is None:
            self.on_before_component_elem_id = []
        self.on_before_component_elem_id.append((elem_id, callback))

    def on_after_component(self, callback, *, elem_id):
        if self.on_after_component_elem_id is None:
            self.on_after_component_elem_id = []
        self.on_after_component_elem_id.append((elem_id, callback))

    def describe(self):
        return ""

    def elem_id(self, item_id):
        # mirrors Script.elem_id: "script_[<tab>_]<title as identifier>_<item_id>"; the tab name is only
        # added when the script shows the same way on both tabs
        need_tabname = self.show(True) == self.show(False)
        tabname = f"{'img2img' if self.is_img2img else 'txt2img'}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"

    def before_hr(self, p, *args):
        pass


class ScriptBuiltinUI(Script):
    # mirrors scripts.ScriptBuiltinUI: the built-in sampler/seed/refiner controls (setup() only for UI runs)
    setup_for_ui_only = True

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tabname = ("img2img" if self.is_img2img else "txt2img") + "_" if need_tabname else ""
        return f"{tabname}{item_id}"

    def show(self, is_img2img):
        return AlwaysVisible


current_basedir = paths.script_path


def basedir():
    # mirrors scripts.basedir: the extension directory while its scripts load, else the WebUI root
    return current_basedir


ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])

scripts_data = []
postprocessing_scripts_data = []
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


@dataclass
class ScriptWithDependencies:
    script_canonical_name: str
    file: ScriptFile
    requires: list
    load_before: list
    load_after: list


def list_scripts(scriptdirname, extension, *, include_extensions=True):
    # mirrors scripts.list_scripts: root scripts first, then each active extension's, ordered by the
    # Requires/Before/After entries of the extensions' metadata.ini
    found = {}
    active_extensions = extensions.active()
    extension_by_name = {ext.canonical_name: ext for ext in active_extensions}
    scripts_of_extension = {ext.canonical_name: [] for ext in active_extensions}

    root = os.path.join(paths.script_path, scriptdirname)
    if os.path.exists(root):
        for filename in sorted(os.listdir(root)):
            full = os.path.join(root, filename)
            if os.path.isfile(full) and os.path.splitext(filename)[1].lower() == extension:
                found[filename] = ScriptWithDependencies(filename, ScriptFile(paths.script_path, filename, full), [], [], [])

    if include_extensions:
        for ext in active_extensions:
            for script_file in ext.list_files(scriptdirname, extension):
                if not os.path.isfile(script_file.path):
                    continue
                canonical = ("builtin/" if ext.is_builtin else "") + ext.canonical_name + "/" + script_file.filename
                relative = scriptdirname + "/" + script_file.filename
                entry = ScriptWithDependencies(
                    script_canonical_name=canonical,
                    file=script_file,
                    requires=ext.metadata.get_script_requirements("Requires", relative, scriptdirname),
                    load_before=ext.metadata.get_script_requirements("Before", relative, scriptdirname),
                    load_after=ext.metadata.get_script_requirements("After", relative, scriptdirname),
                )
                found[canonical] = entry
                scripts_of_extension[ext.canonical_name].append(entry)

    for canonical, entry in found.items():
        for before in entry.load_before:
            other = found.get(before)
            if other:
                other.load_after.append(canonical)
            for other in scripts_of_extension.get(before) or []:
                other.load_after.append(canonical)
        for after in list(entry.load_after):
            if after not in found and after in scripts_of_extension:
                entry.load_after.remove(after)
                for other in scripts_of_extension.get(after, []):
                    entry.load_after.append(other.script_canonical_name)

    dependencies = {}
    for canonical, entry in found.items():
        for required in entry.requires:
            if required not in found and required not in extension_by_name:
                errors.report(f'Script "{canonical}" requires "{required}" to be loaded, but it is not.', exc_info=False)
        dependencies[canonical] = entry.load_after

    return [found[name].file for name in topological_sort(dependencies)]


def list_files_with_name(filename):
    # mirrors scripts.list_files_with_name
    result = []
    for dirpath in [paths.script_path] + [ext.path for ext in extensions.active()]:
        if not os.path.isdir(dirpath):
            continue
        path = os.path.join(dirpath, filename)
        if os.path.isfile(path):
            result.append(path)
    return result


def load_scripts():
    # mirrors scripts.load_scripts: forgets all script classes and ALL callbacks, executes every script
    # file again (an extension's root is put in front of sys.path while its file runs, and basedir()
    # returns it), then makes fresh runners. Modules the scripts import stay in sys.modules.
    global current_basedir, scripts_txt2img, scripts_img2img, scripts_postproc
    scripts_data.clear()
    postprocessing_scripts_data.clear()
    script_callbacks.clear_callbacks()

    scripts_list = list_scripts("scripts", ".py") + list_scripts("modules/processing_scripts", ".py", include_extensions=False)

    syspath = sys.path

    def register_scripts_from_module(module, scriptfile):
        for script_class in module.__dict__.values():
            if not inspect.isclass(script_class):
                continue
            if issubclass(script_class, Script):
                scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))
            elif issubclass(script_class, scripts_postprocessing.ScriptPostprocessing):
                postprocessing_scripts_data.append(ScriptClassData(script_class, scriptfile.path, scriptfile.basedir, module))

    for scriptfile in scripts_list:
        try:
            if scriptfile.basedir != paths.script_path:
                sys.path = [scriptfile.basedir] + sys.path
            current_basedir = scriptfile.basedir
            module = script_loading.load_module(scriptfile.path)
            register_scripts_from_module(module, scriptfile)
        except Exception:
            errors.report(f"Error loading script: {scriptfile.filename}", exc_info=True)
        finally:
            sys.path = syspath
            current_basedir = paths.script_path
            timer.startup_timer.record(scriptfile.filename)

    scripts_txt2img = ScriptRunner()
    scripts_img2img = ScriptRunner()
    scripts_postproc = scripts_postprocessing.ScriptPostprocessingRunner()


def wrap_call(func, filename, funcname, *args, default=None, **kwargs):
    # mirrors scripts.wrap_call: report and return the default on an exception
    try:
        return func(*args, **kwargs)
    except Exception:
        errors.report(f"Error calling: {filename}/{funcname}", exc_info=True)
    return default


class ScriptRunner:
    # mirrors scripts.ScriptRunner
    def __init__(self):
        self.scripts = []
        self.selectable_scripts = []
        self.alwayson_scripts = []
        self.titles = []
        self.title_map = {}
        self.infotext_fields = []
        self.paste_field_names = []
        self.inputs = [None]
        self.callback_map = {}
        self.callback_names = [
            "before_process",
            "process",
            "before_process_batch",
            "after_extra_networks_activate",
            "process_batch",
            "postprocess",
            "postprocess_batch",
            "postprocess_batch_list",
            "post_sample",
            "on_mask_blend",
            "postprocess_image",
            "postprocess_maskoverlay",
            "postprocess_image_after_composite",
            "before_component",
            "after_component",
        ]
        self.on_before_component_elem_id = {}
        self.on_after_component_elem_id = {}

    def initialize_scripts(self, is_img2img):
        # mirrors ScriptRunner.initialize_scripts: one instance per script class; show() decides
        # alwayson (AlwaysVisible) / selectable (truthy) / hidden
        from modules import scripts_auto_postprocessing

        self.scripts.clear()
        self.alwayson_scripts.clear()
        self.selectable_scripts.clear()

        for script_data in scripts_auto_postprocessing.create_auto_preprocessing_script_data() + scripts_data:
            try:
                script = script_data.script_class()
            except Exception:
                errors.report(f"Error # failed to initialize Script {script_data.module}: ", exc_info=True)
                continue

            script.filename = script_data.path
            script.is_txt2img = not is_img2img
            script.is_img2img = is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"

            visibility = script.show(script.is_img2img)
            if visibility == AlwaysVisible:
                self.scripts.append(script)
                self.alwayson_scripts.append(script)
                script.alwayson = True
            elif visibility:
                self.scripts.append(script)
                self.selectable_scripts.append(script)

        self.callback_map.clear()
        self.apply_on_before_component_callbacks()

    def apply_on_before_component_callbacks(self):
        # mirrors ScriptRunner.apply_on_before_component_callbacks
        for script in self.scripts:
            on_before = script.on_before_component_elem_id or []
            on_after = script.on_after_component_elem_id or []
            for elem_id, callback in on_before:
                self.on_before_component_elem_id.setdefault(elem_id, []).append((callback, script))
            for elem_id, callback in on_after:
                self.on_after_component_elem_id.setdefault(elem_id, []).append((callback, script))
            on_before.clear()
            on_after.clear()

    def create_script_ui(self, script):
        # mirrors ScriptRunner.create_script_ui: args_from/args_to are the script's slice of the inputs
        script.args_from = len(self.inputs)
        script.args_to = len(self.inputs)
        try:
            self.create_script_ui_inner(script)
        except Exception:
            errors.report(f"Error creating UI for {script.name}: ", exc_info=True)

    def create_script_ui_inner(self, script):
        # mirrors ScriptRunner.create_script_ui_inner (api_info built from the controls as the real one)
        import modules.api.models as api_models

        controls = wrap_call(script.ui, script.filename, "ui", script.is_img2img)
        script.controls = controls
        if controls is None:
            return

        script.name = wrap_call(script.title, script.filename, "title", default=script.filename).lower()

        api_args = []
        for control in controls:
            control.custom_script_source = os.path.basename(script.filename)
            arg_info = api_models.ScriptArg(label=control.label or "")
            for field_name in ("value", "minimum", "maximum", "step"):
                v = getattr(control, field_name, None)
                if v is not None:
                    setattr(arg_info, field_name, v)
            choices = getattr(control, "choices", None)
            if choices is not None:
                arg_info.choices = [x[0] if isinstance(x, tuple) else x for x in choices]
            api_args.append(arg_info)

        script.api_info = api_models.ScriptInfo(
            name=script.name, is_img2img=script.is_img2img, is_alwayson=script.alwayson, args=api_args
        )

        if script.infotext_fields is not None:
            self.infotext_fields += script.infotext_fields
        if script.paste_field_names is not None:
            self.paste_field_names += script.paste_field_names

        self.inputs += controls
        script.args_to = len(self.inputs)

    def setup_ui_for_section(self, section, scriptlist=None):
        # mirrors ScriptRunner.setup_ui_for_section: each script's UI inside its own gr.Group unless
        # create_group is False
        if scriptlist is None:
            scriptlist = self.alwayson_scripts
        for script in scriptlist:
            if script.alwayson and script.section != section:
                continue
            if script.create_group:
                with gr.Group(visible=script.alwayson) as group:
                    self.create_script_ui(script)
                script.group = group
            else:
                self.create_script_ui(script)

    def prepare_ui(self):
        self.inputs = [None]

    def setup_ui(self):
        # mirrors ScriptRunner.setup_ui: section-less alwayson scripts, the "Script" dropdown (inputs[0]),
        # then the selectable scripts' UIs
        all_titles = [wrap_call(script.title, script.filename, "title") or script.filename for script in self.scripts]
        self.title_map = {title.lower(): script for title, script in zip(all_titles, self.scripts)}
        self.titles = [
            wrap_call(script.title, script.filename, "title") or f"{script.filename} [error]"
            for script in self.selectable_scripts
        ]

        self.setup_ui_for_section(None)

        dropdown = gr.Dropdown(label="Script", elem_id="script_list", choices=["None"] + self.titles, value="None", type="index")
        self.inputs[0] = dropdown

        self.setup_ui_for_section(None, self.selectable_scripts)

        def select_script(script_index):
            if script_index is None:
                script_index = 0
            selected = self.selectable_scripts[script_index - 1] if script_index > 0 else None
            return [gr.update(visible=selected == s) for s in self.selectable_scripts]

        def init_field(title):
            if title == "None":
                return
            self.selectable_scripts[self.titles.index(title)].group.visible = True

        dropdown.init_field = init_field
        dropdown.change(fn=select_script, inputs=[dropdown], outputs=[script.group for script in self.selectable_scripts])

        self.script_load_ctr = 0

        def onload_script_visibility(params):
            title = params.get("Script", None)
            if title:
                try:
                    title_index = self.titles.index(title)
                    visibility = title_index == self.script_load_ctr
                    self.script_load_ctr = (self.script_load_ctr + 1) % len(self.titles)
                    return gr.update(visible=visibility)
                except ValueError:
                    params["Script"] = None
                    print(f'Cannot find Script: "{title}"')
            return gr.update(visible=False)

        self.infotext_fields.append((dropdown, lambda x: gr.update(value=x.get("Script", "None"))))
        self.infotext_fields.extend([(script.group, onload_script_visibility) for script in self.selectable_scripts])

        self.apply_on_before_component_callbacks()
        return self.inputs

    def run(self, p, *args):
        # mirrors ScriptRunner.run: args[0] is the 1-based index of the selected script (0 = none)
        script_index = args[0]
        if script_index == 0 or script_index is None:
            return None
        script = self.selectable_scripts[script_index - 1]
        if script is None:
            return None
        processed = script.run(p, *args[script.args_from : script.args_to])
        shared.total_tqdm.clear()
        return processed

    def list_scripts_for_method(self, method_name):
        if method_name in ("before_component", "after_component"):
            return self.scripts
        return self.alwayson_scripts

    def create_ordered_callbacks_list(self, method_name, *, enable_user_sort=True):
        # mirrors ScriptRunner.create_ordered_callbacks_list: only scripts whose class overrides the hook
        script_list = self.list_scripts_for_method(method_name)
        category = f"script_{method_name}"
        callbacks = []
        for script in script_list:
            if getattr(script.__class__, method_name, None) == getattr(Script, method_name, None):
                continue
            script_callbacks.add_callback(
                callbacks, script, category=category, name=script.__class__.__name__, filename=script.filename
            )
        return script_callbacks.sort_callbacks(category, callbacks, enable_user_sort=enable_user_sort)

    def ordered_callbacks(self, method_name, *, enable_user_sort=True):
        # mirrors ScriptRunner.ordered_callbacks: cached until the number of scripts changes
        script_list = self.list_scripts_for_method(method_name)
        category = f"script_{method_name}"
        count, callbacks = self.callback_map.get(category, (-1, None))
        if callbacks is None or count != len(script_list):
            callbacks = self.create_ordered_callbacks_list(method_name, enable_user_sort=enable_user_sort)
            self.callback_map[category] = len(script_list), callbacks
        return callbacks

    def ordered_scripts(self, method_name):
        return [x.callback for x in self.ordered_callbacks(method_name)]

    def _run_hook(self, method_name, label, p, *extra, **kwargs):
        # the shared body of the real per-hook runners: slice this script's args, call, report and go on
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                getattr(script, method_name)(p, *extra, *script_args, **kwargs)
            except Exception:
                errors.report(f"Error running {label}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._run_hook("before_process", "before_process", p)

    def process(self, p):
        self._run_hook("process", "process", p)

    def process_before_every_sampling(self, p, **kwargs):
        self._run_hook("process_before_every_sampling", "process_before_every_sampling", p, **kwargs)

    def before_process_batch(self, p, **kwargs):
        self._run_hook("before_process_batch", "before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._run_hook("after_extra_networks_activate", "after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._run_hook("process_batch", "process_batch", p, **kwargs)

    def postprocess(self, p, processed):
        # mirrors ScriptRunner.postprocess: processed goes before the script's args
        self._run_hook("postprocess", "postprocess", p, processed)

    def postprocess_batch(self, p, images, **kwargs):
        # mirrors ScriptRunner.postprocess_batch: images is passed as a keyword argument
        for script in self.ordered_scripts("postprocess_batch"):
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                script.postprocess_batch(p, *script_args, images=images, **kwargs)
            except Exception:
                errors.report(f"Error running postprocess_batch: {script.filename}", exc_info=True)

    def postprocess_batch_list(self, p, pp: PostprocessBatchListArgs, **kwargs):
        self._run_hook("postprocess_batch_list", "postprocess_batch_list", p, pp, **kwargs)

    def post_sample(self, p, ps: PostSampleArgs):
        self._run_hook("post_sample", "post_sample", p, ps)

    def on_mask_blend(self, p, mba: MaskBlendArgs):
        # the real runner's error message says "post_sample" here too
        self._run_hook("on_mask_blend", "post_sample", p, mba)

    def postprocess_image(self, p, pp: PostprocessImageArgs):
        self._run_hook("postprocess_image", "postprocess_image", p, pp)

    def postprocess_maskoverlay(self, p, ppmo: PostProcessMaskOverlayArgs):
        self._run_hook("postprocess_maskoverlay", "postprocess_image", p, ppmo)

    def postprocess_image_after_composite(self, p, pp: PostprocessImageArgs):
        self._run_hook("postprocess_image_after_composite", "postprocess_image_after_composite", p, pp)

    def before_component(self, component, **kwargs):
        # mirrors ScriptRunner.before_component
        for callback, script in self.on_before_component_elem_id.get(kwargs.get("elem_id"), []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                errors.report(f"Error running on_before_component: {script.filename}", exc_info=True)
        for script in self.ordered_scripts("before_component"):
            try:
                script.before_component(component, **kwargs)
            except Exception:
                errors.report(f"Error running before_component: {script.filename}", exc_info=True)

    def after_component(self, component, **kwargs):
        # mirrors ScriptRunner.after_component
        for callback, script in self.on_after_component_elem_id.get(component.elem_id, []):
            try:
                callback(OnComponent(component=component))
            except Exception:
                errors.report(f"Error running on_after_component: {script.filename}", exc_info=True)
        for script in self.ordered_scripts("after_component"):
            try:
                script.after_component(component, **kwargs)
            except Exception:
                errors.report(f"Error running after_component: {script.filename}", exc_info=True)

    def script(self, title):
        return self.title_map.get(title.lower())

    def reload_sources(self, cache):
        # mirrors ScriptRunner.reload_sources: re-executes the files, keeps each script's args slice
        for index, script in list(enumerate(self.scripts)):
            args_from, args_to, filename = script.args_from, script.args_to, script.filename
            module = cache.get(filename, None)
            if module is None:
                module = script_loading.load_module(script.filename)
                cache[filename] = module
            for script_class in module.__dict__.values():
                if type(script_class) is type and issubclass(script_class, Script):
                    self.scripts[index] = script_class()
                    self.scripts[index].filename = filename
                    self.scripts[index].args_from = args_from
                    self.scripts[index].args_to = args_to

    def before_hr(self, p):
        self._run_hook("before_hr", "before_hr", p)

    def setup_scrips(self, p, *, is_ui=True):
        # mirrors ScriptRunner.setup_scrips (sic): ScriptBuiltinUI scripts are skipped for API runs
        for script in self.ordered_scripts("setup"):
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                script.setup(p, *script_args)
            except Exception:
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def set_named_arg(self, args, script_name, arg_elem_id, value, fuzzy=False):
        # mirrors ScriptRunner.set_named_arg
        script = next((x for x in self.scripts if x.name == script_name), None)
        if script is None:
            raise RuntimeError(f"script {script_name} not found")
        for i, control in enumerate(script.controls):
            if (arg_elem_id in control.elem_id) if fuzzy else (arg_elem_id == control.elem_id):
                index = script.args_from + i
                if isinstance(args, tuple):
                    return args[:index] + (value,) + args[index + 1 :]
                if isinstance(args, list):
                    args[index] = value
                    return args
                raise RuntimeError(f"args is not a list or tuple, but {type(args)}")
        raise RuntimeError(f"arg_elem_id {arg_elem_id} not found in script {script_name}")


scripts_txt2img: ScriptRunner = None
scripts_img2img: ScriptRunner = None
scripts_postproc = None
scripts_current: ScriptRunner = None


def reload_script_body_only():
    cache = {}
    scripts_txt2img.reload_sources(cache)
    scripts_img2img.reload_sources(cache)


reload_scripts = load_scripts  # compatibility alias, as in the real file
