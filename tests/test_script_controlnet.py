"""MasaCtrl beside the ControlNet extension, end to end in the stand-in WebUI (tests/webui).

The ControlNet extension is a second extension written into a temporary directory
(``<tmp>/sd-webui-controlnet/scripts/controlnet.py``, see ``CONTROLNET_SCRIPT``): an always-visible
script titled "ControlNet" that does, at the level MasaCtrl depends on, what the real
Mikubill/sd-webui-controlnet ``scripts/controlnet.py`` ``Script`` does (v1.1.455): its ``ui()``
returns one ``gr.State`` per unit tab, ``process`` restores the previous network, builds one
``ControlParams`` per enabled unit and hooks the U-Net with a ``UnetHook`` from
``tests/controlnet_standin.py`` (which marks cond/uncond prompts around ``p.sample`` and registers
its guidance handler with ``on_cfg_denoiser``), ``latest_network`` holds the hook,
``ui_batch_option_state`` the "Batch Options" radio, and ``postprocess`` restores and forgets it.

Units travel as the real ones do, as the script's args (``script_args={"ControlNet": [unit, ...]}``):
each is a dict ``{"model": <PlugableControlModel or None>, "type": ControlModelType, "hint": tensor,
**unit_params options}`` (see :func:`unit`); ``None`` is an empty unit tab.

Test instrumentation, not in the real extension: the script keeps every network it built in
``networks`` and each network its params in ``built_params`` (the real ``restore`` drops
``control_params``); ``UnetHook.residual_log`` (controlnet_standin.py) holds, per U-Net call, what
each unit added.

Script order: the WebUI loads extensions in directory-name order, so in a default install
("sd-webui-controlnet" < "sd-webui-masactrl") ControlNet's ``process`` runs before MasaCtrl's. The
stand-in host loads them in registration order: registering ControlNet before creating the host
gives that order; registering it afterwards and pressing "Reload UI" (``host.reload_scripts()``,
which lists the registered extensions again) gives the other.
"""

from __future__ import annotations

import contextlib
import pathlib
import sys
from types import SimpleNamespace

import pytest
import torch
from controlnet_standin import (
    PER_CALL_ATTRIBUTES,
    ControlModelType,
    PlugableControlModel,
    TinyControlNet,
)
from engine_helpers import module_state
from refusals import ui_refusal
from tiny_unets import sd15_unet

from lib_masactrl.controlnet_rows import _is_ours, release_units

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT / "tests" / "webui") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests" / "webui"))
SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"
SEPARATE = "Each ControlNet unit for each image in a batch"
# Rows of every U-Net call with batch 2 (CFGDenoiser stacks cond rows, then uncond rows).
SOURCE_ROWS, TARGET_ROWS = [0, 2], [1, 3]
STEPS = 4

