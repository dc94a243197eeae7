"""ControlNet units narrowed to sources, targets or both, against a stand-in of the ControlNet
extension's U-Net hook (tests/controlnet_standin.py) on a real ldm U-Net: every layout the WebUI
uses for a step, cond and uncond rows alike; exactness where nothing should change; coexistence
and clean restoration in every install and removal order; notes for units that cannot be narrowed."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator, List, Sequence, Tuple

import pytest
import torch
from controlnet_standin import (
    PER_CALL_ATTRIBUTES,
    AutoMachine,
    ControlMode,
    ControlModelType,
    PlugableAdapter,
    PlugableControlModel,
    TinyAdapter,
    TinyControlNet,
    UnetHook,
    clear_all_secondary_control_models,
    mark_rows,
    unit_params,
)
from engine_helpers import module_state
from torch import nn

from lib_masactrl import COND, MasaCtrlSettings, SettingsError, StepLayout, attach, pair_halves
from lib_masactrl.controlnet_rows import Assignment, UnitKind, release_units, restrict_units, unit_kind
from lib_masactrl.patching import PATCH_MARKER

STEPS = 10
CONTROLLED = dict(start_step=0, start_layer=10)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors, thousands of ops: with two threads on two shared cores every op's barrier can
    wait for a descheduled sibling, which made this module 20x slower under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(sd15):
    return SimpleNamespace(
        cn=PlugableControlModel(TinyControlNet(sd15, seed=0)),
        cn2=PlugableControlModel(TinyControlNet(sd15, seed=5)),
        adapter=PlugableAdapter(TinyAdapter(sd15, seed=1)),
    )


def hint(seed: int) -> torch.Tensor:
    """One pixel-space control map (8x the 8x8 latent), which ControlNet broadcasts over the batch."""
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def stack_inputs(layout: StepLayout, seed: int = 3):
    generator = torch.Generator().manual_seed(seed)
    images = max(row.image for row in layout.rows) + 1
    latents = torch.randn(images, 4, 8, 8, generator=generator)
    x = torch.stack([latents[row.image] for row in layout.rows])
    context = torch.randn(len(layout), 8, 768, generator=generator)
    return x, torch.full((len(layout),), 600, dtype=torch.long), context


@contextlib.contextmanager
def controlnet(unet: nn.Module, params: list, **options) -> Iterator[UnetHook]:
    network = UnetHook()
    network.hook(unet, params, **options)
    try:
        yield network
    finally:
        network.restore()


def run(unet, layout, calls, inputs, network=None, controller=None, step: int = 0) -> torch.Tensor:
    """One denoiser call: MasaCtrl and ControlNet hear about the step as the WebUI's
    ``on_cfg_denoiser`` callbacks would tell them, then the U-Net runs on each slice."""
    x, t, context = inputs
    if controller is not None:
        controller.begin_step(step, layout)
    if network is not None:
        network.guidance_schedule_handler(SimpleNamespace(sampling_step=step, total_sampling_steps=STEPS))
        context = mark_rows(context, [row.group == COND for row in layout.rows])
    with torch.no_grad():
        return torch.cat([unet(x[a:b], t[a:b], context=context[a:b]) for a, b in calls])


def units(models, specs: Sequence[Tuple[str, dict]]) -> list:
    """Fresh params per run, as ControlNet builds them for every generation."""
    params = []
    for model_name, options in specs:
        options = dict(options)
        model = getattr(models, model_name)
        model.reset()
        model_type = ControlModelType.T2I_Adapter if model_name == "adapter" else ControlModelType.ControlNet
        params.append(unit_params(model, model_type, hint(options.pop("hint_seed", len(params))), **options))
    return params


# Units of the layout test: two share one model object, one is a T2I-Adapter (features from the
# hint alone, one row), one is in "ControlNet is more important" mode, one has not started yet.
LAYOUT_UNITS = [
    ("cn", dict(module="canny")),
    ("cn", dict(module="depth", weight=0.6, control_mode=ControlMode.PROMPT)),
    ("adapter", dict(module="t2ia_sketch", weight=0.8)),
    ("cn2", dict(module="openpose", control_mode=ControlMode.CONTROL)),
    ("cn2", dict(module="lineart", guidance_start=0.5)),
]
LAYOUT_ASSIGNMENTS = ["target", "source", "target", "both", "target"]


@dataclass(frozen=True)
class Case:
    image_sources: tuple
    cond_repeats: tuple | None
    uncond: bool
    calls: List[Tuple[int, int]]


# How sd_samplers_cfg_denoiser.py (CFGDenoiser.forward) calls the U-Net on its stack: all rows at
# once; in batch-size chunks with batch_cond_uncond off (a chunk can hold cond and uncond rows);
# only the cond rows when NGMS or "skip early CFG" drops the uncond rows after the callback.
CASES = {
    "one call": Case((None, 0), None, True, [(0, 4)]),
    "cond and uncond in separate calls": Case((None, 0), None, True, [(0, 2), (2, 4)]),
    "uncond skipped": Case((None, 0), None, True, [(0, 2)]),
    "AND prompts in batch-size chunks": Case((None, 0), (2, 3), True, [(0, 2), (2, 4), (4, 6), (6, 7)]),
    "two pairs": Case(pair_halves(4), None, True, [(0, 8)]),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_unit_reaches_exactly_its_rows_in_every_layout(sd15, models, case):
    layout = StepLayout.cfg(case.image_sources, case.cond_repeats, case.uncond)
    inputs = stack_inputs(layout)
    with controlnet(sd15, units(models, LAYOUT_UNITS)) as network:
        run(sd15, layout, case.calls, inputs, network)
    unrestricted = network.residual_log
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        with controlnet(sd15, units(models, LAYOUT_UNITS)) as network:
            with restrict_units(network, attachment.controller, LAYOUT_ASSIGNMENTS) as restriction:
                assert restriction.restricted_units == 4
                run(sd15, layout, case.calls, inputs, network, attachment.controller)
        assert attachment.controller.notes == []

    assert len(network.residual_log) == len(case.calls)
    reached = {assignment: set() for assignment in LAYOUT_ASSIGNMENTS}
    for (start, stop), got, full in zip(case.calls, network.residual_log, unrestricted):
        assert sorted(got) == sorted(full) == [0, 1, 2, 3], "the unit before its guidance start must not run"
        for unit, assignment in enumerate(LAYOUT_ASSIGNMENTS[:4]):
            for residual, reference in zip(got[unit], full[unit]):
                # A T2I-Adapter's one-row features stay one row when no row of the call is left out.
                residual = residual.expand(stop - start, *residual.shape[1:])
                reference = reference.expand(stop - start, *reference.shape[1:])
                for local, row in enumerate(range(start, stop)):
                    is_target = layout.sources[row] is not None
                    if assignment == "both" or is_target == (assignment == "target"):
                        assert torch.equal(residual[local], reference[local])
                        if reference[local].any():
                            reached[assignment].add((row, layout.rows[row].group))
                    else:
                        assert not residual[local].any(), f"unit {unit} reached row {row}"
    called = [row for start, stop in case.calls for row in range(start, stop)]
    targets = {(row, layout.rows[row].group) for row in called if layout.sources[row] is not None}
    sources = {(row, layout.rows[row].group) for row in called if layout.sources[row] is None}
    assert reached["target"] == targets and reached["source"] == sources


def test_target_only_control_leaves_sources_exactly_as_masactrl_alone_makes_them(sd15, models):
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        # ControlNet hooked without units: the same arithmetic (it hands the U-Net a strided view
        # of the marked context, which changes the last bit of some projections).
        with controlnet(sd15, []) as network:
            alone = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller)
        with controlnet(sd15, units(models, [("cn", {})])) as network:
            with restrict_units(network, attachment.controller):
                controlled = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller)
    assert torch.equal(controlled[[0, 2]], alone[[0, 2]])
    assert not torch.allclose(controlled[[1, 3]], alone[[1, 3]], atol=1e-3)


def test_a_unit_split_into_a_target_copy_and_a_source_copy_equals_the_unit_on_both(sd15, models):
    layout = StepLayout.cfg(pair_halves(4))
    inputs = stack_inputs(layout)
    spec = ("cn", dict(module="canny", weight=0.7, hint_seed=0))
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        with controlnet(sd15, units(models, [spec])) as network:
            with restrict_units(network, attachment.controller, "both") as restriction:
                assert restriction.restricted_units == 0
                whole = run(sd15, layout, [(0, 8)], inputs, network, attachment.controller)
        with controlnet(sd15, units(models, [spec, spec])) as network:
            with restrict_units(network, attachment.controller, ["target", "source"]):
                split = run(sd15, layout, [(0, 8)], inputs, network, attachment.controller)
    assert torch.equal(split, whole)


def test_both_and_released_units_run_exactly_as_controlnet_alone(sd15, models):
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    specs = [("cn", {}), ("adapter", {})]
    with controlnet(sd15, units(models, specs)) as network:
        alone = run(sd15, layout, [(0, 4)], inputs, network, step=2)
    with attach(sd15, MasaCtrlSettings(start_step=5)) as attachment:
        with controlnet(sd15, units(models, specs)) as network:
            with restrict_units(network, attachment.controller, "both"):
                both = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller, step=2)
            originals = [param.control_model for param in network.control_params]
            restriction = restrict_units(network, attachment.controller)
            restriction.release()
            assert [param.control_model for param in network.control_params] == originals
            released = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller, step=2)
    assert torch.equal(both, alone)
    assert torch.equal(released, alone)


def test_each_unit_for_each_image_composes_with_the_assignment(sd15, models):
    """ControlNet's batch option gives unit i to the i-th cond row and the i-th uncond row; with
    unit 0 on the source and unit 1 on the target, both narrowings agree."""
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    specs = [("cn", dict(module="canny")), ("cn2", dict(module="depth"))]
    with controlnet(sd15, units(models, specs), batch_option_uint_separate=True) as network:
        alone = run(sd15, layout, [(0, 4)], inputs, network, step=2)
    with attach(sd15, MasaCtrlSettings(start_step=5)) as attachment:
        with controlnet(sd15, units(models, specs), batch_option_uint_separate=True) as network:
            with restrict_units(network, attachment.controller, ["source", "target"]):
                narrowed = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller, step=2)
    assert torch.equal(narrowed, alone)


# --- coexistence and restoration -----------------------------------------------------------


def unet_state(unet: nn.Module) -> dict:
    """``module_state`` without the attributes ControlNet's forward rewrites on every call."""
    return {
        name: (cls, tuple(item for item in attributes if item[0] not in PER_CALL_ATTRIBUTES), hooks, has_forward)
        for name, (cls, attributes, hooks, has_forward) in module_state(unet).items()
    }


