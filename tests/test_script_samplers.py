"""Every sampler the WebUI v1.10.1 lists (modules/sd_samplers.py, ``all_samplers``), run for real in
the stand-in host: control starts and ends at the steps set, whatever the sampler's number of model
calls per step, and img2img editing says when a sampler's own noise makes the reconstruction drift."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

TARGET = "a photo of a corgi running on the beach"
K_DIFFUSION = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler",
    "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
]
TIMESTEPS = ["DDIM", "DDIM CFG++", "PLMS", "UniPC"]
ALL = [*K_DIFFUSION, *TIMESTEPS, "LCM"]
# Samplers that do not evaluate the model once per step at the schedule's levels (plus a second
# evaluation on the way to the next level): their calls are placed by noise level alone.
OWN_LEVELS = {"DPM fast", "DPM adaptive", "Restart", "PLMS", "UniPC"}
START, END = 2, 4


def masactrl(**values):
    from lib_masactrl.fields import FIELDS

    changed = {"enabled": True, "source_prompt": "a photo of a corgi sitting", "start_layer": 0, **values}
    return {"MasaCtrl": [changed.get(field.name, field.default) for field in FIELDS]}


def test_the_list_is_the_webuis(host):
    from modules import sd_samplers

    assert [sampler.name for sampler in sd_samplers.all_samplers] == ALL


class CallLog:
    """Per denoiser call, after MasaCtrl's own callback: the noise level, how many steps the
    sampler had reported through its progress callback, and whether MasaCtrl controls the call."""

    def __init__(self, monkeypatch):
        from modules import script_callbacks, sd_samplers_common

        self.calls = []
        self.reported = 0
        self.levels = None
        original = sd_samplers_common.Sampler.callback_state

        def callback_state(sampler, d):
            self.reported += 1
            return original(sampler, d)

        monkeypatch.setattr(sd_samplers_common.Sampler, "callback_state", callback_state)
        script_callbacks.on_cfg_denoiser(self.record, name="test_call_log")

    def record(self, params):
        from lib_masactrl.webui import generation

        session = generation.session_of(params.denoiser.p)
        self.levels = session.steps.levels
        controller = session.attachment.controller
        self.calls.append((float(params.sigma.max()), self.reported, controller.step_is_controlled))


@pytest.mark.parametrize("sampler, steps", [(name, 6) for name in ALL] + [("Restart", 20)])
def test_control_starts_and_ends_at_the_steps_set(host, monkeypatch, sampler, steps):
    log = CallLog(monkeypatch)
    processed = host.txt2img(TARGET, steps=steps, width=64, height=64, batch_size=2, seed=3, sampler_name=sampler,
                             script_args=masactrl(start_step=START, end_step=END))
    assert "MasaCtrl: " not in processed.comments
    assert len(log.levels) == steps
    controlled = [call[2] for call in log.calls]
    if sampler in OWN_LEVELS:
        # by noise level: below the level of the step before the start, down to the end step's
        top, bottom = log.levels[START - 1], log.levels[END - 1]
        expected = [bottom * (1 - 1e-5) <= level < top * (1 - 1e-5) for level, _, _ in log.calls]
    else:
        # exactly the calls made while the sampler's progress shows steps START..END-1
        expected = [START <= reported < END for _, reported, _ in log.calls]
    assert controlled == expected
    assert any(controlled) and not all(controlled)
    assert not any(controlled[-1:]), "the calls after the end step run without control"


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(np.kron(rng.uniform(40, 215, size=(4, 4, 3)), np.ones((16, 16, 1))).astype(np.uint8))


NOISY = {"DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "DPM2 a",
         "DPM fast", "DPM adaptive", "LCM", ("Restart", 20)}


@pytest.mark.parametrize("sampler, steps", [(name, 4) for name in [*K_DIFFUSION, "LCM"]] + [("Restart", 20)])
def test_editing_says_when_the_samplers_own_noise_makes_the_reconstruction_drift(host, photo, sampler, steps):
    processed = host.img2img(photo, TARGET, steps=steps, sampler_name=sampler, denoising_strength=1.0, batch_size=2,
                             seed=5, script_args=masactrl(start_step=1))
    note = f"the {sampler} sampler added fresh noise while it sampled"
    noted = f"MasaCtrl: {note}" in processed.comments
    assert noted == (sampler in NOISY or (sampler, steps) in NOISY)
    from modules.infotext_utils import parse_generation_parameters

    notes = parse_generation_parameters(processed.infotexts[processed.index_of_first_image]).get("MasaCtrl notes", "")
    assert noted == (note in notes)


@pytest.mark.parametrize(
    "sampler, setting, noisy", [("Euler a", ("eta_ancestral", 0.0), False), ("Euler", ("s_churn", 0.5), True)]
)
def test_the_noise_settings_decide_not_the_samplers_name(host, photo, sampler, setting, noisy):
    host.set_setting(*setting)
    processed = host.img2img(photo, TARGET, steps=4, sampler_name=sampler, denoising_strength=1.0, batch_size=2,
                             seed=5, script_args=masactrl(start_step=1))
    assert ("added fresh noise" in processed.comments) == noisy


@pytest.mark.parametrize("sampler", TIMESTEPS)
def test_timestep_samplers_cannot_invert_and_say_so(host, sd15, photo, sampler):
    from engine_helpers import module_state

    before = module_state(sd15)
    from refusals import ui_refusal

    message = ui_refusal(host.img2img(photo, TARGET, steps=4, sampler_name=sampler, denoising_strength=1.0, batch_size=2,
                                      seed=5, script_args=masactrl()))
    assert f"inverting the init image needs a k-diffusion sampler such as Euler, not {sampler}" in message
    assert module_state(sd15) == before