CONTROLNET_SCRIPT = '''
"""Stand-in of the ControlNet extension's script for tests/test_script_controlnet.py; written from
Mikubill/sd-webui-controlnet v1.1.455 scripts/controlnet.py (Script) and scripts/hook.py."""

from types import SimpleNamespace

import gradio as gr
import numpy as np
import torch
from controlnet_standin import UnetHook as StandInUnetHook
from PIL import Image
from controlnet_standin import clear_all_secondary_control_models, unit_params

from modules import script_callbacks, scripts
from modules.processing import StableDiffusionProcessing
from modules.prompt_parser import (
    ComposableScheduledPromptConditioning,
    MulticondLearnedConditioning,
    ScheduledPromptConditioning,
)

UNIT_COUNT = 3  # opts "control_net_unit_count" default
DEFAULT_BATCH_OPTION = "All ControlNet units for all images in a batch"
SEPARATE_BATCH_OPTION = "Each ControlNet unit for each image in a batch"
POSITIVE_MARK_TOKEN = 1024
NEGATIVE_MARK_TOKEN = -POSITIVE_MARK_TOKEN
MARK_EPS = 1e-3
UNIT_KEYS = ("enabled", "model", "type", "hint", "resize_mode")


def prompt_context_is_marked(x):
    # hook.py prompt_context_is_marked
    t = x[..., 0, :]
    return float((t.abs() - POSITIVE_MARK_TOKEN).abs().mean()) < MARK_EPS


# The WebUI's conditioning wrappers (modules/prompt_parser.py) and the attribute each keeps its parts in.
CONDITIONING_WRAPPERS = ((MulticondLearnedConditioning, "batch"), (ComposableScheduledPromptConditioning, "schedules"))


def mark_prompt_context(x, positive):
    # hook.py mark_prompt_context: walks down to every ScheduledPromptConditioning, in place, and
    # gives its cond one more leading token, +-1024 by the prompt's side (once only)
    if isinstance(x, list):
        x[:] = [mark_prompt_context(part, positive) for part in x]
        return x
    for wrapper, parts in CONDITIONING_WRAPPERS:
        if isinstance(x, wrapper):
            setattr(x, parts, mark_prompt_context(getattr(x, parts), positive))
            return x
    if not isinstance(x, ScheduledPromptConditioning) or prompt_context_is_marked(x.cond):
        return x
    token = torch.full_like(x.cond[:1], POSITIVE_MARK_TOKEN if positive else NEGATIVE_MARK_TOKEN)
    return ScheduledPromptConditioning(end_at_step=x.end_at_step, cond=torch.cat([token, x.cond]))


class UnetHook(StandInUnetHook):
    """The stand-in hook plus what the real UnetHook.hook/restore do around it: p.sample marks the
    prompts (process_sample), the guidance handler is an on_cfg_denoiser callback."""

    def hook(self, model, control_params, process, batch_option_uint_separate=False, batch_option_style_align=False):
        def process_sample(*args, **kwargs):
            mark_prompt_context(kwargs.get("conditioning", []), positive=True)
            mark_prompt_context(kwargs.get("unconditional_conditioning", []), positive=False)
            mark_prompt_context(getattr(process, "hr_c", []), positive=True)
            mark_prompt_context(getattr(process, "hr_uc", []), positive=False)
            # hook.py unmark_prompt_context drops the (now marked) cond caches on every U-Net call
            StableDiffusionProcessing.cached_c = [None, None]
            StableDiffusionProcessing.cached_uc = [None, None]
            return process.sample_before_CN_hack(*args, **kwargs)

        super().hook(model, control_params, batch_option_uint_separate, batch_option_style_align)
        if getattr(process, "sample_before_CN_hack", None) is None:
            process.sample_before_CN_hack = process.sample
        process.sample = process_sample
        script_callbacks.on_cfg_denoiser(self.guidance_schedule_handler)

    def restore(self):
        script_callbacks.remove_callbacks_for_function(self.guidance_schedule_handler)
        super().restore()


class Script(scripts.Script):
    def __init__(self):
        super().__init__()
        self.latest_network = None
        self.enabled_units = []
        self.ui_batch_option_state = [DEFAULT_BATCH_OPTION, False]
        self.networks = []  # test instrumentation: every network built, newest last

    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        with gr.Group():
            with gr.Accordion("ControlNet", open=False):
                controls = [gr.State(None) for _ in range(UNIT_COUNT)]
        return tuple(controls)

    def process(self, p, *units, **kwargs):
        self.controlnet_main_entry(p, units)

    def controlnet_main_entry(self, p, units):
        unet = p.sd_model.model.diffusion_model
        if self.latest_network is not None:
            self.latest_network.restore()
        clear_all_secondary_control_models(unet)
        enabled = [unit for unit in units if unit is not None and unit.get("enabled", True)]
        # Script.enabled_units: the enabled units in tab order, as their ControlParams are built
        self.enabled_units = [
            SimpleNamespace(module=unit.get("module", "none"), resize_mode=unit.get("resize_mode", "Crop and Resize"))
            for unit in enabled
        ]
        batch_option_uint_separate = self.ui_batch_option_state[0] == SEPARATE_BATCH_OPTION
        batch_option_style_align = self.ui_batch_option_state[1]
        if not enabled and not batch_option_style_align:
            self.latest_network = None
            return
        forward_params = []
        for unit in enabled:
            if unit["model"] is not None:
                unit["model"].reset()
            options = {key: value for key, value in unit.items() if key not in UNIT_KEYS}
            forward_params.append(unit_params(unit["model"], unit["type"], unit["hint"], **options))
        self.latest_network = UnetHook()
        self.latest_network.built_params = list(forward_params)
        self.networks.append(self.latest_network)
        self.latest_network.hook(
            unet, forward_params, p,
            batch_option_uint_separate=batch_option_uint_separate,
            batch_option_style_align=batch_option_style_align,
        )

    @staticmethod
    def detectmap_proc(detected_map, module, resize_mode, h, w):
        # Script.detectmap_proc: the map at h x w by the resize mode, as a (1, 3, h, w) tensor in
        # 0..1 (get_pytorch_control) and as the array; the real one resizes with cv2 and its
        # "high quality" rules for binary and one-pixel-edge maps, and fills with the border median
        image = Image.fromarray(np.ascontiguousarray(detected_map[..., :3]))
        if resize_mode == "Just Resize":
            image = image.resize((w, h), Image.BICUBIC)
        elif resize_mode == "Resize and Fill":
            k = min(h / image.height, w / image.width)
            inner = image.resize((round(image.width * k), round(image.height * k)), Image.BICUBIC)
            border = np.concatenate([detected_map[0], detected_map[-1], detected_map[:, 0], detected_map[:, -1]])
            image = Image.new("RGB", (w, h), tuple(int(c) for c in np.median(border, axis=0)[:3]))
            image.paste(inner, ((w - inner.width) // 2, (h - inner.height) // 2))
        else:  # "Crop and Resize"
            k = max(h / image.height, w / image.width)
            image = image.resize((round(image.width * k), round(image.height * k)), Image.BICUBIC)
            left, top = (image.width - w) // 2, (image.height - h) // 2
            image = image.crop((left, top, left + w, top + h))
        detected = np.asarray(image).copy()
        control = torch.from_numpy(detected).float().div(255.0).permute(2, 0, 1)[None].clone()
        return control, detected

    def postprocess(self, p, processed, *args):
        clear_all_secondary_control_models(p.sd_model.model.diffusion_model)
        if self.latest_network is None:
            return
        self.latest_network.restore()
        self.latest_network = None
'''