def param_state(params: list) -> list:
    return [(id(param.control_model), sorted(vars(param))) for param in params]


UNDO_ORDERS = list(itertools.permutations(("release units", "detach MasaCtrl", "restore ControlNet")))


@pytest.mark.parametrize("controlnet_first", [True, False], ids=["ControlNet hooked first", "MasaCtrl attached first"])
@pytest.mark.parametrize("undo_order", UNDO_ORDERS, ids=[" then ".join(order) for order in UNDO_ORDERS])
def test_any_install_and_removal_order_leaves_everything_as_controlnet_alone_does(sd15, models, controlnet_first, undo_order):
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    # A first ControlNet hook leaves what the real extension always leaves (restore() assigns the
    # stashed bound forward back instead of deleting it); that is the state to come back to.
    with controlnet(sd15, []):
        pass
    before = unet_state(sd15)
    params = units(models, [("cn", {}), ("adapter", {})])
    before_params = param_state(params)

    network = UnetHook()
    if controlnet_first:
        network.hook(sd15, params)
        attachment = attach(sd15, MasaCtrlSettings(**CONTROLLED))
    else:
        attachment = attach(sd15, MasaCtrlSettings(**CONTROLLED))
        network.hook(sd15, params)
    restriction = restrict_units(network, attachment.controller)
    out = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller)
    assert torch.isfinite(out).all()
    assert attachment.controller.stats.controlled_calls == 6
    assert network.residual_log[0][0][0][0].abs().sum() == 0, "the target-only unit reached the source"

    undo = {"release units": restriction.release, "detach MasaCtrl": attachment.detach, "restore ControlNet": network.restore}
    for step in undo_order:
        undo[step]()
    assert unet_state(sd15) == before
    assert param_state(params) == before_params


