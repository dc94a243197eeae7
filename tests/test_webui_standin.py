"""Tests of the WebUI v1.10.1 stand-in (tests/webui) itself, with a small probe extension written to a
temporary directory (no MasaCtrl code involved)."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch

WEBUI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "webui")
if WEBUI_DIR not in sys.path:
    sys.path.insert(0, WEBUI_DIR)

from host import WebUIHost  # noqa: E402
from tiny_unets import sd15_unet, sdxl_refiner_unet, sdxl_unet  # noqa: E402

import ldm.modules.attention as ldm_attention  # noqa: E402
from modules import errors, script_callbacks, sd_models, sd_samplers, sd_samplers_common, sd_unet, shared  # noqa: E402

PROBE_LIB = """
EVENTS = []
LOADS = []
"""

PROBE_SCRIPT = """
import sys

import gradio as gr

from modules import scripts, script_callbacks, shared
from modules.ui_components import InputAccordion
import lib_standin_probe as lib

lib.LOADS.append((scripts.basedir(), list(sys.path)))


class ProbeScript(scripts.Script):
    def ui(self, is_img2img):
        with InputAccordion(False, label="Standin Probe", elem_id=self.elem_id("enabled")) as enabled:
            strength = gr.Slider(minimum=0.0, maximum=1.0, step=0.05, value=0.25, label="Strength", tooltip="probe")
            mode = gr.Dropdown(choices=["a", "b"], value="a", label="Mode")
        self.infotext_fields = [
            (enabled, lambda d: "Probe strength" in d),
            (strength, "Probe strength"),
            (mode, "Probe mode"),
        ]
        return [enabled, strength, mode]

    def setup(self, p, *args):
        lib.EVENTS.append(("setup", args, p.steps))

    def before_process(self, p, *args):
        lib.EVENTS.append(("before_process", args))

    def process(self, p, enabled, strength, mode):
        lib.EVENTS.append(("process", (enabled, strength, mode), list(p.all_prompts), list(p.all_seeds)))
        if hasattr(p, "probe_axis_strength") or hasattr(p, "probe_axis_mode"):
            lib.EVENTS.append(("axis", getattr(p, "probe_axis_strength", None), getattr(p, "probe_axis_mode", None), p.seed))
        if enabled:
            p.extra_generation_params["Probe strength"] = strength
            p.extra_generation_params["Probe mode"] = mode

    def before_process_batch(self, p, *args, **kwargs):
        lib.EVENTS.append(("before_process_batch", kwargs["batch_number"], list(kwargs["seeds"])))

    def process_batch(self, p, *args, **kwargs):
        lib.EVENTS.append(("process_batch", kwargs["batch_number"], list(p.prompts), list(p.seeds)))

    def process_before_every_sampling(self, p, *args, **kwargs):
        lib.EVENTS.append(("process_before_every_sampling", tuple(kwargs["x"].shape), p.is_hr_pass))

    def post_sample(self, p, ps, *args):
        lib.EVENTS.append(("post_sample", tuple(ps.samples.shape)))

    def postprocess_batch(self, p, *args, **kwargs):
        lib.EVENTS.append(("postprocess_batch", kwargs["batch_number"], tuple(kwargs["images"].shape)))

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        lib.EVENTS.append(("postprocess_batch_list", kwargs["batch_number"], len(pp.images)))

    def postprocess_image(self, p, pp, *args):
        lib.EVENTS.append(("postprocess_image", pp.image.size))

    def postprocess(self, p, processed, *args):
        lib.EVENTS.append(("postprocess", len(processed.images)))

    # Named "Standin Probe" and always visible, on both tabs.
    def title(self):
        return "Standin Probe"

    def show(self, is_img2img):
        return scripts.AlwaysVisible


def on_unloaded():
    lib.EVENTS.append(("script_unloaded",))


def on_model_loaded(sd_model):
    lib.EVENTS.append(("model_loaded", sd_model.sd_checkpoint_info.name_for_extra))


def on_ui_settings():
    shared.opts.add_option("standin_probe_flag", shared.OptionInfo(False, "Probe flag", section=("standin_probe", "Probe")))


def on_before_ui():
    # how extensions add X/Y/Z plot axes: find the built-in script's module among the loaded scripts
    xyz = [x for x in scripts.scripts_data if x.script_class.__module__ == "xyz_grid.py"][0].module

    def apply_strength(p, x, xs):
        p.probe_axis_strength = x

    xyz.axis_options.extend(
        [
            xyz.AxisOption("[Probe] Strength", int, apply_strength),
            xyz.AxisOptionTxt2Img("[Probe] Mode", str, xyz.apply_field("probe_axis_mode"), choices=lambda: ["a", "b"]),
        ]
    )


script_callbacks.on_script_unloaded(on_unloaded)
script_callbacks.on_before_ui(on_before_ui)
script_callbacks.on_model_loaded(on_model_loaded)
script_callbacks.on_ui_settings(on_ui_settings)
"""

BROKEN_SCRIPT = """
import gradio as gr

from modules import scripts


class BrokenScript(scripts.Script):
    def process(self, p, enabled):
        if enabled:
            raise RuntimeError("broken on purpose")

    def ui(self, is_img2img):
        return [gr.Checkbox(value=True, label="Broken enabled")]

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def title(self):
        return "Broken"