# --- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def unet():
    return sd15_unet(seed=0)


@pytest.fixture(scope="module")
def models(unet):
    """Control models, loaded once and shared by every unit that uses them (ControlNet's model cache)."""
    return SimpleNamespace(
        cn=PlugableControlModel(TinyControlNet(unet, seed=0)),
        cn2=PlugableControlModel(TinyControlNet(unet, seed=5)),
    )


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("extensions") / "sd-webui-controlnet"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "controlnet.py").write_text(CONTROLNET_SCRIPT)
    return root


CONTROLNET_FIRST = "ControlNet process first"
MASACTRL_FIRST = "MasaCtrl process first"


def start_host(unet, controlnet_dir=None, order=CONTROLNET_FIRST):
    from host import WebUIHost

    from modules import extensions

    if controlnet_dir is None:
        return WebUIHost(unet, extension_dir=str(ROOT))
    if order == CONTROLNET_FIRST:
        extensions.register_extension(str(controlnet_dir))
        try:
            return WebUIHost(unet, extension_dir=str(ROOT))
        except BaseException:
            extensions.clear_extensions()
            raise
    host = WebUIHost(unet, extension_dir=str(ROOT))
    try:
        extensions.register_extension(str(controlnet_dir))
        host.reload_scripts()
    except BaseException:
        host.teardown()
        raise
    return host


@pytest.fixture
def host(request, unet, controlnet_dir):
    host = start_host(unet, controlnet_dir, getattr(request, "param", CONTROLNET_FIRST))
    try:
        yield host
    finally:
        host.teardown()


def hint(seed):
    """One pixel-space control map, which ControlNet broadcasts over the batch."""
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def unit(model, hint_seed, **options):
    return {"model": model, "type": ControlModelType.ControlNet, "hint": hint(hint_seed), **options}


def masactrl(controlnet="targets", units="", start_step=0):
    """The 13 accordion values in FIELDS order: MasaCtrl on from step 0 and layer 0."""
    return [True, SOURCE, "mutual", start_step, 150, 0, 70, False, controlnet, units, True, 1.0, True]


