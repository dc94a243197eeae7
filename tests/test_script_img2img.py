"""Real-image editing end to end in the stand-in WebUI (tests/webui): the init image is inverted
along the sampler's schedule, sources reconstruct it, targets edit it."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from engine_helpers import module_state
from PIL import Image
from refusals import ui_refusal

ROOT = pathlib.Path(__file__).resolve().parents[1]
TARGET = "a photo of a corgi running on the beach"




def inversion_cache(host):
    """The adapter's cache, which the script's inversions go through."""
    from lib_masactrl.webui import inversion

    return inversion.CACHE


def photo(width=64, height=64, seed=0):
    """A smooth random picture: what the stand-in VAE encodes to a latent of moderate size."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(height // 16, width // 16, 3))
    return Image.fromarray(np.kron(coarse, np.ones((16, 16, 1))).astype(np.uint8))


def masactrl(**values):
    """The accordion's values in UI order, with MasaCtrl on and ``values`` changed."""
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, **values}
    return {"MasaCtrl": [changed.get(field.name, field.default) for field in FIELDS]}


class Probe:
    """Records, through the WebUI's own callback, the latent the sampler starts from and the init
    latent, and counts U-Net calls."""

    def __init__(self, sd15):
        from modules import script_callbacks

        self.starts = []
        self.init_latents = []
        self.unet_calls = 0
        self.p = None
        self.sampler = None
        script_callbacks.on_cfg_denoiser(self.on_cfg_denoiser, name="test_probe")
        self.handle = sd15.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.unet_calls += 1

    def on_cfg_denoiser(self, params):
        if params.denoiser.step == 0:
            self.starts.append(params.x.detach().clone())
            self.init_latents.append(params.denoiser.p.init_latent.detach().clone())
            self.p = params.denoiser.p
            self.sampler = params.denoiser.p.sampler  # processing drops p.sampler when it closes
            self.text_cond = params.text_cond

    def close(self):
        from modules import script_callbacks

        script_callbacks.remove_callbacks_for_function(self.on_cfg_denoiser)
        self.handle.remove()


@pytest.fixture
def probe(host, sd15):
    probe = Probe(sd15)
    try:
        yield probe
    finally:
        probe.close()


def edit(host, steps=8, strength=1.0, batch_size=2, sampler="Euler", **values):
    values.setdefault("start_step", 2)
    return host.img2img(
        photo(), TARGET, steps=steps, sampler_name=sampler, denoising_strength=strength, batch_size=batch_size,
        seed=5, script_args=masactrl(**values),
    )


def relative_error(latent, reference):
    return float((latent - reference).norm() / reference.norm())


def test_sources_reconstruct_the_init_image_and_targets_edit_it(host, sd15, probe):
    before = module_state(sd15)
    processed = edit(host, steps=10)
    source, target = processed.standin_latents
    init = probe.init_latents[0][0]
    assert relative_error(source, init) < 0.25
    plain = host.img2img(photo(), TARGET, steps=10, sampler_name="Euler", denoising_strength=1.0, seed=5).standin_latents[0]
    assert relative_error(plain, init) > 10 * relative_error(source, init)
    assert not torch.allclose(target, source)
    assert processed.all_prompts == ["", TARGET]
    first = processed.index_of_first_image
    assert "MasaCtrl inversion: True" in processed.infotexts[first]
    assert module_state(sd15) == before