"""


@pytest.fixture(scope="module")
def extension_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext") / "sd-webui-standin-probe"
    (root / "scripts").mkdir(parents=True)
    (root / "lib_standin_probe").mkdir()
    (root / "lib_standin_probe" / "__init__.py").write_text(textwrap.dedent(PROBE_LIB))
    (root / "scripts" / "probe.py").write_text(textwrap.dedent(PROBE_SCRIPT))
    (root / "scripts" / "zz_broken.py").write_text(textwrap.dedent(BROKEN_SCRIPT))
    yield str(root)
    sys.modules.pop("lib_standin_probe", None)


@pytest.fixture(scope="class")
def host(extension_dir):
    h = WebUIHost(sd15_unet(0), extension_dir=extension_dir)
    yield h
    h.teardown()


@pytest.fixture
def lib(host):
    module = sys.modules["lib_standin_probe"]
    module.EVENTS.clear()
    return module


@pytest.fixture(autouse=True)
def restore_opts(request):
    if "host" not in request.fixturenames:
        yield
        return
    saved = dict(shared.opts.data)
    added = []

    def on(category, fn):
        getattr(script_callbacks, "on_" + category)(fn)
        added.append(fn)

    request.node.register_callback = on
    yield
    for fn in added:
        script_callbacks.remove_callbacks_for_function(fn)
    shared.opts.data.clear()
    shared.opts.data.update(saved)


class Recorder:
    """U-Net pre-hook (rows and context length of every call) + on_cfg_denoiser recorder."""

    def __init__(self, request):
        self.calls = []
        self.denoiser = []
        unet = shared.sd_model.model.diffusion_model
        self.handle = unet.register_forward_pre_hook(self._hook, with_kwargs=True)
        request.node.register_callback("cfg_denoiser", self._on_cfg)
        request.addfinalizer(self.handle.remove)

    def _hook(self, module, args, kwargs):
        self.calls.append((args[0].shape[0], kwargs["context"].shape[1]))

    def _on_cfg(self, params):
        self.denoiser.append(
            {
                "x": params.x.clone(),
                "cond": params.text_cond.shape,
                "uncond": params.text_uncond.shape,
                "step": params.denoiser.step,
                "sampling_step": params.sampling_step,
                "total": params.denoiser.total_steps,
                "sigma": float(params.sigma[0]),
                "cond_tensor": params.text_cond.clone(),
            }
        )

    def rows(self):
        return [rows for rows, _ in self.calls]


def latents(processed):
    assert processed is not None
    return processed.standin_latents


def assert_same_up_to_float_noise(a, b):
    """Equal up to float32 rounding (different call batching changes kernel reduction order); relative
    to the latents' scale, which reaches ~50 with the random tiny U-Net."""
    assert a.shape == b.shape
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def probe_off():
    return {"Broken": [False]}


def gradient_image(size=64):
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rgb = np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)), np.full((size, size), 96.0)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def encode_image(image):
    import numpy as np

    pixels = torch.from_numpy(np.array(image, dtype="float32") / 127.5 - 1).permute(2, 0, 1)[None]
    return shared.sd_model.get_first_stage_encoding(shared.sd_model.encode_first_stage(pixels))


# Denoiser (CFGDenoiser.forward) calls per generation at steps=4: (txt2img, img2img with denoising 0.75,
# i.e. t_enc = 3), as the real samplers make them. k-diffusion samplers run the whole 4-step schedule in
# img2img too (sigmas[steps - t_enc - 1:] = sigmas[0:]); second-order ones call twice per step but once
# (Euler) on the last; DPM fast with n=4 runs a 3rd- then a 1st-order step; DPM adaptive depends on the
# model (None: not checked). Restart below 20 steps is plain Heun. Timestep samplers: DDIM never
# evaluates timesteps[0] (len(timesteps) - 1 calls; img2img runs timesteps[:t_enc]), PLMS adds a call in
# its first (pseudo improved Euler) step, UniPC makes one call per update (a call at t_T, then one
# corrector call per update but the last). LCM: one call per sigma.
SAMPLER_CALLS = {
    "DPM++ 2M": (4, 4),
    "DPM++ SDE": (7, 7),
    "DPM++ 2M SDE": (4, 4),
    "DPM++ 2M SDE Heun": (4, 4),
    "DPM++ 2S a": (7, 7),
    "DPM++ 3M SDE": (4, 4),
    "Euler a": (4, 4),
    "Euler": (4, 4),
    "LMS": (4, 4),
    "Heun": (7, 7),
    "DPM2": (7, 7),
    "DPM2 a": (7, 7),
    "DPM fast": (4, 4),
    "DPM adaptive": (None, None),
    "Restart": (7, 7),
    "DDIM": (3, 2),
    "DDIM CFG++": (3, 2),
    "PLMS": (4, 3),
    "UniPC": (4, 3),
    "LCM": (4, 4),
}

# the sampler's own step index "i" passed to Sampler.callback_state in txt2img at steps=4 (k-diffusion
# samplers: one per step; DPM fast: one per solver step; DPM adaptive: not checked)
SAMPLER_CALLBACK_STEPS = {name: 4 for name in SAMPLER_CALLS}
SAMPLER_CALLBACK_STEPS.update({"DPM fast": 2, "DPM adaptive": None, "DDIM": 3, "DDIM CFG++": 3, "PLMS": 3})


@pytest.fixture
def callback_steps(monkeypatch):
    """The "i" of every Sampler.callback_state call (what the sampler reports as its step); each call
    must leave it in shared.state.sampling_step."""
    seen = []
    original = sd_samplers_common.Sampler.callback_state

    def recording(self, d):
        result = original(self, d)
        assert shared.state.sampling_step == d["i"]
        seen.append(d["i"])
        return result

    monkeypatch.setattr(sd_samplers_common.Sampler, "callback_state", recording)
    return seen


# ---------------------------------------------------------------------------------------------------