def generate(host, masactrl_args, units=(), prompt=TARGET, **kwargs):
    """txt2img with seed 7, 4 Euler steps, 64x64; batch 2 (one pair) when MasaCtrl args are given."""
    script_args = {"ControlNet": list(units)}
    if masactrl_args is not None:
        script_args["MasaCtrl"] = masactrl_args
    kwargs.setdefault("batch_size", 2 if masactrl_args is not None else 1)
    return host.txt2img(prompt, seed=7, steps=STEPS, width=64, height=64, script_args=script_args, **kwargs)


def controlnet_script(host):
    return host.script("ControlNet")


def last_network(host, count_before):
    networks = controlnet_script(host).networks
    assert len(networks) == count_before + 1, "ControlNet hooked no network for this generation"
    return networks[-1]


@contextlib.contextmanager
def watch_units(host):
    """Per denoiser call (through the WebUI's own callback): which units carry a MasaCtrl view."""
    from modules import script_callbacks

    seen = []
    script = controlnet_script(host)

    def record(params):
        network = script.latest_network
        seen.append([_is_ours(param.control_model) for param in (network.control_params or [])])

    script_callbacks.on_cfg_denoiser(record, name="test_watch_units")
    try:
        yield seen
    finally:
        script_callbacks.remove_callbacks_for_function(record)


def reached_rows(residuals):
    """Rows of a U-Net call that a unit's residuals (after ControlNet's scaling) reached."""
    rows = set()
    for residual in residuals:
        rows |= {row for row in range(residual.shape[0]) if residual[row].any()}
    return sorted(rows)


def close(actual, expected):
    """Equal up to float32 rounding of differently laid out matmuls."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=3e-4)


def unet_state(unet):
    """``module_state`` without the attributes ControlNet's forward rewrites on every call."""
    return {
        name: (cls, tuple(item for item in attributes if item[0] not in PER_CALL_ATTRIBUTES), hooks, has_forward)
        for name, (cls, attributes, hooks, has_forward) in module_state(unet).items()
    }


def controlnet_row(host, is_img2img):
    import gradio as gr

    from lib_masactrl.fields import FIELD_NAMES

    radio = host.script("MasaCtrl", is_img2img).controls[FIELD_NAMES.index("controlnet")]
    block = radio.parent
    while not isinstance(block, gr.Row):
        block = block.parent
    return radio, block


# --- 1. default: ControlNet on the targets only ---------------------------------------------


def test_enabled_units_are_counted_from_the_controlnet_scripts_own_arguments(host):
    """Forge's built-in ControlNet keeps no hooked network: its units are the script's arguments,
    objects or dicts with ``enabled``."""
    from types import SimpleNamespace

    from lib_masactrl.webui import controlnet

    script = SimpleNamespace(title=lambda: "ControlNet", args_from=1, args_to=4)
    p = SimpleNamespace(scripts=SimpleNamespace(alwayson_scripts=[script]),
                        script_args=[True, SimpleNamespace(enabled=True), {"enabled": False}, {"enabled": True}])
    assert controlnet.enabled_unit_count(p) == 2
    assert controlnet.enabled_unit_count(SimpleNamespace(scripts=SimpleNamespace(alwayson_scripts=[]))) == 0