def test_the_sampler_starts_from_the_inverted_latent(host, probe):
    """The start latent of every row is the engine's inversion of the init latent along the
    sampler's own schedule (strength 0.5: half of it), computed here from the same model wrapper."""
    from lib_masactrl import invert
    from modules import sd_samplers_common, shared

    edit(host, steps=8, strength=0.5)
    p = probe.p
    steps, t_enc = sd_samplers_common.setup_img2img_steps(p)
    sigmas = probe.sampler.get_sigmas(p, steps)[steps - t_enc - 1:]
    cond = shared.sd_model.get_learned_conditioning([""])
    image_cond = p.image_conditioning[:1]
    wrap = probe.sampler.model_wrap
    expected = invert(
        probe.init_latents[0][:1], sigmas,
        lambda x, s: wrap(x, s, cond={"c_crossattn": [cond], "c_concat": [image_cond]}), float(wrap.sigmas[0]),
    ).start
    start = probe.starts[0]
    torch.testing.assert_close(start[0], expected[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(start[1], expected[0], rtol=1e-4, atol=1e-4)
    assert 0 < len(sigmas) - 1 < 8


def test_a_repeated_edit_reuses_the_inversion_without_calling_the_unet(host, probe):
    first = edit(host, steps=6)
    calls_first = probe.unet_calls
    second = edit(host, steps=6, mode="union")
    calls_second = probe.unet_calls - calls_first
    inversion_steps = 6
    assert calls_first - calls_second == inversion_steps
    torch.testing.assert_close(probe.starts[1], probe.starts[0], rtol=0, atol=0)
    assert not torch.equal(first.standin_latents[1], second.standin_latents[1])


@pytest.mark.parametrize(
    "setting, value, source_prompt",
    [("CLIP_stop_at_last_layers", 2, ""), ("emphasis", "No norm", "a (photo:1.4) of a dog")],
    ids=["clip skip", "emphasis mode"],
)
def test_a_setting_that_changes_the_conditioning_inverts_again(host, probe, setting, value, source_prompt):
    """The cache is keyed on the conditioning tensors the inversion read, so no setting that
    shapes them (clip skip, emphasis, styles, embeddings...) can leave a stale latent behind."""
    edit(host, steps=6, source_prompt=source_prompt)
    calls = probe.unet_calls
    edit(host, steps=6, source_prompt=source_prompt)
    reused = probe.unet_calls - calls
    host.set_setting(setting, value)
    calls = probe.unet_calls
    edit(host, steps=6, source_prompt=source_prompt)
    assert probe.unet_calls - calls == reused + 6  # the 6 inversion steps ran again
    assert not torch.equal(probe.starts[2], probe.starts[1])  # and started from another latent


def test_interrupting_the_inversion_leaves_no_patch_and_no_cache_entry(host, sd15):
    from modules import shared

    before = module_state(sd15)
    calls = []

    def interrupt_on_third(module, args):
        calls.append(1)
        if len(calls) == 3:
            shared.state.interrupt()

    handle = sd15.register_forward_pre_hook(interrupt_on_third)
    try:
        edit(host, steps=6)
    finally:
        handle.remove()
    assert len(inversion_cache(host)) == 0
    assert module_state(sd15) == before
    assert len(calls) == 3


def test_hiding_the_reconstruction_keeps_only_the_edits(host):
    processed = edit(host, steps=4, show_reconstruction=False, source_prompt="a photo of a corgi")
    first = processed.index_of_first_image
    assert len(processed.images) - first == 1
    assert processed.infotexts[first].startswith(TARGET)
    assert processed.all_prompts == [TARGET] and processed.all_seeds == [5]


def test_non_square_images_and_inversion_guidance(host, probe):
    processed = host.img2img(
        photo(128, 64), TARGET, steps=4, width=128, height=64, sampler_name="Euler", denoising_strength=1.0,
        batch_size=2, seed=5, script_args=masactrl(inversion_cfg=3.0, source_prompt="a dog"),
    )
    assert processed.standin_latents.shape[-2:] == (8, 16)
    first = processed.index_of_first_image
    values = host.script_values_from_infotext(processed.infotexts[first], "MasaCtrl", is_img2img=True)
    assert values[1] == "a dog" and values[10:13] == [True, 3.0, True]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=1), "MasaCtrl needs an even batch size of at least 2"),
        (dict(strength=0.0), "denoising strength 0 leaves no step to invert or edit"),
    ],
)
def test_bad_input_stops_the_edit_with_its_message(host, sd15, kwargs, message):
    before = module_state(sd15)
    assert message in ui_refusal(edit(host, steps=4, **kwargs))
    assert module_state(sd15) == before