class TestWithHost:
    """Tests sharing one host (class-scoped: torn down before test_teardown_restores_globals)."""

    def test_deterministic_per_seed_and_batches_match_single_images(self, host):
        a = latents(host.txt2img("a cat", steps=3, seed=11, sampler_name="Euler a", script_args=probe_off()))
        b = latents(host.txt2img("a cat", steps=3, seed=11, sampler_name="Euler a", script_args=probe_off()))
        c = latents(host.txt2img("a cat", steps=3, seed=12, sampler_name="Euler a", script_args=probe_off()))
        batch = host.txt2img("a cat", steps=3, seed=11, batch_size=2, sampler_name="Euler a", script_args=probe_off())
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)
        # seeds 11, 12 in one batch give the single-image results (ImageRNG + TorchHijack), grid first
        assert batch.all_seeds == [11, 12]
        assert len(batch.images) == 3 and batch.index_of_first_image == 1
        assert_same_up_to_float_noise(latents(batch), torch.cat([a, c]))

    def test_batch_cond_uncond_on_and_off_agree(self, host, request):
        rec = Recorder(request)
        on = latents(host.txt2img("a red cat", "blurry", steps=3, batch_size=2, script_args=probe_off()))
        assert rec.rows() == [4, 4, 4]
        rec.calls.clear()
        shared.opts.batch_cond_uncond = False
        off = latents(host.txt2img("a red cat", "blurry", steps=3, batch_size=2, script_args=probe_off()))
        assert rec.rows() == [2, 2] * 3  # chunks of batch_size rows: cond rows, then uncond rows
        assert_same_up_to_float_noise(on, off)

    def test_long_prompt_takes_the_different_token_length_path(self, host, request):
        rec = Recorder(request)
        long_prompt = " ".join(f"word{i}" for i in range(80))
        on = latents(host.txt2img(long_prompt, steps=2, batch_size=2, script_args=probe_off()))
        # cond rows (2 chunks = 154 context rows), then a separate call for the uncond rows (77)
        assert rec.calls == [(2, 154), (2, 77)] * 2
        assert rec.denoiser[0]["cond"] == (2, 154, 768) and rec.denoiser[0]["uncond"] == (2, 77, 768)

        # with AND there are more cond rows than images: chunks of 2*batch_size rows, or batch_size rows
        # without batch_cond_uncond
        rec.calls.clear()
        and_prompt = long_prompt + " AND a short one"
        on = latents(host.txt2img(and_prompt, steps=2, batch_size=2, script_args=probe_off()))
        assert rec.calls == [(4, 154), (2, 77)] * 2
        rec.calls.clear()
        shared.opts.batch_cond_uncond = False
        off = latents(host.txt2img(and_prompt, steps=2, batch_size=2, script_args=probe_off()))
        assert rec.calls == [(2, 154), (2, 154), (2, 77)] * 2
        assert_same_up_to_float_noise(on, off)

        rec.calls.clear()
        shared.opts.batch_cond_uncond = True
        shared.opts.pad_cond_uncond = True
        padded = host.txt2img(long_prompt, steps=2, batch_size=2, script_args=probe_off())
        assert rec.calls == [(4, 154)] * 2  # uncond padded with the empty prompt: one call again
        assert "Pad conds: True" in padded.info

    def test_and_prompt_x_in_layout(self, host, request):
        rec = Recorder(request)
        host.txt2img("a cat AND a dog :0.5 AND a hat", steps=2, batch_size=2, script_args=probe_off())
        assert rec.rows() == [8, 8]  # 2 images x 3 sub-prompts, then 2 uncond rows, in one call
        first = rec.denoiser[0]
        x = first["x"]
        assert first["cond"] == (6, 77, 768) and first["uncond"] == (2, 77, 768)
        for i in range(3):
            assert torch.equal(x[i], x[0]) and torch.equal(x[3 + i], x[3])
        assert torch.equal(x[6], x[0]) and torch.equal(x[7], x[3])
        assert not torch.equal(x[0], x[3])

    def test_skip_early_cond_and_ngms_drop_uncond_rows(self, host, request):
        rec = Recorder(request)
        shared.opts.skip_early_cond = 0.5
        processed = host.txt2img("a cat", steps=4, script_args=probe_off())
        # step/total_steps <= 0.5 for steps 0, 1, 2; the callback still saw the full x_in every time
        assert rec.rows() == [1, 1, 1, 2]
        assert [d["x"].shape[0] for d in rec.denoiser] == [2, 2, 2, 2]
        assert "Skip Early CFG: 0.5" in processed.info

        rec.calls.clear()
        shared.opts.skip_early_cond = 0.0
        processed = host.txt2img("a cat", steps=4, script_args=probe_off(), override_settings_texts=["NGMS: 100"])
        assert rec.rows() == [2, 1, 2, 1]  # odd steps while sigma < s_min_uncond
        assert "NGMS: 100" in processed.info

    def test_heun_calls_the_denoiser_twice_per_step_except_the_last(self, host, request):
        rec = Recorder(request)
        host.txt2img("a cat", steps=4, sampler_name="Heun", script_args=probe_off())
        assert len(rec.calls) == 7
        assert [d["step"] for d in rec.denoiser] == list(range(7))
        assert rec.denoiser[0]["total"] == 8
        # state.sampling_step lags: it is set by k-diffusion's callback after a step's first model call
        assert [d["sampling_step"] for d in rec.denoiser] == [0, 0, 0, 1, 1, 2, 2]

        rec.calls.clear()
        host.txt2img("a cat", steps=4, sampler_name="DPM2", script_args=probe_off())
        assert len(rec.calls) == 7

    def test_sampler_list_is_the_real_one(self, host):
        names = [x.name for x in sd_samplers.all_samplers]
        assert names == list(SAMPLER_CALLS)  # k-diffusion (Restart last), timesteps, LCM, in the real order
        assert sd_samplers.find_sampler_config(None).name == "DPM++ 2M"
        assert sd_samplers.find_sampler_config("UniPC").constructor is not None
        assert sd_samplers.samplers_map["ddim_cfgpp"] == "DDIM CFG++" and sd_samplers.samplers_map["k_lcm"] == "LCM"
        assert sd_samplers.samplers_map["restart"] == "Restart" and sd_samplers.samplers_map["plms"] == "PLMS"
        # "Restart Karras" is Restart with its own default scheduler, i.e. Automatic
        assert sd_samplers.get_sampler_and_scheduler("Restart Karras", None) == ("Restart", "Automatic")
        assert sd_samplers.get_sampler_from_infotext({"Sampler": "DDIM", "Schedule type": "Karras"}) == "DDIM"
        assert sd_samplers.get_scheduler_from_infotext({"Sampler": "DDIM", "Schedule type": "Karras"}) == "Karras"
        shared.opts.hide_samplers = ["PLMS", "LCM"]
        sd_samplers.set_samplers()
        try:
            visible = sd_samplers.visible_sampler_names()
            assert "PLMS" not in visible and "LCM" not in visible and "UniPC" in visible and "Restart" in visible
        finally:
            shared.opts.hide_samplers = []
            sd_samplers.set_samplers()

    @pytest.mark.parametrize("sampler_name", list(SAMPLER_CALLS))
    def test_every_sampler_runs_txt2img_and_img2img(self, host, request, callback_steps, sampler_name):
        rec = Recorder(request)
        processed = host.txt2img("a cat", "blurry", steps=4, sampler_name=sampler_name, script_args=probe_off())
        assert f"Sampler: {sampler_name}," in processed.info
        assert processed.standin_latents.shape == (1, 4, 8, 8) and torch.isfinite(processed.standin_latents).all()
        txt2img_calls, img2img_calls = SAMPLER_CALLS[sampler_name]
        if txt2img_calls is not None:
            assert len(rec.calls) == txt2img_calls
        assert [d["step"] for d in rec.denoiser] == list(range(len(rec.denoiser)))
        # the callback gets the sampler's own step index
        assert callback_steps == list(range(len(callback_steps))) and callback_steps
        if SAMPLER_CALLBACK_STEPS[sampler_name] is not None:
            assert len(callback_steps) == SAMPLER_CALLBACK_STEPS[sampler_name]

        rec.calls.clear()
        out = host.img2img(gradient_image(), "a cat", steps=4, sampler_name=sampler_name, script_args=probe_off())
        assert torch.isfinite(out.standin_latents).all() and out.images[0].size == (64, 64)
        if img2img_calls is not None:
            assert len(rec.calls) == img2img_calls

    def test_restart_at_20_steps_runs_a_restart_segment(self, host, request, callback_steps):
        rec = Recorder(request)
        processed = host.txt2img("a cat", steps=20, sampler_name="Restart", script_args=probe_off())
        assert torch.isfinite(processed.standin_latents).all()
        # 11 Karras steps (20 - 9 restart steps), then the segment from sigma ~2 back to ~0.1 (9 steps) once:
        # 20 Heun steps, two calls each except the last (Euler to sigma 0)
        assert len(rec.calls) == 39 and callback_steps == list(range(20))
        assert rec.denoiser[0]["total"] == 40  # second order: 2 x steps
        sigmas = [d["sigma"] for d in rec.denoiser]
        jumps = [(a, b) for a, b in zip(sigmas, sigmas[1:]) if b > a]
        assert len(jumps) == 1  # the latent is re-noised once, from ~0.1 up to ~2
        low, high = jumps[0]
        assert 0.05 < low < 0.2 and 1.0 < high < 4.0

        rec.calls.clear()
        rec.denoiser.clear()
        host.txt2img("a cat", steps=19, sampler_name="Restart", script_args=probe_off())
        sigmas = [d["sigma"] for d in rec.denoiser]
        assert len(rec.calls) == 37 and all(b <= a for a, b in zip(sigmas, sigmas[1:]))  # below 20 steps: Heun

    def test_ddim_eta_and_timestep_inputs(self, host, request):
        rec = Recorder(request)
        plain = host.txt2img("a cat", steps=4, sampler_name="DDIM", script_args=probe_off())
        # timesteps 1, 251, 501, 751: evaluated from the last down to the second
        assert [d["sigma"] for d in rec.denoiser] == [751.0, 501.0, 251.0]
        assert "Eta DDIM" not in plain.info
        shared.opts.eta_ddim = 0.5
        noisy = host.txt2img("a cat", steps=4, sampler_name="DDIM", script_args=probe_off())
        assert "Eta DDIM: 0.5" in noisy.info
        assert not torch.allclose(plain.standin_latents, noisy.standin_latents)
        # PLMS has no eta parameter: no infotext, the same result whatever eta_ddim is
        plms = host.txt2img("a cat", steps=4, sampler_name="PLMS", script_args=probe_off())
        assert "Eta DDIM" not in plms.info
        shared.opts.eta_ddim = 0.0
        again = host.txt2img("a cat", steps=4, sampler_name="PLMS", script_args=probe_off())
        assert torch.equal(again.standin_latents, plms.standin_latents)

    def test_timestep_samplers_blend_the_mask_before_the_model_call(self, host, request):
        from PIL import Image

        rec = Recorder(request)
        image = gradient_image()
        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (0, 0, 32, 64))
        original = encode_image(image)[0, :, :, 4:]
        out = host.img2img(image, "a dog", mask=mask, mask_blur=0, steps=4, sampler_name="DDIM", script_args=probe_off())
        torch.testing.assert_close(out.standin_latents[0, :, :, 4:], original, atol=1e-5, rtol=0)
        # mask_before_denoising: the kept half of every model input is the original latent
        for d in rec.denoiser:
            for row in d["x"]:
                assert torch.equal(row[:, :, 4:], original)
        # the k-diffusion samplers blend after the model call: their inputs there are noised
        rec.denoiser.clear()
        host.img2img(image, "a dog", mask=mask, mask_blur=0, steps=4, sampler_name="Euler", script_args=probe_off())
        assert not torch.allclose(rec.denoiser[1]["x"][0, :, :, 4:], original)

    def test_clip_skip_changes_the_conditioning_and_the_infotext(self, host, request):
        rec = Recorder(request)
        one = host.txt2img("a cat", steps=1, script_args=probe_off())
        assert "Clip skip" not in one.info  # create_infotext: None when clip skip <= 1
        shared.opts.CLIP_stop_at_last_layers = 2
        two = host.txt2img("a cat", steps=1, script_args=probe_off())
        assert "Clip skip: 2" in two.info
        cond_one, cond_two = rec.denoiser[0]["cond_tensor"], rec.denoiser[1]["cond_tensor"]
        assert cond_one.shape == cond_two.shape and not torch.allclose(cond_one, cond_two)
        assert not torch.equal(one.standin_latents, two.standin_latents)

        shared.opts.CLIP_stop_at_last_layers = 1
        three = host.txt2img("a cat", steps=1, script_args=probe_off(), override_settings_texts=["Clip skip: 3"])
        assert "Clip skip: 3" in three.info and shared.opts.CLIP_stop_at_last_layers == 1
        cond_three = rec.denoiser[2]["cond_tensor"]
        assert not torch.allclose(cond_three, cond_one) and not torch.allclose(cond_three, cond_two)

        # the encoder: deterministic, hidden_states[-N] through the final layer norm (N = 1: the last layer)
        encoder = shared.sd_model.cond_stage_model
        shared.opts.CLIP_stop_at_last_layers = 2
        torch.testing.assert_close(encoder(["a cat"]), cond_two, atol=0, rtol=0)
        tokens = torch.asarray([encoder.tokenize_line("a cat")[0][0].tokens])
        hidden = encoder.hidden_states(tokens)
        assert len(hidden) == 13
        assert torch.equal(encoder.encode_with_transformers(tokens), encoder.final_layer_norm(hidden[-2]))
        shared.opts.CLIP_stop_at_last_layers = 1
        assert torch.equal(encoder.encode_with_transformers(tokens), encoder.final_layer_norm(hidden[-1]))

    def test_emphasis_modes_change_the_conditioning(self, host, request):
        model = shared.sd_model
        prompt = "a (cat:1.5) on a [mat]"

        def encode(text, mode):
            shared.opts.emphasis = mode
            return model.get_learned_conditioning([text])

        original, no_norm = encode(prompt, "Original"), encode(prompt, "No norm")
        ignore, none = encode(prompt, "Ignore"), encode(prompt, "None")
        plain = encode("a cat on a mat", "Original")
        shared.opts.emphasis = "Original"
        multipliers = torch.tensor(model.cond_stage_model.tokenize_line(prompt)[0][0].multipliers)
        assert sorted(set(multipliers.tolist())) == pytest.approx([1 / 1.1, 1.0, 1.5])

        assert torch.equal(ignore, plain)  # parsed, weights not applied
        torch.testing.assert_close(no_norm, ignore * multipliers[None, :, None])  # weights, no mean restore
        torch.testing.assert_close(original, no_norm * (ignore.mean() / no_norm.mean()))  # mean restored
        torch.testing.assert_close(original.mean(), ignore.mean())
        assert not torch.allclose(original, no_norm) and not torch.allclose(original, ignore)
        assert none.shape == plain.shape and not torch.allclose(none, plain)  # brackets are literal text

        # in a generation: the cond the model sees, and "Emphasis" in the infotext unless it is Original
        rec = Recorder(request)
        shared.opts.emphasis = "No norm"
        processed = host.txt2img(prompt, steps=1, script_args=probe_off())
        torch.testing.assert_close(rec.denoiser[0]["cond_tensor"], no_norm)
        assert "Emphasis: No norm" in processed.info
        shared.opts.emphasis = "Original"
        processed = host.txt2img(prompt, steps=1, script_args=probe_off())
        torch.testing.assert_close(rec.denoiser[1]["cond_tensor"], original)
        assert "Emphasis" not in processed.info

    def test_script_exception_is_reported_and_generation_goes_on(self, host, lib):
        before = len(errors.reports)
        processed = host.txt2img("a cat", steps=2, script_args={"Broken": [True]})
        assert processed is not None and len(processed.images) == 1
        messages = [m for m, _ in errors.reports[before:]]
        assert any(m.startswith("Error running process:") and m.endswith("zz_broken.py") for m in messages)
        assert any(e[0] == "postprocess" for e in lib.EVENTS)

    def test_lifecycle_order_and_script_args(self, host, lib):
        processed = host.txt2img(
            "a cat", steps=2, n_iter=2, seed=3, script_args={"Standin Probe": [True, 0.5, "b"], "Broken": [False]}
        )
        names = [e[0] for e in lib.EVENTS]
        per_batch = [
            "before_process_batch",
            "process_batch",
            "process_before_every_sampling",
            "post_sample",
            "postprocess_batch",
            "postprocess_batch_list",
            "postprocess_image",
        ]
        assert names == ["setup", "before_process", "process"] + per_batch * 2 + ["postprocess"]
        setup = lib.EVENTS[0]
        assert setup[1] == (True, 0.5, "b")
        # extension setup() runs before the built-in Sampler script's setup (it is later in scripts_data)
        assert setup[2] == 50
        assert lib.EVENTS[2][2:] == (["a cat", "a cat"], [3, 4])
        assert lib.EVENTS[4][1:] == (0, ["a cat"], [3])
        assert "Probe strength: 0.5, Probe mode: b" in processed.infotexts[1]
        assert processed.infotexts[2].split("Seed: ")[1].startswith("4,")

    def test_infotext_round_trip_through_infotext_fields(self, host, lib):
        processed = host.txt2img("a cat", steps=2, script_args={"Standin Probe": [True, 0.75, "b"], "Broken": [False]})
        values = host.script_values_from_infotext(processed.info, "Standin Probe")
        assert values == [True, 0.75, "b"]
        from modules.infotext_utils import parse_generation_parameters

        params = parse_generation_parameters(processed.info)
        assert params["Steps"] == "2" and params["Size-1"] == "64" and params["Probe mode"] == "b"

    def test_api_maps_alwayson_args_positionally_and_reports_errors(self, host, lib):
        payload = {
            "prompt": "a cat",
            "steps": 2,
            "width": 64,
            "height": 64,
            "seed": 5,
            "sampler_name": "Euler",
            "alwayson_scripts": {"standin probe": {"args": [True, 0.5]}, "Broken": {"args": [False]}},
        }
        status, body = host.api_txt2img(payload)
        assert status == 200, body
        setup = [e for e in lib.EVENTS if e[0] == "setup"][0]
        assert setup[1] == (True, 0.5, "a") and setup[2] == 2  # missing args keep the UI defaults
        assert "Probe strength: 0.5" in body["info"] and len(body["images"]) == 1

        status, body = host.api_txt2img({**payload, "alwayson_scripts": {"no such script": {"args": []}}})
        assert status == 422
        assert body == {
            "error": "HTTPException",
            "detail": "Script 'no such script' not found",
            "body": "",
            "errors": "422: Script 'no such script' not found",
        }

        status, body = host.api_txt2img({**payload, "alwayson_scripts": {}, "width": 60})
        assert status == 500 and body["error"] == "RuntimeError" and body["detail"] == ""

    def test_interrupt_and_skip(self, host, request):
        rec = Recorder(request)
        host.interrupt_at(1)
        processed = host.txt2img("a cat", steps=4, n_iter=2, script_args=probe_off())
        assert len(rec.calls) == 2  # interrupted before the third denoiser call; the second batch never starts
        assert len(processed.images) == 1
        assert not shared.state.interrupted  # the UI wrapper resets the flags

        rec.calls.clear()
        host.interrupt_at(0, skip=True)
        processed = host.txt2img("a cat", steps=3, n_iter=2, script_args=probe_off())
        assert len(rec.calls) == 1 + 3  # first batch skipped after one call, second batch complete
        assert len(processed.images) == 3

    def test_prompt_editing_changes_the_cond_mid_sampling(self, host, request):
        rec = Recorder(request)
        host.txt2img("a [cat:dog:2] on a mat", steps=4, script_args=probe_off())
        conds = [d["cond_tensor"] for d in rec.denoiser]
        assert torch.equal(conds[0], conds[1]) and torch.equal(conds[1], conds[2])
        assert not torch.equal(conds[2], conds[3])

    def test_hires_img2img_and_inpaint_run(self, host, lib):
        processed = host.txt2img("a cat", steps=2, enable_hr=True, hr_scale=2.0, denoising_strength=0.5, script_args=probe_off())
        assert processed.images[0].size == (128, 128) and processed.standin_latents.shape == (1, 4, 16, 16)
        passes = [e[2] for e in lib.EVENTS if e[0] == "process_before_every_sampling"]
        assert passes == [False, True]
        assert "Hires upscale: 2.0" in processed.info and "Denoising strength: 0.5" in processed.info

        image = processed.images[0].resize((64, 64))
        out = host.img2img(image, "a dog", steps=4, denoising_strength=0.5, script_args=probe_off())
        assert out.images[0].size == (64, 64) and "Denoising strength: 0.5" in out.info

        from PIL import Image

        mask = Image.new("L", (64, 64), 0)
        mask.paste(255, (0, 0, 32, 64))
        out = host.img2img(image, "a dog", mask=mask, mask_blur=0, steps=4, denoising_strength=0.5, script_args=probe_off())
        kept = out.standin_latents[0, :, :, 4:]
        original = shared.sd_model.get_first_stage_encoding(
            shared.sd_model.encode_first_stage(
                torch.from_numpy(__import__("numpy").array(image, dtype="float32") / 127.5 - 1).permute(2, 0, 1)[None]
            )
        )
        torch.testing.assert_close(kept, original[0, :, :, 4:], atol=1e-5, rtol=0)

    def test_sd_unet_replacement_bypasses_the_ldm_unet(self, host, request):
        rec = Recorder(request)  # a pre-hook on the UNetModel instance: it fires even with an SdUnet active
        plain = latents(host.txt2img("a cat", steps=2, script_args=probe_off()))
        option = host.add_sd_unet("[TRT] probe")
        assert sd_unet.unet_options == [option] and sd_unet.current_unet is None  # active from the next generation
        saved_forward = ldm_attention.CrossAttention.forward
        try:
            # an attention patch that would change the output: no effect on the engine
            ldm_attention.CrossAttention.forward = lambda self, x, context=None, mask=None, **kw: torch.zeros_like(x)
            engine = latents(host.txt2img("a cat", steps=2, script_args=probe_off()))
            assert option.activations == 1 and option.calls == 2 and sd_unet.current_unet is not None
            assert_same_up_to_float_noise(plain, engine)
            assert len(rec.calls) == 4

            shared.opts.sd_unet = "None"  # the checkpoint's own U-Net: the patch takes effect
            patched = latents(host.txt2img("a cat", steps=2, script_args=probe_off()))
            assert option.deactivations == 1 and sd_unet.current_unet is None
            assert not torch.allclose(patched, plain)

            shared.opts.sd_unet = "[TRT] probe"
            host.txt2img("a cat", steps=1, script_args=probe_off())
            assert option.activations == 2
        finally:
            ldm_attention.CrossAttention.forward = saved_forward
            host.remove_sd_unet(option)
        assert sd_unet.current_unet is None and option.deactivations == 2

    def test_token_merging_with_tomesd(self, host, request):
        tokens = []
        unet = shared.sd_model.model.diffusion_model
        block = unet.input_blocks[1][1].transformer_blocks[0]  # full latent resolution: merged
        handle = block.attn1.register_forward_pre_hook(lambda module, args: tokens.append(args[0].shape[1]))
        request.addfinalizer(handle.remove)
        processed = host.txt2img("a cat", steps=1, script_args=probe_off(), override_settings_texts=["Token merging ratio: 0.5"])
        assert tokens == [32]  # 8x8 latent = 64 tokens, half of them merged
        assert "Token merging ratio: 0.5" in processed.info
        assert type(block) is ldm_attention.BasicTransformerBlock  # tomesd's class swap was undone
        host.txt2img("a cat", steps=1, script_args=probe_off())
        assert tokens == [32, 64]  # the patch was removed at the end of the generation

    def test_xyz_plot_runs_one_generation_per_cell_with_extension_axes(self, host, lib):
        xyz = host.script("X/Y/Z plot")
        labels = [o.label for o in xyz.current_axis_options]
        assert labels[:2] == ["Nothing", "Seed"] and labels[-2:] == ["[Probe] Strength", "[Probe] Mode"]
        x_type, y_type = labels.index("[Probe] Strength"), labels.index("[Probe] Mode")

        # int parsing: "a-b (+step)", "a-b [count]", plain values; y: a dropdown axis (values from the
        # dropdown input)
        args = {0: x_type, 1: "1-7 (+3), 20-22 [2], 5", 3: y_type, 5: ["a", "b"], 10: True}  # 10: Include Sub Images
        processed = host.txt2img("a cat", steps=1, seed=7, selected_script="X/Y/Z plot", script_args={"X/Y/Z plot": args})
        cells = [e[1:] for e in lib.EVENTS if e[0] == "axis"]
        # z outermost, then y, then x (no axis is costlier); every cell has the same fixed seed
        assert cells == [(x, m, 7) for m in "ab" for x in (1, 4, 7, 20, 22, 5)]
        assert len([e for e in lib.EVENTS if e[0] == "setup"]) == 1  # setup once, on the original p
        assert len([e for e in lib.EVENTS if e[0] == "postprocess"]) == 12
        assert len(processed.images) == 1 + 12 and processed.images[1].size == (64, 64)
        assert 'Script: X/Y/Z plot, X Type: [Probe] Strength, X Values: "1-7 (+3), 20-22 [2], 5"' in processed.infotexts[0]
        assert 'Y Type: [Probe] Mode, Y Values: "a,b"' in processed.infotexts[0]

        # the API with script_name/script_args: raw values, the type as an index
        script_args = [x_type, "2-3", [], 0, "", [], 0, "", [], False, False, False, False, False, False, False, 0, False]
        lib.EVENTS.clear()
        status, body = host.api_txt2img(
            {"prompt": "a cat", "steps": 1, "width": 64, "height": 64, "script_name": "x/y/z plot", "script_args": script_args}
        )
        assert status == 200, body
        assert [e[1] for e in lib.EVENTS if e[0] == "axis"] == [2, 3] and len(body["images"]) == 1

    def test_reload_scripts_and_switch_model(self, host, lib, extension_dir):
        lib_module = sys.modules["lib_standin_probe"]
        loads = len(lib_module.LOADS)
        old_runner = host.runner()
        host.reload_scripts()
        assert ("script_unloaded",) in lib.EVENTS
        assert len(lib_module.LOADS) == loads + 1  # the script file ran again...
        assert sys.modules["lib_standin_probe"] is lib_module  # ...but its library was not re-imported
        basedir, path_during_load = lib_module.LOADS[-1]
        assert basedir == extension_dir and path_during_load[0] == extension_dir
        assert extension_dir not in sys.path
        assert host.runner() is not old_runner
        assert not any(e[0] == "model_loaded" for e in lib.EVENTS)  # reload keeps the model, no callback
        assert len(script_callbacks.callback_map["callbacks_script_unloaded"]) == 1
        assert "standin_probe_flag" in shared.opts.data_labels
        # xyz_grid.py ran again (a fresh axis_options) and the extension's before_ui added its axes again
        labels = [o.label for o in host.script("X/Y/Z plot").current_axis_options]
        assert labels.count("[Probe] Strength") == 1 and labels.count("[Probe] Mode") == 1

        lib.EVENTS.clear()
        old_hash = shared.sd_model.sd_model_hash
        old_model = shared.sd_model
        other = sd15_unet(1)
        host.switch_model(other, name="tiny-other")
        assert lib.EVENTS == [("model_loaded", "tiny-other")]
        assert shared.sd_model is not old_model and shared.sd_model.model.diffusion_model is other
        processed = host.txt2img("a cat", steps=2, script_args=probe_off())
        assert "Model: tiny-other" in processed.info and old_hash not in processed.info