@pytest.mark.parametrize("host", [CONTROLNET_FIRST, MASACTRL_FIRST], indirect=True)
def test_units_reach_only_the_targets_by_default(host, models, request):
    from modules import extensions

    order = request.node.callspec.params["host"]
    titles = [script.title() for script in host.runner().ordered_scripts("process")]
    controlnet_before = titles.index("ControlNet") < titles.index("MasaCtrl")
    assert controlnet_before == (order == CONTROLNET_FIRST)
    assert [ext.name for ext in extensions.active()][0 if order == CONTROLNET_FIRST else 1] == "sd-webui-controlnet"

    off = generate(host, masactrl())
    # Hooked but never acting (guidance starts at 100%): the same U-Net arithmetic as "targets".
    idle = generate(host, masactrl(), [unit(models.cn, 0, guidance_start=1.0)])
    count = len(controlnet_script(host).networks)
    with watch_units(host) as seen:
        on = generate(host, masactrl(), [unit(models.cn, 0)])
    network = last_network(host, count)

    assert seen == [[True]] * STEPS, "the unit must be narrowed during every denoiser call"
    assert len(network.residual_log) == STEPS
    for call in network.residual_log:
        assert reached_rows(call[0]) == TARGET_ROWS
    source, target = on.standin_latents
    assert torch.equal(source, idle.standin_latents[0])
    # Without ControlNet the U-Net reads the context contiguous instead of as the strided view
    # hook.py leaves after stripping its mark token: the same values, possibly other kernels.
    close(source, off.standin_latents[0])
    assert not torch.allclose(target, idle.standin_latents[1], atol=1e-2)
    assert not torch.allclose(target, off.standin_latents[1], atol=1e-2)
    assert on.all_prompts == [SOURCE, TARGET] and on.all_seeds == [7, 7]
    assert "MasaCtrl: " not in on.comments
    assert controlnet_script(host).latest_network is None
    assert [param.control_model for param in network.built_params] == [models.cn]
    # With ControlNet installed (in either load order) the accordion offers the ControlNet row.
    for is_img2img in (False, True):
        radio, row = controlnet_row(host, is_img2img)
        assert row.visible is True and radio.visible is True


# --- 2. "both" ----------------------------------------------------------------------------


def test_both_gives_the_units_every_row_as_controlnet_alone_does(host, models):
    units = [unit(models.cn, 0)]
    count = len(controlnet_script(host).networks)
    with watch_units(host) as seen:
        both = generate(host, masactrl("both"), units)
    network = last_network(host, count)
    paired_only = generate(host, masactrl("both", start_step=STEPS), units)
    targets = generate(host, masactrl("targets"), units)
    alone = generate(host, None, units, prompt=SOURCE)
    assert seen == [[False]] * STEPS, "'both' must leave the units as ControlNet made them"
    assert all(reached_rows(call[0]) == [0, 1, 2, 3] for call in network.residual_log)
    assert torch.equal(both.standin_latents[0], paired_only.standin_latents[0])
    close(both.standin_latents[0], alone.standin_latents[0])  # a batch of one: rounding only
    assert not torch.equal(both.standin_latents[1], paired_only.standin_latents[1])
    assert not torch.allclose(both.standin_latents[0], targets.standin_latents[0], atol=1e-2)
    assert any("start step 4 is past the last step" in line for line in paired_only.comments.splitlines())


# --- 3. "per unit" --------------------------------------------------------------------------


def test_per_unit_gives_each_unit_its_rows(host, models):
    source_unit, target_unit = unit(models.cn, 0), unit(models.cn2, 1, weight=0.8)
    count = len(controlnet_script(host).networks)
    with watch_units(host) as seen:
        split = generate(host, masactrl("per unit", "source, target"), [source_unit, target_unit])
    network = last_network(host, count)
    swapped = generate(host, masactrl("per unit", " Target,source "), [target_unit, source_unit])
    source_only = generate(host, masactrl("both"), [source_unit])

    assert seen == [[True, True]] * STEPS
    assert len(network.residual_log) == STEPS
    for call in network.residual_log:
        assert reached_rows(call[0]) == SOURCE_ROWS
        assert reached_rows(call[1]) == TARGET_ROWS
    # The assignment follows the unit, wherever its tab is.
    assert torch.equal(split.standin_latents, swapped.standin_latents)
    # The source got unit 1 and nothing of unit 2.
    assert torch.equal(split.standin_latents[0], source_only.standin_latents[0])
    assert "MasaCtrl ControlNet: per unit" in split.infotexts[0]
    assert 'MasaCtrl ControlNet units: "source, target"' in split.infotexts[0]
    assert "MasaCtrl: " not in split.comments