def test_a_failing_inversion_stops_the_edit_instead_of_sampling_plain_noise(host, sd15):
    before = module_state(sd15)
    calls = []

    def fail_first_call(module, args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")

    handle = sd15.register_forward_pre_hook(fail_first_call)
    try:
        message = ui_refusal(edit(host, steps=4))
    finally:
        handle.remove()
    assert "inverting the init image failed (out of memory (simulated))" in message
    assert module_state(sd15) == before


def test_larger_batches_repeat_identical_pairs_with_a_deterministic_sampler(host, probe):
    processed = edit(host, steps=4, batch_size=4)
    latents = processed.standin_latents
    assert processed.all_prompts == ["", "", TARGET, TARGET]
    torch.testing.assert_close(latents[1], latents[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(latents[3], latents[2], rtol=1e-5, atol=1e-4)
    assert probe.unet_calls == 1 + 4 + 4  # the cache's probe, the inversion, the sampling


def test_an_inpainting_mask_limits_the_edit_to_the_masked_area(host, probe):
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, :32] = 255
    processed = host.img2img(
        photo(), TARGET, mask=Image.fromarray(mask), mask_blur=0, steps=4, sampler_name="Euler",
        denoising_strength=1.0, batch_size=2, seed=5, script_args=masactrl(start_step=0),
    )
    init = probe.init_latents[0][0]
    target = processed.standin_latents[1]
    torch.testing.assert_close(target[:, :, 5:], init[:, :, 5:], rtol=1e-5, atol=1e-4)
    assert relative_error(target[:, :, :3], init[:, :, :3]) > 0.01


def test_sdxl_dict_conditioning_inverts_too(sd15):
    from host import WebUIHost
    from tiny_unets import sdxl_unet

    xl = sdxl_unet(0)
    before = module_state(xl)
    host = WebUIHost(xl, extension_dir=str(ROOT), model_name="tiny-sdxl")
    try:
        probe = Probe(xl)
        try:
            processed = host.img2img(
                photo(), TARGET, steps=4, sampler_name="Euler", denoising_strength=1.0, batch_size=2, seed=5,
                script_args=masactrl(start_step=0, inversion_cfg=2.0),
            )
        finally:
            probe.close()
    finally:
        host.teardown()
    assert isinstance(probe.text_cond, dict)
    assert relative_error(processed.standin_latents[0], probe.init_latents[0][0]) < 0.5
    assert module_state(xl) == before


def test_the_inversion_shows_in_the_progress_bar_under_its_own_name(host, sd15):
    from modules import shared

    seen = []
    handle = sd15.register_forward_pre_hook(
        lambda module, args: seen.append((shared.state.job, shared.state.sampling_step, shared.state.sampling_steps))
    )
    try:
        edit(host, steps=4)
    finally:
        handle.remove()
    # the first call is the cache's probe of the model (see lib_masactrl/webui/inversion.py, _probe)
    assert seen[:5] == [("MasaCtrl inversion", 0, 4)] + [("MasaCtrl inversion", step, 4) for step in range(4)]
    assert all(job != "MasaCtrl inversion" for job, _, _ in seen[5:])


def test_no_init_image_is_refused_with_a_clear_message(host, sd15):
    """The WebUI's own img2img fails without an image (p.init); MasaCtrl's warning says why first."""
    before = module_state(sd15)
    with pytest.warns(UserWarning, match="inverting the init image needs an init image"), pytest.raises(AttributeError):
        host.img2img(None, TARGET, steps=4, batch_size=2, script_args=masactrl())
    assert module_state(sd15) == before


def test_the_cache_size_setting_can_turn_the_cache_off(host, probe):
    from modules import shared

    assert shared.opts.data_labels["masactrl_inversion_cache_size"].section[1] == "MasaCtrl"
    host.set_setting("masactrl_inversion_cache_size", 0)
    edit(host, steps=4)
    first = probe.unet_calls
    edit(host, steps=4)
    assert probe.unet_calls == 2 * first
    assert len(inversion_cache(host)) == 0


def test_two_init_images_through_the_api_pair_as_one_source_and_one_target(host, sd15):
    """p.init shrinks the batch to the number of init images after ``process`` (processing.py)."""
    import base64
    import io

    def encoded(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    before = module_state(sd15)
    status, body = host.api_img2img({
        "init_images": [encoded(photo(seed=0)), encoded(photo(seed=1))], "prompt": TARGET, "steps": 4,
        "width": 64, "height": 64, "batch_size": 4, "denoising_strength": 1.0, "sampler_name": "Euler",
        "alwayson_scripts": {"MasaCtrl": {"args": [True]}},
    })
    assert status == 200, body
    assert len(body["images"]) == 2
    info = json.loads(body["info"])
    assert info["all_prompts"][:2] == ["", TARGET]
    assert "MasaCtrl expected" not in body["info"] and "ran without MasaCtrl" not in body["info"]
    assert module_state(sd15) == before