def test_checkpoint_loading_unloading_and_cache(extension_dir):
    base = sd15_unet(0)
    h = WebUIHost(base, extension_dir=extension_dir)
    lib = sys.modules["lib_standin_probe"]  # imported by the probe's script while the host loads it
    try:
        first = h.txt2img("a cat", steps=1, script_args=probe_off()).standin_latents
        original_model = shared.sd_model

        # another config: a new model object; the old one is trashed (sd_checkpoints_limit 1)
        other = h.switch_model(sd15_unet(1), name="tiny-other")
        assert other is not original_model and base.time_embed[0].weight.device.type == "meta"

        # back to the first checkpoint: rebuilt from its file (new objects, same weights and result)
        lib.EVENTS.clear()
        rebuilt = h.switch_model("tiny-sd15")
        assert lib.EVENTS == [("model_loaded", "tiny-sd15")] and rebuilt.model.diffusion_model is not base
        assert torch.equal(h.txt2img("a cat", steps=1, script_args=probe_off()).standin_latents, first)

        # same config (inplace): weights copied into the loaded modules, same objects
        third = h.switch_model(sd15_unet(2), name="tiny-third", inplace=True)
        assert third is rebuilt and shared.sd_model.sd_checkpoint_info.name_for_extra == "tiny-third"

        # hires checkpoint: the second pass loads it (not written to the settings); the next generation
        # goes back to the configured checkpoint
        lib.EVENTS.clear()
        processed = h.txt2img("a cat", steps=1, enable_hr=True, hr_checkpoint_name="tiny-other", script_args=probe_off())
        assert "Hires checkpoint: tiny-other" in processed.info and "Model: tiny-third" in processed.info
        assert shared.sd_model.sd_checkpoint_info.name_for_extra == "tiny-other"
        assert shared.opts.sd_model_checkpoint == third.sd_checkpoint_info.title
        h.txt2img("a cat", steps=1, script_args=probe_off())
        assert [e[1] for e in lib.EVENTS if e[0] == "model_loaded"] == ["tiny-other", "tiny-third"]

        # with sd_checkpoints_limit 2, two models stay loaded and switching back reuses the object
        # without on_model_loaded
        shared.opts.sd_checkpoints_limit = 2
        current = shared.sd_model
        lib.EVENTS.clear()
        h.switch_model("tiny-other")
        h.switch_model(current.sd_checkpoint_info.title)
        assert shared.sd_model is current and lib.EVENTS == [("model_loaded", "tiny-other")]
        assert len(sd_models.model_data.loaded_sd_models) == 2
    finally:
        h.teardown()
    assert base.time_embed[0].weight.device.type == "cpu"  # the test's U-Net is given back intact
    assert torch.equal(base.time_embed[0].weight, sd15_unet(0).time_embed[0].weight)


