"""MasaCtrl end to end in the stand-in WebUI run as WebUI Forge (tests/forge_host): the script loaded
as Forge loads it beside Forge's built-in ControlNet, a Forge model whose U-Net sits behind a patcher
that processing resets before every batch and every sampling pass, Forge's CFG denoiser and
``sampling_function`` (tests/forge/backend), the refiner reloading the model mid-pass.

Properties: sources equal the same batch without control (same call shapes, so bit for bit) and a
plain one-image run up to batch rounding; targets move; nothing is left on the model's own patcher
or network; a refused request samples nothing; ControlNet narrowed to the targets leaves the
sources exactly as without ControlNet.
"""

from __future__ import annotations

import os
import pathlib
import sys

import numpy as np
import pytest
import torch
from engine_helpers import module_state
from PIL import Image
from refusals import ui_refusal

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "forge")
if FORGE_DIR not in sys.path:
    sys.path.insert(0, FORGE_DIR)

from forge_unets import tiny_forge_unet  # noqa: E402

CONTROLNET = ROOT / "tests" / "forge_host" / "sd_forge_controlnet"
SOURCE = "a photo of a corgi sitting on the beach"
TARGET = "a photo of a corgi running on the beach"
STEPS = 4
PRISTINE_OPTIONS = {"transformer_options": {}}


def close(actual, expected):
    """Equal up to float32 rounding of differently batched matmuls."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=3e-4)


def moved(actual, expected):
    """Changed far beyond rounding."""
    assert (actual - expected).abs().max() > 5e-3


def masactrl(**values):
    """The accordion's values in UI order: MasaCtrl on, controlling from the first step and layer."""
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, "source_prompt": SOURCE, "start_step": 0, "start_layer": 0, **values}
    return [changed.get(field.name, field.default) for field in FIELDS]


UNCONTROLLED = {"start_step": STEPS}
"""A start step past the last: the batch is paired and sampled the same way, without control."""


def start_forge(network):
    from host import WebUIHost

    from modules import extensions

    extensions.register_extension(str(CONTROLNET), is_builtin=True)
    try:
        return WebUIHost(network, extension_dir=str(ROOT), forge=True)
    except BaseException:
        extensions.clear_extensions()
        raise


@pytest.fixture(scope="module")
def network():
    return tiny_forge_unet("sd15", seed=0)


@pytest.fixture
def forge(network):
    host = start_forge(network)
    try:
        yield host
    finally:
        host.teardown()


def generate(host, prompt=TARGET, *, batch_size=2, masactrl_args=None, units=(), **kwargs):
    script_args = {"ControlNet": list(units)} if units else {}
    if masactrl_args is not None:
        script_args["MasaCtrl"] = masactrl_args
    kwargs.setdefault("steps", STEPS)
    return host.txt2img(prompt, seed=7, batch_size=batch_size, script_args=script_args, **kwargs)


def unit(weight=1.0, seed=0):
    hint = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return {"enabled": True, "weight": weight, "image": hint}


def loaded():
    from modules import shared

    return shared.sd_model


def masactrl_notes(processed):
    return [line for line in processed.comments.splitlines() if line.startswith("MasaCtrl")]


# --- the host ------------------------------------------------------------------------------------


def test_masactrl_knows_it_runs_in_forge_and_offers_the_same_arguments(forge):
    from lib_masactrl.fields import FIELDS
    from lib_masactrl.webui import compat

    assert compat.is_forge() and compat.host_problem() is None
    script = forge.script("MasaCtrl")
    assert script.args_to - script.args_from == len(FIELDS)
    assert type(loaded()).__name__ == "StableDiffusion" and not hasattr(loaded(), "model")


def test_after_forge_the_stand_in_is_the_automatic1111_webui_again(network, sd15):
    start_forge(network).teardown()
    from host import WebUIHost

    host = WebUIHost(sd15, extension_dir=str(ROOT))
    try:
        from lib_masactrl.webui import compat

        assert not compat.is_forge()
        assert hasattr(loaded(), "model") and generate(host, batch_size=1).images
    finally:
        host.teardown()


# --- txt2img -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M"])
def test_sources_are_plain_and_targets_are_controlled(forge, network, sampler):
    before = module_state(network)
    plain_source = generate(forge, SOURCE, batch_size=1, sampler_name=sampler).standin_latents[0]
    uncontrolled = generate(forge, masactrl_args=masactrl(**UNCONTROLLED), sampler_name=sampler).standin_latents
    processed = generate(forge, masactrl_args=masactrl(), sampler_name=sampler)
    source, target = processed.standin_latents
    assert torch.equal(source, uncontrolled[0])
    close(source, plain_source)
    moved(target, uncontrolled[1])
    assert masactrl_notes(processed) == []
    assert "MasaCtrl start layer: 0" in processed.infotexts[1]
    assert module_state(network) == before
    assert loaded().forge_objects_original.unet.model_options == PRISTINE_OPTIONS