def test_units_look_like_their_models_and_restricting_twice_never_stacks(sd15, models):
    params = units(models, [("cn", {}), ("adapter", {})])
    originals = [param.control_model for param in params]
    network = SimpleNamespace(control_params=params, attention_auto_machine=AutoMachine.Read)
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        first = restrict_units(network, attachment.controller)
        second = restrict_units(network, attachment.controller, ["source", "target"])
        view = params[0].control_model
        assert view is not originals[0]
        assert isinstance(view, PlugableControlModel) and isinstance(view, nn.Module)
        assert view.control_model is originals[0].control_model
        assert view.fullvram() is None and view.is_control_lora is False
        assert view._model is originals[0], "the second restriction must replace the first view, not wrap it"
        first.release()
        assert params[0].control_model is view, "releasing a replaced restriction must not undo the newer one"
        second.release()
        second.release()
        assert [param.control_model for param in params] == originals
        restrict_units(network, attachment.controller)
        assert release_units(network) == 2
        assert [param.control_model for param in params] == originals


def test_a_view_wrapped_by_someone_else_stops_restricting_on_release(sd15, models):
    params = units(models, [("cn", {})])
    network = SimpleNamespace(control_params=params)
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        restriction = restrict_units(network, attachment.controller)
        ours = params[0].control_model
        theirs = SimpleNamespace(inner=ours)
        params[0].control_model = theirs
        restriction.release()
        assert params[0].control_model is theirs
        assert ours._restriction is None
        assert release_units(network) == 0