def test_sdxl_refiner_switches_models_mid_sampling():
    base, refiner = sdxl_unet(0), sdxl_refiner_unet(0)
    h = WebUIHost(base, model_name="tiny-sdxl")
    seen = []

    def on_cfg(params):
        model_name = shared.sd_model.sd_checkpoint_info.name_for_extra
        seen.append((params.denoiser.step, model_name, params.text_cond["crossattn"].shape[-1]))

    script_callbacks.on_model_loaded(lambda m: seen.append(("loaded", m.sd_checkpoint_info.name_for_extra)))
    script_callbacks.on_cfg_denoiser(on_cfg)
    try:
        shared.opts.refiner_switch_by_sample_steps = True
        processed = h.txt2img("a cat", steps=3, refiner=(refiner, "tiny-refiner"), refiner_switch_at=0.6)
        # the refiner is loaded before the first denoiser call with step/total_steps >= 0.6 and before its
        # cfg_denoiser callbacks; conds are recomputed with the refiner's 1280-wide text encoder
        base_calls = [(0, "tiny-sdxl", 2048), (1, "tiny-sdxl", 2048)]
        assert seen == base_calls + [("loaded", "tiny-refiner"), (2, "tiny-refiner", 1280)]
        assert "Model: tiny-sdxl" in processed.info and "Refiner: tiny-refiner [" in processed.info
        assert "Refiner switch at: 0.6" in processed.info
        # a different config: the refiner is a new model; the base model went to the trash
        assert shared.sd_model.model.diffusion_model is refiner and base.out[2].weight.device.type == "meta"
        assert shared.opts.sd_model_checkpoint.startswith("tiny-sdxl")  # SkipWritingToConfig

        # the next generation reloads the configured checkpoint (a new base model); the refiner again is
        # a new model too (the first refiner model was trashed)
        seen.clear()
        h.txt2img("a cat", steps=2, refiner="tiny-refiner", refiner_switch_at=0.5)
        assert seen == [("loaded", "tiny-sdxl"), (0, "tiny-sdxl", 2048), ("loaded", "tiny-refiner"), (1, "tiny-refiner", 1280)]
        assert shared.sd_model.model.diffusion_model is not refiner and refiner.out[2].weight.device.type == "meta"
    finally:
        h.teardown()
    assert base.out[2].weight.device.type == "cpu" and refiner.out[2].weight.device.type == "cpu"


