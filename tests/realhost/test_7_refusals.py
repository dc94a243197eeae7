"""Every setting MasaCtrl cannot use is refused before an image is made: an HTTP 4xx whose body
names the problem, and the WebUI goes on serving (the serving fixture asks it afterwards)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest

from realhost.webui_api import (
    SOURCE_PROMPT,
    WebUI,
    controlnet_unit,
    encode_png,
    masactrl_args,
    masactrl_keyed,
    masactrl_settings,
    payload,
)

BLANK = encode_png(np.zeros((64, 64, 3), np.uint8))


def pair(**values: Any) -> Dict[str, Any]:
    """A pair's request with these MasaCtrl settings."""
    return payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **values))


def one_source(**values: Any) -> Dict[str, Any]:
    """A source and two targets' request with these MasaCtrl settings."""
    return payload(batch_size=3, masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, layout="one source", **values))


Body = Callable[[], Dict[str, Any]]

# Bodies are built when a test runs: building one imports the field table, and so torch, which
# collecting this file without a WebUI must not pay for.
REFUSALS: Dict[str, Tuple[Body, List[str]]] = {
    "batch size 1": (lambda: payload(batch_size=1, masactrl=masactrl_args()), ["even batch size", "batch size is 1"]),
    "odd batch size": (lambda: payload(batch_size=3, masactrl=masactrl_args()), ["even batch size", "batch size is 3"]),
    "layer range reversed": (lambda: pair(start_layer=8, end_layer=4), ["end layer 4", "start layer 8"]),
    "step range reversed": (lambda: pair(start_step=3, end_step=2), ["end step 2", "start step 3"]),
    "unknown mode": (lambda: pair(mode="sideways"), ["'sideways'", "mutual, union"]),
    "start step not a number": (lambda: pair(start_step="abc"), ["start step", "'abc'"]),
    "unknown key": (lambda: payload(masactrl=[{"enabled": True, "start_stepp": 2}]), ["'start_stepp'"]),
    "target prompt count": (lambda: one_source(target_prompts="a\nb\nc"), ["3 target prompts", "2 targets"]),
    "no subject word": (lambda: pair(mask_mode="subject words"), ["source subject word"]),
    "uploaded masks missing": (lambda: pair(mask_mode="uploaded masks"), ["source mask and a target mask"]),
    "per unit without entries": (lambda: pair(controlnet="per unit"), ["per unit", "no assignment"]),
}


def refused_by_name(webui: WebUI, body: Dict[str, Any], fragments: Sequence[str], mode: str = "txt2img") -> None:
    reply = webui.refusal(body, mode)
    for fragment in ("MasaCtrl", *fragments):
        assert fragment in reply.message, f"{fragment!r} not in {reply.message!r}"


@pytest.mark.parametrize("case", REFUSALS)
def test_a_setting_masactrl_cannot_use_is_refused_by_name(serving: WebUI, case: str) -> None:
    body, fragments = REFUSALS[case]
    refused_by_name(serving, body(), fragments)


def test_the_start_layer_is_checked_against_the_models_own_layers(serving: WebUI, layer_range: str) -> None:
    """SD1.x and SD2.x have 16 layers, so start layer 20 is refused with their range. SDXL has 70,
    every start layer the setting allows: its last one is taken and controls that layer."""
    if not layer_range.endswith("69"):
        refused_by_name(serving, pair(start_layer=20), ["start layer 20", layer_range])
        return
    generation = serving.generate(pair(start_layer=69))
    assert masactrl_settings(generation.infotexts[1])["start_layer"] == "69", generation.infotexts[1]
    assert len(generation.images) == 2


def test_an_inversion_without_a_sigma_schedule_is_refused(serving: WebUI) -> None:
    body = {**pair(), "init_images": [BLANK], "denoising_strength": 1.0, "sampler_name": "DDIM"}
    refused_by_name(serving, body, ["k-diffusion sampler", "DDIM"], mode="img2img")


CONTROLNET_REFUSALS = {
    "per unit list longer than the units": (
        {"controlnet": "per unit", "controlnet_units": "source, target"}, 2, ["2 ControlNet assignments", "1 enabled"]),
    "unknown per unit entry": ({"controlnet": "per unit", "controlnet_units": "sources"}, 2, ["'sources'"]),
    "fewer maps than targets": ({"layout": "one source", "control_maps": [BLANK]}, 3, ["1 control map was given", "2 targets"]),
    "maps for a unit not enabled": (
        {"layout": "one source", "control_maps": [BLANK, BLANK], "control_maps_unit": 2}, 3, ["unit 2", "1 unit is enabled"]),
}


@pytest.mark.parametrize("case", CONTROLNET_REFUSALS)
def test_a_controlnet_setting_that_does_not_fit_the_units_is_refused(serving: WebUI, controlnet_model: str,
                                                                     no_preprocessor: str, case: str) -> None:
    values, batch_size, fragments = CONTROLNET_REFUSALS[case]
    body = payload(batch_size=batch_size, masactrl=masactrl_keyed(source_prompt=SOURCE_PROMPT, **values),
                   controlnet=[controlnet_unit(controlnet_model, BLANK, module=no_preprocessor)])
    refused_by_name(serving, body, fragments)


def test_a_server_path_is_refused_from_the_api(serving: WebUI, controlnet_model: str) -> None:
    """An API client must not learn what the WebUI's machine holds: a folder that exists and one
    that does not get the same refusal."""
    replies = [serving.refusal(one_source(control_maps_folder=folder)) for folder in ("/", "/no/such/masactrl/folder")]
    assert replies[0].message == replies[1].message.replace("/no/such/masactrl/folder", "/"), [r.message for r in replies]