@pytest.mark.parametrize("entries", ["source, target", "", "target, source, both"], ids=["more", "none", "fewer"])
def test_per_unit_entries_that_do_not_match_the_enabled_units_stop_with_the_units_named(host, unet, models, entries):
    generate(host, None, [unit(models.cn, 0)])
    before = unet_state(unet)  # as ControlNet alone leaves it (see test_nothing_outlives_a_generation)
    units = [unit(models.cn, 0, module="canny")] if entries != "target, source, both" else [
        unit(models.cn, 0, module="canny"), unit(models.cn2, 1, module="depth")]
    message = ui_refusal(generate(host, masactrl("per unit", entries), units))
    if entries:
        assert "'per unit' lists" in message and "give one entry per enabled unit, in tab order" in message
        assert "(unit 1: canny)" in message if len(units) == 1 else "(unit 1: canny, unit 2: depth)" in message
    else:
        assert "no assignment was given" in message
    assert "Nothing was generated" in message
    network = controlnet_script(host).latest_network
    assert network is None or not any(_is_ours(param.control_model) for param in network.control_params)
    generate(host, None, [])  # ControlNet restores its own hook at its next run (see below)
    assert unet_state(unet) == before


# --- 4. ControlNet's own "each unit for each image" -----------------------------------------


def test_controlnet_batch_option_each_unit_for_each_image_is_left_to_controlnet(host, models):
    controlnet_script(host).ui_batch_option_state = [SEPARATE, False]
    units = [unit(models.cn, 0), unit(models.cn2, 1)]
    count = len(controlnet_script(host).networks)
    with watch_units(host) as seen:
        targets = generate(host, masactrl("targets"), units)
    network = last_network(host, count)
    both = generate(host, masactrl("both"), units)

    assert seen == [[False, False]] * STEPS, "no MasaCtrl view may be installed over ControlNet's own split"
    for call in network.residual_log:
        assert reached_rows(call[0]) == SOURCE_ROWS  # ControlNet gives unit 1 to image 1
        assert reached_rows(call[1]) == TARGET_ROWS
    assert torch.equal(targets.standin_latents, both.standin_latents)
    assert "MasaCtrl: " not in targets.comments


# --- 5. nothing outlives a generation -------------------------------------------------------


def fail_in_block(unet):
    from lib_masactrl import LayerMap

    def fail(module, args):
        raise RuntimeError("CUDA out of memory (simulated)")

    return LayerMap.from_unet(unet)[12].block.register_forward_pre_hook(fail)


@pytest.mark.parametrize("outcome", ["success", "exception", "interrupt"])
def test_nothing_outlives_a_generation(host, unet, models, outcome):
    from modules import script_callbacks

    script = controlnet_script(host)
    # What ControlNet alone leaves behind (restore() assigns the stashed bound forward back as an
    # instance attribute): the state to come back to.
    generate(host, None, [unit(models.cn, 0)])
    before = unet_state(unet)
    cfg_callbacks = list(script_callbacks.callback_map["callbacks_cfg_denoiser"])
    units = [unit(models.cn, 0), unit(models.cn2, 1)]
    count = len(script.networks)

    if outcome == "exception":
        handle = fail_in_block(unet)
        try:
            with pytest.raises(RuntimeError, match="simulated"):
                generate(host, masactrl("per unit", "target, source"), units)
        finally:
            handle.remove()
    else:
        if outcome == "interrupt":
            host.interrupt_at(2)
        generate(host, masactrl("per unit", "target, source"), units)
    network = last_network(host, count)
    # U-Net calls made: all 4; the first, which raised; 3 (the flag is seen at the 4th call)
    assert len(network.residual_log) == {"success": STEPS, "exception": 1, "interrupt": 3}[outcome]

    assert [param.control_model for param in network.built_params] == [models.cn, models.cn2]
    assert not any(_is_ours(param.control_model) for param in network.built_params)
    assert release_units(SimpleNamespace(control_params=network.built_params)) == 0
    if outcome == "exception":
        # postprocess never ran: ControlNet is still hooked, MasaCtrl's views are gone already
        # (p.close); ControlNet restores its hook at its next run.
        assert script.latest_network is network
        assert release_units(network) == 0
        generate(host, None, [])
    assert script.latest_network is None
    assert unet_state(unet) == before
    assert script_callbacks.callback_map["callbacks_cfg_denoiser"] == cfg_callbacks
    # and the next generation is ordinary
    count = len(script.networks)
    again = generate(host, masactrl(), [unit(models.cn, 0)])
    assert reached_rows(last_network(host, count).residual_log[0][0]) == TARGET_ROWS
    assert "MasaCtrl: " not in again.comments
    assert unet_state(unet) == before