@pytest.mark.parametrize("case", ["cfg 1", "one chunk per call", "uncond skipped early"])
def test_sources_stay_plain_however_forge_batches_the_calls(forge, case, monkeypatch):
    from backend.sampling import sampling_function

    kwargs = {}
    if case == "cfg 1":
        kwargs["cfg_scale"] = 1.0
    elif case == "one chunk per call":
        monkeypatch.setattr(sampling_function, "MAX_CHUNKS_PER_CALL", 1)
    else:
        forge.set_setting("skip_early_cond", 0.5)
    uncontrolled = generate(forge, masactrl_args=masactrl(**UNCONTROLLED), **kwargs).standin_latents
    processed = generate(forge, masactrl_args=masactrl(), **kwargs)
    assert torch.equal(processed.standin_latents[0], uncontrolled[0])
    moved(processed.standin_latents[1], uncontrolled[1])
    assert masactrl_notes(processed) == []


def test_control_off_is_the_plain_generation(forge):
    plain = generate(forge).standin_latents
    off = generate(forge, masactrl_args=masactrl(enabled=False)).standin_latents
    assert torch.equal(off, plain)


def test_a_one_source_sequence_gives_each_target_its_prompt(forge):
    lines = "a photo of a corgi jumping on the beach\na photo of a corgi sleeping on the beach"
    args = {"layout": "one source", "target_prompts": lines}
    uncontrolled = generate(forge, SOURCE, batch_size=3, masactrl_args=masactrl(**args, **UNCONTROLLED))
    processed = generate(forge, SOURCE, batch_size=3, masactrl_args=masactrl(**args))
    assert processed.all_prompts == [SOURCE, *lines.splitlines()]
    assert torch.equal(processed.standin_latents[0], uncontrolled.standin_latents[0])
    for target in (1, 2):
        moved(processed.standin_latents[target], uncontrolled.standin_latents[target])


def test_hires_fix_is_controlled_after_forges_second_reset(forge):
    """Forge calls ``process_before_every_sampling`` twice for the hires pass, resetting the
    patcher in between: MasaCtrl must end up on the patcher that samples, once."""
    hires = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.6}
    uncontrolled = generate(forge, masactrl_args=masactrl(hires=True, **UNCONTROLLED), **hires).standin_latents
    processed = generate(forge, masactrl_args=masactrl(hires=True), **hires)
    first_pass_only = generate(forge, masactrl_args=masactrl(hires=False), **hires).standin_latents
    assert processed.standin_latents.shape[-1] == 16
    assert torch.equal(processed.standin_latents[0], uncontrolled[0])
    moved(processed.standin_latents[1], first_pass_only[1])
    assert masactrl_notes(processed) == []
    assert [entry[0] for entry in forge.script("ControlNet").applied[-3:]] == ["first", "hires", "hires"]


def test_a_refiner_switch_is_followed_and_sources_stay_plain(forge):
    refiner = (tiny_forge_unet("sd15", seed=1), "tiny-forge-refiner")
    uncontrolled = generate(forge, masactrl_args=masactrl(**UNCONTROLLED), refiner=refiner, refiner_switch_at=0.5)
    processed = generate(forge, masactrl_args=masactrl(), refiner=refiner, refiner_switch_at=0.5)
    assert "Refiner: tiny-forge-refiner" in processed.infotexts[0]
    assert torch.equal(processed.standin_latents[0], uncontrolled.standin_latents[0])
    moved(processed.standin_latents[1], uncontrolled.standin_latents[1])
    notes = masactrl_notes(processed)
    assert any("MasaCtrl follows the new model" in note for note in notes) and not any("bypass" in n for n in notes)
    # Control that ends before the switch differs from control that goes on: the refiner's steps
    # (after the switch at step 2) are controlled too.
    before_switch = generate(forge, masactrl_args=masactrl(end_step=2), refiner=refiner, refiner_switch_at=0.5)
    moved(processed.standin_latents[1], before_switch.standin_latents[1])
    generate(forge)
    assert loaded().sd_checkpoint_info.name_for_extra != "tiny-forge-refiner"
    assert loaded().forge_objects_original.unet.model_options == PRISTINE_OPTIONS