# --- what cannot be narrowed, and what the user is told ------------------------------------


def test_unknown_assignments_are_refused_before_anything_changes(sd15, models):
    params = units(models, [("cn", {}), ("cn2", {})])
    originals = [param.control_model for param in params]
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        message = "ControlNet unit assignment 'sources' is not known: use one of target, source, both"
        with pytest.raises(SettingsError, match=message):
            restrict_units(SimpleNamespace(control_params=params), attachment.controller, ["target", "sources"])
    assert [param.control_model for param in params] == originals
    assert Assignment.parse(" Target ") is Assignment.TARGET


def test_units_that_cannot_be_narrowed_are_named_and_left_alone(sd15, models):
    def param(model_type, module, **options):
        return unit_params(object(), model_type, hint(0), module=module, **options)

    params = [
        param(ControlModelType.IPAdapter, "ip-adapter_clip_sd15"),
        param(ControlModelType.T2I_StyleAdapter, "t2ia_style_clipvision"),
        param(ControlModelType.T2I_Adapter, "t2ia_sketch", control_mode=ControlMode.CONTROL),
        param(ControlModelType.AttentionInjection, "reference_only"),
        param(ControlModelType.IPAdapter, "ip-adapter_face"),
    ]
    assert [unit_kind(p) for p in params] == [UnitKind.EVERY_ROW] * 3 + [UnitKind.SELF_ATTENTION, UnitKind.EVERY_ROW]
    originals = [p.control_model for p in params]
    network = SimpleNamespace(control_params=params, attention_auto_machine=AutoMachine.StyleAlign)
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        with restrict_units(network, attachment.controller, ["target", "source", "target", "target", "both"]) as restriction:
            assert restriction.restricted_units == 0
        notes = attachment.controller.notes
    assert [p.control_model for p in params] == originals
    assert notes == [
        "enabled ControlNet unit 1 (ip-adapter_clip_sd15) cannot be limited to the target images; it acts on every image",
        "enabled ControlNet unit 2 (t2ia_style_clipvision) cannot be limited to the source images; it acts on every image",
        "enabled ControlNet unit 3 (t2ia_sketch) cannot be limited to the target images; it acts on every image",
        "enabled ControlNet unit 4 (reference_only) rewrites self-attention (or feature statistics) of every "
        "image after a reference image, as MasaCtrl rewrites the targets' self-attention after the sources; "
        "the two mix unpredictably. Disable that unit for MasaCtrl results",
        "ControlNet's \"[StyleAlign] Align image style in the batch\" option makes every image attend to all the "
        "others, which leaves MasaCtrl nothing to control; turn it off for MasaCtrl results",
    ]


