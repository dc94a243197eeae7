"""Test harness around the stand-in WebUI (tests/webui/modules): installs the host, loads an
extension's scripts like the WebUI does at startup, builds the UI, and drives txt2img / img2img / the
API / "Reload UI" / checkpoint switches / interrupts.

    from host import WebUIHost
    host = WebUIHost(sd15_unet(0), extension_dir="/work/main")
    try:
        processed = host.txt2img("a cat", steps=4, width=64, height=64, seed=1,
                                 script_args={"MasaCtrl": [True, ...]})
        status, body = host.api_txt2img({"prompt": "a cat", "steps": 4, "width": 64, "height": 64,
                                         "alwayson_scripts": {"MasaCtrl": {"args": [True]}}})
    finally:
        host.teardown()

Startup order (mirrors webui.py webui() + modules/initialize.py initialize / initialize_rest):
UNetModel.forward patched for sd_unet (sd_hijack import) -> opts onchange for the checkpoint and
cross-attention settings -> sd_samplers.set_samplers -> scripts.load_scripts (root scripts, i.e.
xyz_grid.py, then the extension's; extension root on sys.path while each file runs) ->
on_list_optimizers(sd_hijack_optimizations.list_optimizers) + sd_hijack.list_optimizers ->
sd_unet.list_unets -> the checkpoint listed and loaded (sd_models.load_model: hijack = cross-attention
optimisation applied, on_model_loaded fired, empty-prompt cond) -> before_ui callbacks -> ui.create_ui
(on_ui_settings, txt2img tab, img2img tab, on_ui_tabs, settings components) -> API created (calls every
script's ui() again) -> app_started callbacks. Simplification: the real host loads the model in a
thread that usually finishes during UI creation; here it is loaded before the UI, deterministically.

Only one WebUIHost may be alive at a time (the WebUI's globals are module globals)."""

from __future__ import annotations

import copy
import os
import shutil
import sys
import tempfile
from collections import namedtuple
from types import SimpleNamespace

import gradio as gr
import torch

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)

import ldm.modules.attention as ldm_attention  # noqa: E402
import modules.img2img  # noqa: E402
import modules.txt2img  # noqa: E402
from modules import (  # noqa: E402
    call_queue,
    extensions,
    extra_networks,
    gradio_extensons,
    images,
    infotext_utils,
    paths,
    processing,
    script_callbacks,
    scripts,
    sd_hijack,
    sd_hijack_optimizations,
    sd_models,
    sd_samplers,
    sd_samplers_common,
    sd_schedulers,
    sd_unet,
    shared,
    ui,
)
from modules.api import api as api_module  # noqa: E402

_active_host = None

# option keys registered by the stand-in's own processing scripts (not settings added by extensions)
_BUILTIN_SCRIPT_OPTIONS = {"enable_prompt_comments"}


class _Request:
    """What gradio passes as ``request`` (only .username is read)."""

    username = None


_COMMON_ARGS = (
    "steps sampler_name scheduler seed subseed subseed_strength seed_resize_from_w seed_resize_from_h "
    "refiner refiner_switch_at script_args selected_script raise_errors"
).split()
_GenerateArgs = namedtuple("_GenerateArgs", _COMMON_ARGS)


def _common_args(arguments):
    # the txt2img/img2img keyword arguments that are not UI fields (built-in scripts' values, harness options)
    return {name: arguments[name] for name in _COMMON_ARGS}


OUTPUT_FOLDER_OPTIONS = (
    "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_txt2img_grids", "outdir_img2img_grids",
)
"""Output folders (shared_options.py) pointed into the host's temporary folder while it lives."""