# --- 6. the accordion's ControlNet row ------------------------------------------------------


def test_the_controlnet_row_is_hidden_without_controlnet(unet):
    """(Shown with ControlNet installed: checked in the first test, in both load orders.)"""
    host = start_host(unet)
    try:
        for is_img2img in (False, True):
            radio, row = controlnet_row(host, is_img2img)
            assert row.visible is False
    finally:
        host.teardown()


# --- 7. reference-only ----------------------------------------------------------------------


def test_a_reference_only_unit_is_named_in_the_comments(host, unet, models):
    reference = {
        "model": None,
        "type": ControlModelType.AttentionInjection,
        # the stand-in takes a reference unit's hint as the VAE-encoded latent already
        "hint": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)),
        "module": "reference_only",
    }
    processed = generate(host, masactrl(), [unit(models.cn, 0), reference])
    notes = [line for line in processed.comments.splitlines() if line.startswith("MasaCtrl: ")]
    assert any("enabled ControlNet unit 2 (reference_only) rewrites self-attention" in line for line in notes), notes
    assert torch.isfinite(processed.standin_latents).all()
    hijacked = [m for m in unet.modules() if hasattr(m, "_original_inner_forward_cn_hijack")]
    assert hijacked, "the reference unit must have hooked the transformer blocks"
    # ControlNet's postprocess put the blocks back; MasaCtrl left nothing on them.
    assert all(vars(block)["_forward"] is block._original_inner_forward_cn_hijack for block in hijacked)
    assert release_units(SimpleNamespace(control_params=controlnet_script(host).networks[-1].built_params)) == 0


def test_units_stay_on_the_targets_in_an_uncontrolled_hires_pass(host, models):
    """With "apply during hires fix" off, MasaCtrl still knows the rows of the second pass and keeps
    the units to the targets there; ControlNet's own hires handling runs unchanged."""
    count = len(controlnet_script(host).networks)
    hires_hint = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    processed = generate(
        host, masactrl(), [unit(models.cn, 0, hr_hint=hires_hint)], enable_hr=True, hr_scale=2, denoising_strength=0.6,
    )
    network = last_network(host, count)
    assert len(network.residual_log) > STEPS, "the hires pass must call the U-Net too"
    for call in network.residual_log:
        assert reached_rows(call[0]) == TARGET_ROWS
    assert "MasaCtrl: " not in processed.comments


# --- 8. control maps for a sequence's targets -----------------------------------------------


def sequence_args(**values):
    """The accordion's values in FIELDS order for a one-source sequence controlled from step 0."""
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, "source_prompt": SOURCE, "start_step": 0, "start_layer": 0, "layout": "one source",
               "animation": "none", **values}
    return [changed.get(field.name, field.default) for field in FIELDS]


def control_map(seed, size=(64, 64)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_each_control_map_conditions_only_its_target(host, unet, models):
    before_state = generate(host, None, [unit(models.cn, 0)]) and unet_state(unet)
    maps = [control_map(seed) for seed in (1, 2, 3)]
    count = len(controlnet_script(host).networks)
    first = generate(host, sequence_args(control_maps=maps), [unit(models.cn, 0)], batch_size=4)
    network = last_network(host, count)
    other = generate(host, sequence_args(control_maps=[maps[0], control_map(9), maps[2]]), [unit(models.cn, 0)], batch_size=4)
    own = generate(host, sequence_args(), [unit(models.cn, 0)], batch_size=4)
    a, b, c = first.standin_latents, other.standin_latents, own.standin_latents
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])  # the source: no unit, no map
    assert torch.equal(a[1], b[1]) and torch.equal(a[3], b[3])  # the other targets keep their maps
    assert not torch.allclose(a[2], b[2], atol=1e-3)  # the target whose map changed
    assert all(not torch.allclose(a[i], c[i], atol=1e-3) for i in (1, 2, 3))  # maps, not the unit's own image
    for call in network.residual_log:
        assert reached_rows(call[0]) == [1, 2, 3, 5, 6, 7]  # the targets' cond and uncond rows
    assert "MasaCtrl: " not in first.comments
    generate(host, None, [unit(models.cn, 0)])
    assert unet_state(unet) == before_state


