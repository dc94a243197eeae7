"""Attaching and detaching leaves the U-Net exactly as it was: after success, after an exception,
after attaching twice, beside other extensions' per-instance patches in either order, and after
a run that never reached its cleanup."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
import torch
from engine_helpers import module_state
from tiny_unets import make_inputs

import ldm.modules.attention as ldm_attention
from lib_masactrl import LayerMap, MasaCtrlSettings, SettingsError, StepLayout, attach, detach_all
from lib_masactrl.patching import PATCH_MARKER

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALLOWED_IMPORTS = {
    "torch", "numpy", "__future__", "typing", "dataclasses", "enum", "logging", "collections", "hashlib",
    "threading", "math",
}


def run_controlled(unet, attachment, rows=4):
    attachment.controller.begin_step(5, StepLayout.cfg((None, 0)))
    with torch.no_grad():
        return unet(torch.randn(rows, 4, 8, 8), torch.full((rows,), 300), context=torch.randn(rows, 77, 768))


def patched_modules(unet):
    return [name for name, module in unet.named_modules() if getattr(vars(module).get("forward"), PATCH_MARKER, False)]


def test_only_controlled_self_attention_is_patched_and_detach_restores_everything(sd15):
    before = module_state(sd15)
    attachment = attach(sd15, MasaCtrlSettings(start_layer=10))
    layer_map = LayerMap.from_unet(sd15)
    assert patched_modules(sd15) == [f"{layer_map[i].name}.attn1" for i in range(10, 16)]
    assert len(sd15._forward_pre_hooks) == 1
    run_controlled(sd15, attachment)
    attachment.detach()
    assert module_state(sd15) == before
    attachment.detach()
    assert module_state(sd15) == before


def test_an_exception_inside_the_forward_still_restores_everything(sd15):
    before = module_state(sd15)
    failing_block = LayerMap.from_unet(sd15)[12].block

    def fail(module, args):
        raise RuntimeError("out of memory in the middle of the U-Net")

    handle = failing_block.register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="out of memory"):
            with attach(sd15, MasaCtrlSettings(start_layer=10)) as attachment:
                run_controlled(sd15, attachment)
    finally:
        handle.remove()
    assert module_state(sd15) == before


def test_attaching_twice_does_not_stack(sd15):
    before = module_state(sd15)
    first = attach(sd15, MasaCtrlSettings(start_layer=10))
    second = attach(sd15, MasaCtrlSettings(start_layer=12))
    assert len(patched_modules(sd15)) == 4
    assert all(vars(LayerMap.from_unet(sd15)[i].attn1)["forward"].previous is None for i in range(12, 16))
    assert len(sd15._forward_pre_hooks) == 1
    run_controlled(sd15, second)
    second.detach()
    assert module_state(sd15) == before
    first.detach()
    assert module_state(sd15) == before


def test_a_run_that_never_cleaned_up_is_found_and_removed(sd15):
    before = module_state(sd15)
    attach(sd15, MasaCtrlSettings(start_layer=10))
    assert detach_all(sd15) == 7
    assert module_state(sd15) == before
    assert detach_all(sd15) == 0


def test_bad_settings_leave_the_unet_untouched(sd15):
    before = module_state(sd15)
    with pytest.raises(SettingsError, match="start layer 20 is out of range: this SD1.x model has layers 0-15"):
        attach(sd15, MasaCtrlSettings(start_layer=20))
    with pytest.raises(SettingsError, match="start step 30 is out of range: this generation has steps 0-19"):
        attach(sd15, MasaCtrlSettings(start_step=30), total_steps=20)
    assert module_state(sd15) == before


def controlnet_like_patches(unet):
    """What the ControlNet extension does (scripts/hook.py): a per-instance U-Net ``forward`` and
    per-instance ``BasicTransformerBlock._forward`` that still call ``attn1``. Returns an undo."""
    blocks = [layer.block for layer in LayerMap.from_unet(unet)]
    unet_forward = unet.forward
    calls = []

    def forward(*args, **kwargs):
        calls.append("unet")
        return unet_forward(*args, **kwargs)

    unet.forward = forward
    for block in blocks:
        original = block._forward

        def _forward(x, context=None, _original=original):
            calls.append("block")
            return _original(x, context)

        block._forward = _forward

    def undo():
        del unet.forward
        for block in blocks:
            del block._forward

    return calls, undo


@pytest.mark.parametrize("masactrl_first_out", [True, False])
def test_coexists_with_controlnet_style_patches_in_either_order(sd15, masactrl_first_out):
    before = module_state(sd15)
    attachment = attach(sd15, MasaCtrlSettings(start_step=0, start_layer=10))
    calls, undo = controlnet_like_patches(sd15)
    out = run_controlled(sd15, attachment)
    assert attachment.controller.stats.controlled_calls == 6
    assert calls.count("unet") == 1 and calls.count("block") == 16
    assert torch.isfinite(out).all()
    if masactrl_first_out:
        attachment.detach()
        undo()
    else:
        undo()
        attachment.detach()
    assert module_state(sd15) == before


def test_an_earlier_per_instance_attn1_forward_is_kept_and_restored(sd15):
    attn1 = LayerMap.from_unet(sd15)[15].attn1
    seen = []

    def theirs(x, context=None, mask=None, **kwargs):
        seen.append(context is None)
        return type(attn1).forward(attn1, x, context=context, mask=mask)

    attn1.forward = theirs
    try:
        before = module_state(sd15)
        with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=15)) as attachment:
            run_controlled(sd15, attachment)
        assert seen == [False]
        assert module_state(sd15) == before
        assert vars(attn1)["forward"] is theirs
    finally:
        del attn1.forward


def test_a_patch_wrapped_by_someone_else_goes_transparent_then_is_cleaned_up(sd15):
    before = module_state(sd15)
    attachment = attach(sd15, MasaCtrlSettings(start_step=0, start_layer=15))
    attn1 = LayerMap.from_unet(sd15)[15].attn1
    ours = vars(attn1)["forward"]

    def theirs(*args, **kwargs):
        return ours(*args, **kwargs)

    attn1.forward = theirs
    attachment.detach()
    assert ours.controller is None
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        plain_args = (x, torch.full((2,), 300), torch.randn(2, 77, 768))
        through_theirs = sd15(plain_args[0], plain_args[1], context=plain_args[2])
    attn1.forward = ours
    assert detach_all(sd15) == 1
    assert module_state(sd15) == before
    with torch.no_grad():
        assert torch.equal(sd15(plain_args[0], plain_args[1], context=plain_args[2]), through_theirs)


def test_an_attention_optimisation_swapped_in_later_is_the_one_that_runs(sd15):
    original = ldm_attention.CrossAttention.forward
    calls = []

    def host_attention(self, x, context=None, mask=None, **kwargs):
        calls.append(context is None)
        return original(self, x, context=context, mask=mask)

    with attach(sd15, MasaCtrlSettings(start_step=0, start_layer=15)) as attachment:
        ldm_attention.CrossAttention.forward = host_attention
        try:
            run_controlled(sd15, attachment)
        finally:
            ldm_attention.CrossAttention.forward = original
    # 16 attn2 calls, 15 plain attn1 calls and 1 controlled attn1 call with the source context.
    assert calls.count(True) == 15 and calls.count(False) == 17


def test_the_engine_imports_nothing_from_the_webui():
    adapters = (ROOT / "lib_masactrl" / "webui", ROOT / "lib_masactrl" / "forge")
    engine = [path for path in sorted((ROOT / "lib_masactrl").rglob("*.py"))
              if not any(adapter in path.parents for adapter in adapters)]
    assert len(engine) > 10
    for path in engine:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name}"
    code = "import sys, lib_masactrl; assert 'modules' not in sys.modules and 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_a_stop_guard_raises_on_the_next_call_and_is_removed_by_detach_all(sd15):
    from lib_masactrl import stop_on_next_call

    before = module_state(sd15)
    stop_on_next_call(sd15, ValueError("the batch size must be even"))
    with pytest.raises(ValueError, match="the batch size must be even"), torch.no_grad():
        sd15(torch.randn(1, 4, 8, 8), torch.full((1,), 300), context=torch.randn(1, 77, 768))
    assert detach_all(sd15) == 1
    assert module_state(sd15) == before


def test_a_session_attaches_again_when_the_host_removed_its_patches(sd15):
    """The WebUI's model-loaded callback removes every patch when a refiner of the same
    architecture reloads weights into the same modules mid-sampling; control must go on."""
    from lib_masactrl.fields import ScriptArgs
    from lib_masactrl.session import GenerationSession
    from lib_masactrl.steps import PassSteps

    session = GenerationSession(ScriptArgs(enabled=True, start_step=0), 2, sd15)
    session.start_pass(sd15, controlled=True, steps=PassSteps.from_levels([14.6, 7.0, 3.0, 1.0]))
    first = session.attachment
    x, t, context = make_inputs(sd15, 4, 16, 16)
    assert session.denoiser_call(sd15, level=14.6, x=x, cond_repeats=None) is x
    detach_all(sd15)
    assert not first.intact
    session.denoiser_call(sd15, level=7.0, x=x, cond_repeats=None)
    assert session.attachment is not first and session.attachment.intact
    with torch.no_grad():
        sd15(x, t, context=context)
    assert session.attachment.controller.stats.controlled_calls > 0
    session.close()
    assert detach_all(sd15) == 0