def test_reference_only_beside_masactrl_runs_and_both_clean_up(sd15, models):
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    reference = unit_params(None, ControlModelType.AttentionInjection, torch.randn(1, 4, 8, 8), module="reference_only")
    params = units(models, [("cn", {})]) + [reference]
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        with controlnet(sd15, params) as network:
            with restrict_units(network, attachment.controller):
                out = run(sd15, layout, [(0, 4)], inputs, network, attachment.controller)
        assert any("reference_only" in note for note in attachment.controller.notes)
        assert attachment.controller.stats.controlled_calls > 0
    clear_all_secondary_control_models(sd15)
    assert torch.isfinite(out).all()
    assert not [name for name, m in sd15.named_modules() if getattr(vars(m).get("forward"), PATCH_MARKER, False)]
    assert not sd15._forward_pre_hooks
    for block in (m for m in sd15.modules() if hasattr(m, "_original_inner_forward_cn_hijack")):
        assert vars(block)["_forward"] is block._original_inner_forward_cn_hijack


def test_a_call_outside_the_layout_is_left_unrestricted_and_noted(sd15, models):
    layout = StepLayout.cfg((None, 0))
    inputs = stack_inputs(layout)
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        with controlnet(sd15, units(models, [("cn", {})])) as network:
            with restrict_units(network, attachment.controller):
                run(sd15, layout, [(0, 4), (0, 4)], inputs, network, attachment.controller)
        notes = attachment.controller.notes
    narrowed, unknown = network.residual_log
    assert not narrowed[0][0][[0, 2]].any()
    assert unknown[0][0][[0, 2]].any()
    assert (
        "MasaCtrl could not tell sources from targets in some U-Net calls; ControlNet units acted on every image there"
        in notes
    )


# --- control maps: one hint per target ----------------------------------------------------------


def recorded_hints(param):
    """Wrap a unit's model (inside MasaCtrl's view, which wraps it later) to record each call's hint."""
    seen = []
    model = param.control_model

    class Recorder:
        def __getattr__(self, name):
            return getattr(model, name)

        def __call__(self, *args, **kwargs):
            seen.append(kwargs["hint"])
            return model(*args, **kwargs)

    param.control_model = Recorder()
    return seen


def test_each_mapped_image_gets_its_own_hint_in_every_call(sd15, models):
    from lib_masactrl.controlnet_rows import UnitMaps

    layout = StepLayout.cfg((None, 0, 0))
    inputs = stack_inputs(layout)
    made = []

    def hint(number, size, like):
        made.append((number, size))
        return torch.full((1, 3, *size), float(number + 1), dtype=like.dtype)

    maps = UnitMaps(0, {1: 0, 2: 1}, hint)
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        params = units(models, [("cn", {})])
        seen = recorded_hints(params[0])
        own = params[0].hint_cond
        with controlnet(sd15, params) as network:
            with restrict_units(network, attachment.controller, "target", maps):
                run(sd15, layout, [(0, 3), (3, 6)], inputs, network, attachment.controller)
                run(sd15, layout, [(0, 6)], inputs, network, attachment.controller, step=1)
    assert [hints.shape[0] for hints in seen] == [3, 3, 6]
    for hints, start in zip(seen, (0, 3, 0)):  # the calls' first rows in the step's stack
        for row in range(hints.shape[0]):
            image = layout.rows[start + row].image
            expected = own[0] if image == 0 else torch.full_like(own[0], float(image))
            assert torch.equal(hints[row], expected)
    assert sorted(set(made)) == [(0, (64, 64)), (1, (64, 64))]  # made once per map and size


@pytest.mark.parametrize("unit_index, specs, message", [
    (1, [("cn", {})], "the control maps go to ControlNet unit 2, but 1 unit is enabled"),
    (0, [("adapter", {})], "cannot take a map per image"),
])
def test_control_maps_for_a_unit_that_cannot_take_them_are_refused(sd15, models, unit_index, specs, message):
    from lib_masactrl.controlnet_rows import UnitMaps

    maps = UnitMaps(unit_index, {1: 0}, lambda number, size, like: torch.zeros(1, 3, *size))
    with attach(sd15, MasaCtrlSettings(**CONTROLLED)) as attachment:
        params = units(models, specs)
        originals = [param.control_model for param in params]
        with controlnet(sd15, params) as network:
            with pytest.raises(SettingsError, match=message):
                restrict_units(network, attachment.controller, "target", maps)
        assert [param.control_model for param in params] == originals