def test_teardown_restores_globals(extension_dir):
    import gradio as gr
    import k_diffusion.sampling

    import ldm.modules.attention as attention
    from ldm.modules.diffusionmodules.openaimodel import UNetModel
    from modules import scripts

    forward = attention.CrossAttention.forward
    unet_forward = UNetModel.forward
    io_init = gr.components.IOComponent.__init__
    opts_before = dict(shared.opts.data)
    path_before = list(sys.path)

    sys.modules.pop("lib_standin_probe", None)
    h = WebUIHost(sd15_unet(0), extension_dir=extension_dir)
    assert attention.CrossAttention.forward is not forward and UNetModel.forward is not unet_forward
    h.txt2img("a cat", steps=1, sampler_name="Euler a", script_args=probe_off())
    assert k_diffusion.sampling.torch is not torch
    assert "lib_standin_probe" in sys.modules
    h.teardown()
    assert "lib_standin_probe" not in sys.modules  # the process that imported it has ended

    assert attention.CrossAttention.forward is forward and UNetModel.forward is unet_forward
    assert not sd_models.model_data.loaded_sd_models and sd_unet.current_unet is None and not sd_unet.unet_options
    assert gr.components.IOComponent.__init__ is io_init
    assert k_diffusion.sampling.torch is torch
    assert shared.opts.data == opts_before and sys.path == path_before
    assert shared.sd_model is None and scripts.scripts_txt2img is None
    assert all(not callbacks for callbacks in script_callbacks.callback_map.values())