class WebUIHost:
    """See the module docstring.

    Arguments:
    - unet: an ldm UNetModel (tests/tiny_unets.py); becomes shared.sd_model.model.diffusion_model.
    - extension_dir: the extension's root (its scripts/*.py are loaded); None loads no extension.
    - model_name: the checkpoint name shown in infotexts ("Model: ...").
    - api: also create the API object (as with --api), which calls every script's ui() again.
    - options: opts values to set before startup (e.g. {"batch_cond_uncond": False}).
    - optimization: the cross-attention optimisation applied at model load ("sdp", "sdp-no-mem" or
      "None" = the WebUI's default einsum forward with hypernetwork support).
    - nowebui: start as ``--nowebui`` does (webui.py ``api_only``): API only, built before the
      before_ui callbacks run.
    - cmd_options: command-line flags to start with (``{"hide_ui_dir_config": True}`` for
      ``--hide-ui-dir-config``), restored at teardown.
    - forge: run as WebUI Forge (tests/forge_host/README.md): ``unet`` is then a Forge U-Net
      (tests/forge/forge_unets.py) and the loaded model one of Forge's.
    """

    def __init__(
        self, unet, extension_dir=None, *, model_name="tiny-sd15", api=True, options=None, optimization="sdp",
        nowebui=False, cmd_options=None, forge=False,
    ):
        global _active_host
        if _active_host is not None:
            raise RuntimeError("another WebUIHost is still active; call teardown() first")
        _active_host = self

        # what the host was started with, then what it builds while it runs
        self.extension_dir = os.path.realpath(extension_dir) if extension_dir else None
        self.use_api, self.nowebui, self.optimization = api, nowebui, optimization
        self.api = self.demo = self.app = None
        self._interrupt_plan, self._sd_unet_options = [], []
        self._checkpoints = {}

        self._snapshot()
        self.forge = forge
        if forge:
            _forge_flavour().install()
        for flag, value in (cmd_options or {}).items():
            setattr(shared.cmd_opts, flag, value)
        try:
            gradio_extensons.install()
            sd_schedulers.install()
            sd_samplers_common.install()
            sd_hijack.install()

            # The install's output folders, where the WebUI writes what it saves (the stand-in's
            # save_image writes nothing, but an extension may write files there itself).
            self.outputs = tempfile.mkdtemp(prefix="standin-webui-outputs-")
            for key in OUTPUT_FOLDER_OPTIONS:
                setattr(shared.opts, key, os.path.join(self.outputs, shared.opts.data_labels[key].default.split("/")[-1]))
            for key, value in (options or {}).items():
                setattr(shared.opts, key, value)
            shared.opts.cross_attention_optimization = optimization

            if self.extension_dir:
                extensions.register_extension(self.extension_dir)

            self._configure_opts_onchange()
            sd_samplers.set_samplers()
            scripts.load_scripts()
            self._after_scripts_loaded()

            self._load_model(unet, model_name)

            self._create_ui()
        except BaseException:
            self.teardown()
            raise

    # ------------------------------------------------------------------ globals
    def _snapshot(self):
        self._saved = {
            "sys_path": list(sys.path),
            "opts_data": copy.deepcopy(shared.opts.data),
            "option_labels": dict(shared.opts.data_labels),
            "cmd_opts": dict(vars(shared.cmd_opts)),
            "crossattn_forward": ldm_attention.CrossAttention.__dict__["forward"],
            "torch_rng": torch.random.get_rng_state(),
            "loaded_hypernetworks": list(shared.loaded_hypernetworks),
            "state": shared.state,
            "onchange": {key: info.onchange for key, info in shared.opts.data_labels.items()},
            "modules": set(sys.modules),
        }
        ui.builtin_option_keys = set(shared.opts.data_labels) | _BUILTIN_SCRIPT_OPTIONS

    def teardown(self, *, fire_script_unloaded=False):
        """Restore every global the host changed. With fire_script_unloaded, the extension's
        on_script_unloaded callbacks run first (the real host only does that on Reload UI)."""
        global _active_host
        if _active_host is not self:
            return
        try:
            if fire_script_unloaded:
                script_callbacks.script_unloaded_callback()
        finally:
            saved = self._saved
            script_callbacks.clear_callbacks()
            scripts.scripts_data.clear()
            scripts.postprocessing_scripts_data.clear()
            scripts.scripts_txt2img = scripts.scripts_img2img = scripts.scripts_current = None
            scripts.current_basedir = paths.script_path
            extensions.clear_extensions()
            infotext_utils.reset()
            for info in sd_models.checkpoints_list.values():
                info.standin_file.restore_source()
            sd_models.checkpoints_list.clear()
            sd_models.checkpoint_aliases.clear()
            sd_hijack.model_hijack.circular_enabled = False
            sd_hijack.model_hijack.layers = None
            sd_hijack.model_hijack.clip = None
            sd_hijack.model_hijack.clear_comments()
            sd_hijack.current_optimizer = None
            sd_hijack.optimizers.clear()
            extra_networks.extra_network_registry.clear()
            extra_networks.extra_network_aliases.clear()
            processing.StableDiffusionProcessing.cached_c = [None, None]
            processing.StableDiffusionProcessing.cached_uc = [None, None]
            processing.StableDiffusionProcessingTxt2Img.cached_hr_c = [None, None]
            processing.StableDiffusionProcessingTxt2Img.cached_hr_uc = [None, None]
            processing.last_params_txt = None
            modules.txt2img.last_processed = None
            modules.img2img.last_processed = None
            call_queue.last_ui_exception = None
            images.saved_images.clear()
            self._forget_extension_modules(saved["modules"])
            if self.forge:
                _forge_flavour().uninstall()
            if getattr(self, "outputs", None):
                shutil.rmtree(self.outputs, ignore_errors=True)
            sd_samplers.get_sampler_and_scheduler.cache_clear()

            ldm_attention.CrossAttention.forward = saved["crossattn_forward"]
            sd_unet.reset()
            sd_hijack.uninstall()
            sd_samplers_common.uninstall()
            sd_schedulers.uninstall()
            gradio_extensons.uninstall()

            shared.opts.data_labels.clear()
            shared.opts.data_labels.update(saved["option_labels"])
            for key, onchange in saved["onchange"].items():
                shared.opts.data_labels[key].onchange = onchange
            shared.opts.data = saved["opts_data"]
            for key in list(vars(shared.cmd_opts)):
                if key not in saved["cmd_opts"]:
                    delattr(shared.cmd_opts, key)
            for key, value in saved["cmd_opts"].items():
                setattr(shared.cmd_opts, key, value)
            sd_models.model_data.reset()
            self._checkpoints.clear()
            shared.settings_components = None
            shared.loaded_hypernetworks[:] = saved["loaded_hypernetworks"]
            shared.state = saved["state"]
            _reset_state(shared.state)
            sys.path[:] = saved["sys_path"]
            torch.random.set_rng_state(saved["torch_rng"])
            _active_host = None

    # ------------------------------------------------------------------ startup pieces
    def _after_scripts_loaded(self):
        # mirrors initialize_rest after load_scripts: the optimiser list is (re)registered, then the
        # SD Unet list (sd_unet.list_unets)
        script_callbacks.on_list_optimizers(sd_hijack_optimizations.list_optimizers)
        sd_hijack.list_optimizers()
        for option in self._sd_unet_options:  # the stand-in "TensorRT extension" (add_sd_unet)
            _offer_sd_unet(option)
        sd_unet.list_unets()
        script_callbacks.on_cfg_denoiser(self._interrupt_callback, name="webui_standin_interrupt")

    @staticmethod
    def _configure_opts_onchange():
        # mirrors initialize_util.configure_opts_onchange (the model-related entries)
        shared.opts.onchange(
            "sd_model_checkpoint", call_queue.wrap_queued_call(lambda: sd_models.reload_model_weights()), call=False
        )
        shared.opts.onchange(
            "cross_attention_optimization",
            call_queue.wrap_queued_call(lambda: sd_hijack.model_hijack.redo_hijack(shared.sd_model)),
            call=False,
        )

    def _load_model(self, unet, model_name):
        # mirrors the startup load (initialize_rest's thread -> shared.sd_model -> sd_models.load_model):
        # the checkpoint is listed, then loaded (hijack, on_model_loaded, empty-prompt cond)
        info = self.add_checkpoint(unet, model_name)
        shared.opts.data["sd_model_checkpoint"] = info.title
        sd_models.load_model(info)

    def _create_ui(self):
        if self.nowebui:
            # mirrors webui.py api_only (--nowebui): the API first, whose constructor builds the UI
            # (so scripts take what they read in ui() before any before_ui callback), then the
            # before_ui and app_started callbacks
            self.app = _make_app()
            self.api = api_module.Api(call_queue.queue_lock)
            script_callbacks.before_ui_callback()
            script_callbacks.app_started_callback(None, self.app)
            return
        # mirrors webui.py webui(): before_ui callbacks, create_ui, (API), app_started callbacks
        script_callbacks.before_ui_callback()
        self.demo = ui.create_ui()
        shared.demo = self.demo
        self.app = _make_app()
        if self.use_api:
            self.api = api_module.Api(call_queue.queue_lock)
        script_callbacks.app_started_callback(self.demo, self.app)

    def _forget_extension_modules(self, before):
        """The end of the WebUI process: modules the extension's scripts imported while this host
        was alive leave sys.modules, so module-level state (a cache, say) does not reach the next
        host. Reload UI keeps them, as the real host does (see reload_scripts)."""
        if not self.extension_dir:
            return
        tests = os.path.join(self.extension_dir, "tests") + os.sep
        for name in set(sys.modules) - before:
            path = os.path.realpath(getattr(sys.modules[name], "__file__", None) or "")
            if path.startswith(self.extension_dir + os.sep) and not path.startswith(tests):
                del sys.modules[name]

    # ------------------------------------------------------------------ lifecycle operations
    def reload_scripts(self):
        """ "Reload UI" (Settings -> Reload UI): mirrors webui.py's restart branch: on_before_reload and
        on_script_unloaded callbacks, then initialize_rest(reload_script_modules=True) (which re-executes
        every script file; modules those files import stay in sys.modules, as in the real host; the
        loaded model is kept and on_model_loaded is NOT fired), then the UI and API are rebuilt."""
        script_callbacks.app_reload_callback()
        script_callbacks.script_unloaded_callback()
        sd_samplers.set_samplers()
        scripts.load_scripts()
        self._after_scripts_loaded()
        self._create_ui()

    def add_checkpoint(self, unet, name=None, *, config=None):
        """Put a checkpoint "file" holding ``unet``'s weights into the checkpoint list (what the real host
        lists from models/Stable-diffusion; it appears in the checkpoint, refiner and hires dropdowns).
        Returns its CheckpointInfo (``.title`` is what the UI shows). The same U-Net object is listed
        once. ``config``: a config of its own (a .yaml beside the checkpoint), so loading it always
        builds a new model; by default the config is the architecture's, so it is loaded into an already
        loaded model of the same architecture by copying weights (same module objects)."""
        known = self._checkpoints.get(id(unet))
        if known is not None:
            return known[1]
        info = sd_models.register_checkpoint(unet, name or f"tiny-{len(self._checkpoints)}", config=config)
        self._checkpoints[id(unet)] = (unet, info)
        return info

    def switch_model(self, new_unet, *, name=None, inplace=False):
        """Select another checkpoint in the UI's checkpoint dropdown: opts.sd_model_checkpoint changes and
        its onchange runs sd_models.reload_model_weights (as the real host does). ``new_unet``: a U-Net
        (listed first with add_checkpoint) or the title/name of a listed checkpoint. A U-Net is listed
        with its own config unless ``inplace``, so by default a new model object wraps it and the old
        model is unloaded (trashed); with ``inplace`` and the same architecture its weights are copied into
        the loaded modules. Returns the new shared.sd_model."""
        if isinstance(new_unet, str):
            info = sd_models.get_closet_checkpoint_match(new_unet)
            if info is None:
                raise KeyError(f"no checkpoint {new_unet!r}")
        else:
            name = name or f"{shared.sd_model.sd_checkpoint_info.name_for_extra}-switched"
            info = self.add_checkpoint(new_unet, name, config=None if inplace else f"{name}.yaml")
        shared.opts.set("sd_model_checkpoint", info.title)
        return shared.sd_model

    def add_sd_unet(self, label="[TRT] standin", *, model_name=None):
        """Install a TensorRT-like U-Net replacement, as an extension would (an on_list_unets callback
        offering a modules.sd_unet.SdUnetOption, then the list refreshed like the "SD Unet" setting's
        refresh button). ``model_name``: the checkpoint it is made for (default: the loaded one), so with
        opts.sd_unet "Automatic" (the default) it is used for that checkpoint; or set opts.sd_unet to
        ``label`` / "None". It takes effect at the next generation (sd_unet.apply_unet runs in
        process_images_inner after p.init). While active, every UNetModel call runs a private copy of the
        U-Net without the ldm attention classes (standin_sd_unet.py), so attention patches have no effect.
        Returns the option (``.activations``, ``.deactivations``, ``.calls`` count what happened)."""
        from standin_sd_unet import StandInEngineOption

        option = StandInEngineOption(label, model_name or shared.sd_model.sd_checkpoint_info.model_name)
        self._sd_unet_options.append(option)
        _offer_sd_unet(option)
        sd_unet.list_unets()  # shared_items.refresh_unet_list
        return option

    def remove_sd_unet(self, option):
        """Undo add_sd_unet (as if the extension were gone): the option leaves the list, and an active
        SdUnet of it is deactivated now (sd_unet.apply_unet finds the selection gone)."""
        self._sd_unet_options.remove(option)
        script_callbacks.remove_callbacks_for_function(option.list_into)
        sd_unet.list_unets()
        sd_unet.apply_unet()

    def interrupt_at(self, denoiser_step, *, skip=False, hr_pass=None):
        """Press Interrupt (or Skip, with skip=True) during the next generation, from a harness-owned
        on_cfg_denoiser callback, when the CFG denoiser is about to make its call number
        ``denoiser_step`` (0-based, ``params.denoiser.step``: counts every denoiser call of the current
        sampling pass, so a second-order sampler makes two per step; the hires pass starts again at 0;
        hr_pass=True/False restricts to that pass). As in the real host, the flag is noticed at the start
        of the NEXT denoiser call, which raises InterruptedException; the sampler returns its last
        latent, so exactly denoiser_step + 1 calls complete.

        Note: ``params.sampling_step`` (state.sampling_step) lags: k-diffusion's callback sets it after
        the step's first model call, so calls of step i see i - 1 (0 for the first two steps)."""
        self._interrupt_plan.append({"step": denoiser_step, "skip": skip, "hr_pass": hr_pass, "done": False})

    def _interrupt_callback(self, params):
        for plan in self._interrupt_plan:
            if plan["done"] or params.denoiser.step != plan["step"]:
                continue
            if plan["hr_pass"] is not None and bool(getattr(params.denoiser.p, "is_hr_pass", False)) != plan["hr_pass"]:
                continue
            plan["done"] = True
            if plan["skip"]:
                shared.state.skip()
            else:
                shared.state.interrupt()

    # ------------------------------------------------------------------ script args
    def runner(self, is_img2img=False):
        return scripts.scripts_img2img if is_img2img else scripts.scripts_txt2img

    def script(self, title, is_img2img=False):
        return self.runner(is_img2img).script(title)

    def default_script_args(self, is_img2img=False):
        """The values the UI would send for the script inputs (index 0 = "None" selected, then every
        script's components' current values, preprocessed by gradio as the real UI's are: an index-type
        Dropdown/Radio gives the index of its value)."""
        runner = self.runner(is_img2img)
        values = [0]
        for component in runner.inputs[1:]:
            value = component.value
            if isinstance(component, (gr.Dropdown, gr.Radio)):
                value = component.preprocess(value)
            values.append(value)
        return values

    def build_script_args(self, script_args=None, *, is_img2img=False, selected_script=None, builtin=None):
        """UI-style script args: defaults from the components, then ``builtin`` values for the
        Sampler/Seed/Refiner scripts, then ``script_args`` {title: [values...] (positional, from the
        script's first arg) or {arg_index: value}}."""
        runner = self.runner(is_img2img)
        values = self.default_script_args(is_img2img)
        for title, given in {**(builtin or {}), **(script_args or {})}.items():
            script = runner.script(title)
            if script is None:
                raise KeyError(f"no script titled {title!r} on the {'img2img' if is_img2img else 'txt2img'} tab")
            if script.args_from is None or script.args_to is None:
                raise KeyError(f"script {title!r} has no UI args")
            width = script.args_to - script.args_from
            items = given.items() if isinstance(given, dict) else enumerate(given)
            for index, value in items:
                if not 0 <= index < width:
                    raise IndexError(f"script {title!r} has {width} args; got index {index}")
                values[script.args_from + index] = value
        if selected_script is not None:
            values[0] = runner.titles.index(selected_script) + 1
        return values

    # ------------------------------------------------------------------ generation
    def txt2img(
        self,
        prompt="",
        negative_prompt="",
        *,
        steps=4,
        sampler_name="Euler",
        scheduler="Automatic",
        seed=1,
        subseed=-1,
        subseed_strength=0.0,
        seed_resize_from_w=0,
        seed_resize_from_h=0,
        width=64,
        height=64,
        batch_size=1,
        n_iter=1,
        cfg_scale=7.0,
        enable_hr=False,
        denoising_strength=0.7,
        hr_scale=2.0,
        hr_upscaler="Latent",
        hr_second_pass_steps=0,
        hr_resize_x=0,
        hr_resize_y=0,
        hr_checkpoint_name="Use same checkpoint",
        hr_sampler_name="Use same sampler",
        hr_scheduler="Use same scheduler",
        hr_prompt="",
        hr_negative_prompt="",
        styles=(),
        override_settings_texts=(),
        refiner=None,
        refiner_switch_at=0.8,
        script_args=None,
        selected_script=None,
        raise_errors=True,
    ):
        """Press Generate on the txt2img tab: calls modules.txt2img.txt2img through the UI's
        wrap_gradio_gpu_call (state.begin/end, flags reset). Returns the Processed. An exception that
        the real UI would show as an error message is re-raised (raise_errors=False returns None
        instead, like the real UI's empty result). ``refiner``: a checkpoint title/name, a U-Net, or
        (U-Net, name) (listed with add_checkpoint): enables the Refiner accordion with that checkpoint
        and ``refiner_switch_at``."""
        # txt2img.txt2img's arguments up to the script args, as the txt2img tab sends them
        hires = [enable_hr, denoising_strength, hr_scale, hr_upscaler, hr_second_pass_steps, hr_resize_x, hr_resize_y]
        hires += [hr_checkpoint_name, hr_sampler_name, hr_scheduler, hr_prompt, hr_negative_prompt]
        fields = [prompt, negative_prompt, list(styles), n_iter, batch_size, cfg_scale, height, width, *hires]
        fields.append(list(override_settings_texts))
        return self._generate(modules.txt2img, "txt2img", fields, _GenerateArgs(**_common_args(locals())))

    def img2img(
        self,
        init_image=None,
        prompt="",
        negative_prompt="",
        *,
        mask=None,
        mode=None,
        batch_images=None,
        use_png_info=False,
        png_info_props=(),
        steps=4,
        sampler_name="Euler",
        scheduler="Automatic",
        seed=1,
        subseed=-1,
        subseed_strength=0.0,
        seed_resize_from_w=0,
        seed_resize_from_h=0,
        width=64,
        height=64,
        batch_size=1,
        n_iter=1,
        cfg_scale=7.0,
        image_cfg_scale=1.5,
        denoising_strength=0.75,
        resize_mode=0,
        mask_blur=4,
        mask_alpha=0,
        inpainting_fill=1,
        inpaint_full_res=False,
        inpaint_full_res_padding=32,
        inpainting_mask_invert=0,
        styles=(),
        override_settings_texts=(),
        refiner=None,
        refiner_switch_at=0.8,
        script_args=None,
        selected_script=None,
        raise_errors=True,
    ):
        """Press Generate on the img2img tab (mode 0), the "Inpaint upload" tab (mode 4, when a mask
        is given) or the "Batch" tab (mode 5, when ``batch_images`` are given: uploaded images, each
        optionally lending the ``png_info_props`` of its own infotext). Arguments as in the UI
        (inpainting_fill 1 = "original", inpaint_full_res False = "Whole picture"); the others as in
        txt2img. The Batch tab returns an empty result, as the real one does; what it made is in
        ``modules.img2img.batch_results``."""
        if mode is None:
            mode = 5 if batch_images is not None else 4 if mask is not None else 0
        # img2img.img2img's arguments up to the script args; "" / [] / "upload" are the batch tab's
        fields = [mode, prompt, negative_prompt, list(styles), init_image if mode == 0 else None, None, None, None, None]
        fields += [init_image if mode == 4 else None, mask, mask_blur, mask_alpha, inpainting_fill, n_iter, batch_size]
        fields += [cfg_scale, image_cfg_scale, denoising_strength, 0, height, width, 1.0, resize_mode, inpaint_full_res]
        fields += [inpaint_full_res_padding, inpainting_mask_invert, "", "", "", list(override_settings_texts)]
        fields += [use_png_info, list(png_info_props), "", "upload", list(batch_images or [])]
        return self._generate(modules.img2img, "img2img", fields, _GenerateArgs(**_common_args(locals())))

    def _generate(self, module, tab, fields, args):
        # the built-in Sampler/Seed/Refiner scripts' values, then the extensions' script args
        extra = bool(args.subseed_strength > 0 or (args.seed_resize_from_w > 0 and args.seed_resize_from_h > 0))
        builtin = {
            "Sampler": [args.steps, args.sampler_name, args.scheduler],
            "Seed": [args.seed, extra, args.subseed, args.subseed_strength, args.seed_resize_from_w, args.seed_resize_from_h],
        }
        if args.refiner is not None:
            builtin["Refiner"] = [True, self._checkpoint_title(args.refiner), args.refiner_switch_at]
        values = self.build_script_args(
            args.script_args, is_img2img=tab == "img2img", selected_script=args.selected_script, builtin=builtin
        )
        return self._run_ui(module, tab, fields + values, args.raise_errors)

    def _checkpoint_title(self, checkpoint):
        if isinstance(checkpoint, str):
            return checkpoint
        if isinstance(checkpoint, tuple):
            unet, name = checkpoint
            if isinstance(unet, str):
                raise TypeError("refiner: a checkpoint name, a U-Net or (U-Net, name); the switch point is refiner_switch_at")
            return self.add_checkpoint(unet, name).title
        return self.add_checkpoint(checkpoint).title

    def _run_ui(self, module, tab, args, raise_errors):
        module.last_processed = None
        call_queue.last_ui_exception = None
        wrapped = call_queue.wrap_gradio_gpu_call(getattr(module, tab), extra_outputs=[None, "", ""])
        try:
            wrapped(f"task({tab})", _Request(), *args)
        finally:
            self._interrupt_plan.clear()
        if call_queue.last_ui_exception is not None and raise_errors:
            raise call_queue.last_ui_exception
        return module.last_processed

    def api_txt2img(self, payload: dict):
        """POST /sdapi/v1/txt2img: returns (status_code, json_dict) like the real API (errors included)."""
        return self._api("/sdapi/v1/txt2img", payload)

    def api_img2img(self, payload: dict):
        """POST /sdapi/v1/img2img: returns (status_code, json_dict)."""
        return self._api("/sdapi/v1/img2img", payload)

    def _api(self, path, payload):
        if self.api is None:
            raise RuntimeError("the host was created with api=False")
        try:
            return self.api.request(path, payload)
        finally:
            self._interrupt_plan.clear()

    # ------------------------------------------------------------------ misc
    def set_setting(self, key, value):
        """Change one setting from the Settings page: mirrors ui_settings.run_settings_single (values
        of the wrong type are refused and False is returned; onchange callbacks run)."""
        if not shared.opts.same_type(value, shared.opts.data_labels[key].default):
            return False
        if value is None:
            return False
        return shared.opts.set(key, value)

    def paste_infotext(self, infotext, tab="txt2img"):
        """What the paste button does with ``infotext``: a list of (component, gr.update dict)."""
        return infotext_utils.paste_infotext(tab, infotext)

    def script_values_from_infotext(self, infotext, title, is_img2img=False):
        """The values pasting ``infotext`` would put into script ``title``'s components (a list with None
        where the paste leaves the component unchanged)."""
        script = self.script(title, is_img2img)
        controls = list(script.controls or [])
        result = [None] * len(controls)
        for component, update in self.paste_infotext(infotext, "img2img" if is_img2img else "txt2img"):
            for index, control in enumerate(controls):
                if control is component and isinstance(update, dict) and "value" in update:
                    result[index] = update["value"]
        return result


def _forge_flavour():
    """tests/forge_host/forge_flavour.py: the stand-in's modules made to behave as WebUI Forge's."""
    folder = os.path.join(os.path.dirname(_here), "forge_host")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    import forge_flavour

    return forge_flavour


def _offer_sd_unet(option):
    script_callbacks.on_list_unets(option.list_into, name=f"standin_sd_unet_{option.label}")


def _reset_state(state):
    for name in ("xyz_plot_x", "xyz_plot_y", "xyz_plot_z"):  # set by the X/Y/Z plot script
        state.__dict__.pop(name, None)
    state.skipped = False
    state.interrupted = False
    state.stopping_generation = False
    state.job = ""
    state.job_count = 0
    state.job_no = 0
    state.sampling_step = 0
    state.sampling_steps = 0
    state.current_latent = None


def _make_app():
    try:
        from fastapi import FastAPI

        return FastAPI()
    except Exception:  # pragma: no cover - fastapi is a gradio dependency
        return SimpleNamespace()