def test_control_maps_follow_the_sequence_over_batches_and_take_the_units_resize_mode(host, models, tmp_path):
    for number, seed in enumerate((1, 2, 3, 4, 5, 6)):
        control_map(seed, size=(48, 32)).save(tmp_path / f"frame_{number:02}.png")
    folder = generate(host, sequence_args(control_maps_folder=str(tmp_path)), [unit(models.cn, 0)], batch_size=4, n_iter=2)
    maps = [control_map(seed, size=(48, 32)) for seed in (1, 2, 3, 4, 5, 6)]
    uploads = generate(host, sequence_args(control_maps=maps), [unit(models.cn, 0)], batch_size=4, n_iter=2)
    assert torch.equal(folder.standin_latents, uploads.standin_latents)
    assert folder.standin_latents.shape[0] == 7  # the source once, then targets 1-6
    stretched = generate(host, sequence_args(control_maps=maps), [unit(models.cn, 0, resize_mode="Just Resize")],
                         batch_size=4, n_iter=2)
    assert not torch.allclose(stretched.standin_latents[1:], uploads.standin_latents[1:], atol=1e-3)


@pytest.mark.parametrize("case, message", [
    ("too few", "2 control maps were given for the 3 targets of this generation"),
    ("mixed sizes", "the control maps must all have one size"),
    ("missing folder", "does not exist"),
    ("second unit", "the control maps go to ControlNet unit 2, but 1 unit is enabled"),
    ("no unit", "the control maps go to ControlNet unit 1, but 0 units are enabled"),
])
def test_control_maps_that_cannot_be_used_stop_with_a_message(host, unet, models, case, message):
    maps = [control_map(seed) for seed in (1, 2, 3)]
    values = {
        "too few": dict(control_maps=maps[:2]),
        "mixed sizes": dict(control_maps=[maps[0], control_map(2, size=(32, 32)), maps[2]]),
        "missing folder": dict(control_maps_folder="/no/such/folder"),
        "second unit": dict(control_maps=maps, control_maps_unit=2),
        "no unit": dict(control_maps=maps),
    }[case]
    units = [] if case == "no unit" else [unit(models.cn, 0)]
    assert message in ui_refusal(generate(host, sequence_args(**values), units, batch_size=4))
    generate(host, None, [unit(models.cn, 0)])
    assert not any(_is_ours(p.control_model) for net in controlnet_script(host).networks for p in net.built_params)


def test_control_maps_without_controlnet_stop_with_a_message(unet):
    host = start_host(unet)
    try:
        message = ui_refusal(host.txt2img(TARGET, steps=STEPS, width=64, height=64, batch_size=4,
                                          script_args={"MasaCtrl": sequence_args(control_maps=[control_map(1)] * 3)}))
    finally:
        host.teardown()
    assert "control maps need the ControlNet extension" in message


# --- 9. strength ----------------------------------------------------------------------------


def test_strength_blends_the_targets_and_the_units_stay_on_them(host, models):
    from lib_masactrl.fields import FIELD_NAMES

    def with_strength(value):
        args = sequence_args(layout="pairs")
        args[FIELD_NAMES.index("strength")] = value
        return args

    units = [unit(models.cn, 0)]
    count = len(controlnet_script(host).networks)
    half = generate(host, with_strength(0.5), units)
    network = last_network(host, count)
    full = generate(host, with_strength(1.0), units)
    none = generate(host, with_strength(0.0), units)
    uncontrolled = generate(host, masactrl(start_step=STEPS), units)
    for call in network.residual_log:
        assert reached_rows(call[0]) == TARGET_ROWS
    for result in (half, full, none):
        assert torch.equal(result.standin_latents[0], uncontrolled.standin_latents[0])
    assert torch.equal(none.standin_latents[1], uncontrolled.standin_latents[1])
    distance = [float((result.standin_latents[1] - uncontrolled.standin_latents[1]).abs().mean()) for result in (half, full)]
    assert 0 < distance[0] < distance[1]
    assert "MasaCtrl: " not in half.comments + none.comments
