"""Real-image editing where the source follows its inversion (lib_masactrl/anchoring.py), end to
end in the stand-in WebUI with real k-diffusion samplers on the tiny real ldm U-Net: the sources'
U-Net inputs are the stored inversion latents, the reconstruction is the init latent, and the
targets are what feeding those latents to the control gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_helpers import module_state
from PIL import Image

TARGET = "a photo of a corgi running on the beach"


def masactrl(**values):
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, "start_step": 1, "start_layer": 0, **values}
    return {"MasaCtrl": [changed.get(field.name, field.default) for field in FIELDS]}


def photo(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.kron(rng.uniform(40, 215, size=(4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8))


class Calls:
    """Every denoiser call's stacked input as the U-Net gets it (after MasaCtrl's callback) and its
    noise level; the init latent; the trajectory the sources were given."""

    def __init__(self, monkeypatch, feed=None):
        from lib_masactrl.session import GenerationSession
        from modules import script_callbacks

        self.inputs, self.levels, self.trajectories, self.init_latent = [], [], [], None
        self.feed = feed
        original = GenerationSession.follow_trajectory

        def follow(session, trajectory, rows):
            self.trajectories.append((trajectory, dict(rows)))
            return original(session, trajectory, rows)

        monkeypatch.setattr(GenerationSession, "follow_trajectory", follow)
        script_callbacks.on_cfg_denoiser(self.record, name="test_calls")

    def record(self, params):
        level = float(params.sigma.max())
        if self.feed is not None:
            params.x = self.feed(params.x, level)
        self.inputs.append(params.x.detach().clone())
        self.levels.append(level)
        self.init_latent = params.denoiser.p.init_latent.detach().clone()


def edit(host, sampler="Euler", steps=10, strength=1.0, **values):
    return host.img2img(photo(), TARGET, steps=steps, sampler_name=sampler, denoising_strength=strength, batch_size=2,
                        seed=5, script_args=masactrl(**values))


def relative_error(latent, reference):
    return float((latent - reference).norm() / reference.norm())


@pytest.mark.parametrize("sampler", ["Euler", "Heun", "DPM++ 2M", "DPM2"])
@pytest.mark.parametrize("steps", [4, 10, 30])
def test_the_source_follows_its_inversion_and_reconstructs_the_init_latent(host, sd15, monkeypatch, sampler, steps):
    before = module_state(sd15)
    free = edit(host, sampler, steps, follow_inversion=False).standin_latents
    calls = Calls(monkeypatch)
    processed = edit(host, sampler, steps)
    [(trajectory, rows)] = calls.trajectories
    assert rows == {0: 0} and trajectory.latents.shape[0] == steps + 1
    schedule = set(trajectory.levels)
    for x, level in zip(calls.inputs, calls.levels):
        # the stack is [source cond, target cond, source uncond, target uncond]
        for row in (0, 2):
            if level in schedule:
                assert torch.equal(x[row], trajectory.latents[trajectory.levels.index(level), 0])
            else:  # DPM2's midpoints: the inversion's straight step between two levels
                assert torch.equal(x[row], trajectory.at(level)[0])
        assert not torch.equal(x[1], x[0]) or level == trajectory.levels[-1]
    assert any(level not in schedule for level in calls.levels) == (sampler == "DPM2")
    source, init = processed.standin_latents[0], calls.init_latent[0]
    assert torch.equal(source, init)
    print(f"{sampler}, {steps} steps: reconstruction error {relative_error(free[0], init):.4f} when the source "
          f"is denoised freely, {relative_error(source, init):.1e} when it follows its inversion")
    assert relative_error(free[0], init) > 1e-3
    assert module_state(sd15) == before


@pytest.mark.parametrize("sampler", ["Euler", "Heun"])
def test_the_targets_are_what_feeding_the_stored_latents_to_the_control_gives(host, monkeypatch, sampler):
    """Independent of the engine's anchoring: the source rows are replaced here, in a callback
    after MasaCtrl's, with the latents of the stored trajectory, and MasaCtrl itself only
    controls; the result must be the same bits."""
    followed = edit(host, sampler, steps=6)
    from lib_masactrl.webui import inversion

    [trajectory] = [inversion.CACHE.get(key) for key in list(inversion.CACHE._entries)]

    def feed(x, level):
        fed = x.clone()
        fed[[0, 2]] = trajectory.at(level)[0].to(x.dtype)
        return fed

    Calls(monkeypatch, feed=feed)
    reference = edit(host, sampler, steps=6, follow_inversion=False)
    assert torch.equal(followed.standin_latents[1], reference.standin_latents[1])


def test_switched_off_the_source_is_denoised_freely_as_before(host, monkeypatch):
    """Off is the feature absent: the same bits as with the anchoring taken out, and the sources'
    inputs are the sampler's own."""
    from lib_masactrl.session import GenerationSession

    off = edit(host, steps=6, follow_inversion=False)
    calls = Calls(monkeypatch)
    monkeypatch.setattr(GenerationSession, "finished_latents", lambda session, samples: samples)
    monkeypatch.setattr(GenerationSession, "follow_trajectory", lambda session, trajectory, rows: None)
    absent = edit(host, steps=6)
    assert torch.equal(off.standin_latents, absent.standin_latents)
    assert not torch.equal(off.standin_latents[0], calls.init_latent[0])
    assert "MasaCtrl source follows inversion: False" in off.infotexts[off.index_of_first_image]