def test_an_interrupted_generation_leaves_nothing_behind(forge, network):
    before = module_state(network)
    plain = generate(forge).standin_latents
    forge.interrupt_at(1)
    generate(forge, masactrl_args=masactrl())
    assert torch.equal(generate(forge).standin_latents, plain)
    assert module_state(network) == before
    assert loaded().forge_objects_original.unet.model_options == PRISTINE_OPTIONS


def test_a_checkpoint_switch_between_generations_gets_a_fresh_model_and_control_on_it(forge):
    generate(forge, masactrl_args=masactrl())
    first_model = loaded()
    forge.switch_model(tiny_forge_unet("sd15", seed=2), name="tiny-forge-other")
    assert loaded() is not first_model
    uncontrolled = generate(forge, masactrl_args=masactrl(**UNCONTROLLED)).standin_latents
    processed = generate(forge, masactrl_args=masactrl())
    assert "Model: tiny-forge-other" in processed.infotexts[0]
    assert torch.equal(processed.standin_latents[0], uncontrolled[0])
    moved(processed.standin_latents[1], uncontrolled[1])
    assert masactrl_notes(processed) == []
    for model in (first_model, loaded()):
        assert model.forge_objects_original.unet.model_options == PRISTINE_OPTIONS


@pytest.mark.parametrize("kind, engine", [("sd21", "StableDiffusion2"), ("sdxl", "StableDiffusionXL")])
def test_sd2_and_sdxl_sources_are_plain_and_targets_are_controlled(kind, engine):
    network = tiny_forge_unet(kind, seed=0)
    host = start_forge(network)
    try:
        assert type(loaded()).__name__ == engine
        uncontrolled = generate(host, masactrl_args=masactrl(**UNCONTROLLED)).standin_latents
        processed = generate(host, masactrl_args=masactrl())
        assert torch.equal(processed.standin_latents[0], uncontrolled[0])
        moved(processed.standin_latents[1], uncontrolled[1])
        assert masactrl_notes(processed) == []
    finally:
        host.teardown()


# --- refusals --------------------------------------------------------------------------------------


class FluxTransformer(torch.nn.Module):
    """A denoiser that is not a U-Net, as Flux's is."""

    def __init__(self):
        super().__init__()
        self.double_blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8)])


def test_a_flux_model_is_refused_by_name_and_nothing_is_sampled(forge):
    forge.switch_model(FluxTransformer(), name="tiny-flux")
    assert type(loaded()).__name__ == "Flux"
    message = ui_refusal(generate(forge, masactrl_args=masactrl()))
    assert "tiny-flux (Flux)" in message and "SD1.x, SD2.x and SDXL" in message
    status, body = forge.api_txt2img({"prompt": TARGET, "steps": STEPS, "width": 64, "height": 64, "batch_size": 2,
                                      "alwayson_scripts": {"MasaCtrl": {"args": masactrl()}}})
    assert status == 422 and "tiny-flux (Flux)" in body["detail"], body


# --- the built-in ControlNet -----------------------------------------------------------------------


def test_controlnet_narrowed_to_the_targets_leaves_the_sources_as_without_it(forge):
    without = generate(forge, masactrl_args=masactrl()).standin_latents
    narrowed = generate(forge, masactrl_args=masactrl(controlnet="targets"), units=[unit()]).standin_latents
    both = generate(forge, masactrl_args=masactrl(controlnet="both"), units=[unit()]).standin_latents
    assert torch.equal(narrowed[0], without[0])
    moved(narrowed[1], without[1])
    moved(both[0], without[0])
    assert forge.script("ControlNet").applied[-1] == ("first", 1)


def test_per_unit_assignment_gives_each_unit_its_images(forge):
    """A unit given to the source acts on the source as it does with "both"; a unit given to the
    target leaves the source as without ControlNet."""
    without = generate(forge, masactrl_args=masactrl()).standin_latents
    first, second = unit(weight=1.0, seed=1), unit(weight=0.5, seed=2)
    both = generate(forge, masactrl_args=masactrl(controlnet="both"), units=[first]).standin_latents
    per_unit = generate(forge, masactrl_args=masactrl(controlnet="per unit", controlnet_units="source, target"),
                        units=[first, second]).standin_latents
    assert torch.equal(per_unit[0], both[0])
    moved(per_unit[0], without[0])
    wrong = generate(forge, masactrl_args=masactrl(controlnet="per unit", controlnet_units="source"),
                     units=[first, second])
    assert "one entry per enabled unit" in ui_refusal(wrong)


# --- img2img ------------------------------------------------------------------------------------------


def photo(seed=0):
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(4, 4, 3))
    return Image.fromarray(np.kron(coarse, np.ones((16, 16, 1))).astype(np.uint8))


def test_img2img_sources_reconstruct_the_photo_through_forges_model_calls(forge):
    from modules import script_callbacks

    init_latents = []

    def record(params):
        if params.denoiser.step == 0:
            init_latents.append(params.denoiser.p.init_latent.detach().clone())

    script_callbacks.on_cfg_denoiser(record, name="test_record_init")
    processed = forge.img2img(photo(), TARGET, steps=10, sampler_name="Euler", denoising_strength=1.0, batch_size=2,
                              seed=5, script_args={"MasaCtrl": masactrl(start_step=2)})
    plain = forge.img2img(photo(), TARGET, steps=10, sampler_name="Euler", denoising_strength=1.0, seed=5)
    source, target = processed.standin_latents
    init = init_latents[0][0]

    def error(latent):
        return float((latent - init).norm() / init.norm())

    assert error(source) < 0.25
    assert error(plain.standin_latents[0]) > 10 * error(source)
    moved(target, source)
    assert "MasaCtrl inversion: True" in processed.infotexts[processed.index_of_first_image]
    assert loaded().forge_objects_original.unet.model_options == PRISTINE_OPTIONS


def control_map(level):
    """A flat map: the stand-in ControlNet's residual follows a hint's mean brightness."""
    return Image.fromarray(np.full((64, 64, 3), level, dtype=np.uint8))


def test_each_control_map_conditions_only_its_target(forge):
    sequence = {"layout": "one source", "animation": "none"}
    maps = [control_map(level) for level in (30, 120, 210)]
    first = generate(forge, SOURCE, batch_size=4, masactrl_args=masactrl(control_maps=maps, **sequence),
                     units=[unit()]).standin_latents
    other = generate(forge, SOURCE, batch_size=4, units=[unit()],
                     masactrl_args=masactrl(control_maps=[maps[0], control_map(250), maps[2]], **sequence)).standin_latents
    own = generate(forge, SOURCE, batch_size=4, masactrl_args=masactrl(**sequence), units=[unit()]).standin_latents
    assert torch.equal(first[0], other[0]) and torch.equal(first[0], own[0])  # the source: no unit, no map
    assert torch.equal(first[1], other[1]) and torch.equal(first[3], other[3])  # the other targets keep theirs
    moved(first[2], other[2])
    for target in (1, 2, 3):
        moved(first[target], own[target])


# --- masks ----------------------------------------------------------------------------------------


def test_subject_word_masks_change_the_target_and_are_shown(forge):
    mutual = generate(forge, masactrl_args=masactrl()).standin_latents
    masked = generate(forge, masactrl_args=masactrl(mask_mode="subject words", mask_words="corgi", show_masks=True))
    close(masked.standin_latents[0], mutual[0])
    moved(masked.standin_latents[1], mutual[1])
    assert [image.mode for image in masked.images[-3:]] == ["RGB", "L", "L"]  # after the grid and the pair
    assert masactrl_notes(masked) == []


def half_mask(left):
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, slice(0, 32) if left else slice(32, 64)] = 255
    return Image.fromarray(mask, "L")


def test_uploaded_masks_change_the_target_and_are_shown(forge):
    mutual = generate(forge, masactrl_args=masactrl()).standin_latents
    masked = generate(forge, masactrl_args=masactrl(mask_mode="uploaded masks", source_mask=half_mask(True),
                                                    target_mask=half_mask(False), show_masks=True))
    close(masked.standin_latents[0], mutual[0])
    moved(masked.standin_latents[1], mutual[1])
    source_preview = np.asarray(masked.images[-2])
    assert source_preview[:, :32].min() == 255 and source_preview[:, 32:].max() == 0


# --- sequences: the animation ------------------------------------------------------------------------


def test_a_sequence_animation_holds_the_targets_in_order(forge):
    import io

    lines = "a photo of a corgi jumping on the beach\na photo of a corgi sleeping on the beach"
    processed = generate(forge, SOURCE, batch_size=3, masactrl_args=masactrl(layout="one source", target_prompts=lines,
                                                                            animation="webp", fps=4))
    first = processed.index_of_first_image
    buffer = io.BytesIO()
    processed.images[-1].save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as animation:
        assert animation.n_frames == 2
        for frame, target in enumerate(processed.images[first + 1:first + 3]):
            animation.seek(frame)
            assert np.array_equal(np.asarray(animation.convert("RGB")), np.asarray(target.convert("RGB")))