def test_a_cached_trajectory_is_followed_too_and_kept_with_the_start_latent(host, monkeypatch):
    from lib_masactrl.webui import inversion

    first = edit(host, steps=6)
    entries, memory = len(inversion.CACHE), inversion.CACHE.nbytes
    calls = Calls(monkeypatch)
    second = edit(host, steps=6, mode="union")
    assert len(inversion.CACHE) == entries and memory == 7 * 1 * 4 * 8 * 8 * 4  # levels x sources x latent x float32
    assert torch.equal(second.standin_latents[0], first.standin_latents[0])
    assert torch.equal(calls.inputs[0][0], calls.trajectories[0][0].start[0])


def encoded(image):
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_next_level_setting_inverts_anew_and_is_followed_alike(host, monkeypatch):
    first = edit(host, steps=6)
    host.set_setting("masactrl_inversion_reads", "next level")
    calls = Calls(monkeypatch)
    second = edit(host, steps=6)
    [(trajectory, _)] = calls.trajectories
    assert not torch.equal(first.standin_latents[1], second.standin_latents[1])  # another start latent
    assert torch.equal(second.standin_latents[0], calls.init_latent[0])
    assert torch.equal(calls.inputs[0][0], trajectory.start[0])
    assert "MasaCtrl inversion reads: next level" in second.infotexts[second.index_of_first_image]


def test_partial_strength_batch_count_and_two_init_images(host, monkeypatch):
    """Two init images (one pair: p.init shrinks the batch to them), batch count 2, strength 0.5."""
    import json

    calls = Calls(monkeypatch)
    status, body = host.api_img2img({
        "init_images": [encoded(photo(0)), encoded(photo(1))], "prompt": TARGET, "steps": 8, "width": 64, "height": 64,
        "batch_size": 4, "n_iter": 2, "denoising_strength": 0.5, "sampler_name": "Euler",
        "alwayson_scripts": {"MasaCtrl": {"args": masactrl()["MasaCtrl"]}},
    })
    assert status == 200, body
    assert len(calls.trajectories) == 2 and all(rows == {0: 0} for _, rows in calls.trajectories)
    # strength 0.5 of 8 steps samples t_enc + 1 = 5 steps: 5 levels and the clean latent
    assert [tuple(trajectory.latents.shape[:2]) for trajectory, _ in calls.trajectories] == [(6, 1)] * 2
    assert json.loads(body["info"])["all_prompts"][:4] == ["", TARGET, "", TARGET]


def test_with_word_masks_the_masked_source_still_reconstructs(host, monkeypatch):
    calls = Calls(monkeypatch)
    processed = edit(host, steps=6, source_prompt="a photo of a corgi", mask_mode="subject words", mask_words="corgi")
    assert torch.equal(processed.standin_latents[0], calls.init_latent[0])
    assert "MasaCtrl: " not in processed.comments


def test_the_setting_is_in_the_infotext_and_pasted_back(host):
    from lib_masactrl.fields import FIELD_NAMES

    processed = edit(host, steps=4)
    info = processed.infotexts[processed.index_of_first_image]
    assert "MasaCtrl source follows inversion: True" in info and "MasaCtrl inversion reads: current level" in info
    index = FIELD_NAMES.index("follow_inversion")
    assert host.script_values_from_infotext(info, "MasaCtrl")[index] is True
    # an infotext from before the setting existed lacks both keys: pasting it gives the old behaviour
    old = info.replace(", MasaCtrl source follows inversion: True", "").replace(", MasaCtrl inversion reads: current level", "")
    assert host.script_values_from_infotext(old, "MasaCtrl")[index] is False
    from modules import infotext_utils, script_callbacks

    host.set_setting("masactrl_inversion_reads", "next level")
    params = infotext_utils.parse_generation_parameters(old)
    script_callbacks.infotext_pasted_callback(old, params)  # what pasting does (infotext_utils.connect_paste)
    overrides = infotext_utils.get_override_settings(params)
    assert ("MasaCtrl inversion reads", "masactrl_inversion_reads", "current level") in overrides


def test_the_api_takes_it_as_positional_arg_20(host):
    import json

    from lib_masactrl.fields import FIELD_NAMES, FIELDS

    args = [field.default for field in FIELDS]
    assert FIELD_NAMES.index("follow_inversion") == 20  # after the args that existed before it (README)
    args[0], args[20] = True, False
    status, body = host.api_img2img({
        "init_images": [encoded(photo())], "prompt": TARGET, "steps": 4, "width": 64,
        "height": 64, "batch_size": 2, "denoising_strength": 1.0, "sampler_name": "Euler",
        "alwayson_scripts": {"MasaCtrl": {"args": args}},
    })
    assert status == 200, body
    assert all("MasaCtrl source follows inversion: False" in text for text in json.loads(body["info"])["infotexts"])
