"""WebUI Forge only: what MasaCtrl does not do in Forge yet is refused with a message that says so
and names the feature, never made as plain images; img2img from the init image as it is (no
inversion) works. Skipped against the AUTOMATIC1111 WebUI, where the other files cover all of it."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

from realhost.webui_api import (
    CONTROLLED,
    FORGE_NOT_YET,
    SOURCE_PROMPT,
    WebUI,
    controlnet_unit,
    encode_png,
    masactrl_args,
    masactrl_settings,
    payload,
)

BLANK = encode_png(np.zeros((64, 64, 3), np.uint8))


@pytest.fixture(autouse=True)
def forge_only(forge: bool) -> None:
    if not forge:
        pytest.skip("checks WebUI Forge's refusals; this WebUI is not Forge")


def img2img(**values: Any) -> Dict[str, Any]:
    return payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED, **values),
                   init_images=[BLANK], denoising_strength=0.75)


CONTROLNET_CASES: Dict[str, tuple] = {
    "control maps": ({"layout": "one source", "control_maps": [BLANK, BLANK]}, 3, ["control maps"]),
}


@pytest.mark.parametrize("case", CONTROLNET_CASES)
def test_controlnet_features_forge_lacks_are_refused(serving: WebUI, controlnet_model: str, no_preprocessor: str,
                                                     case: str) -> None:
    values, batch_size, fragments = CONTROLNET_CASES[case]
    body = payload(batch_size=batch_size, masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **values),
                   controlnet=[controlnet_unit(controlnet_model, BLANK, module=no_preprocessor)])
    reply = serving.refusal(body)
    assert reply.status == 422 and reply.message.startswith(FORGE_NOT_YET), reply.message
    missing: List[str] = [fragment for fragment in fragments if fragment not in reply.message]
    assert not missing, reply.message


def test_img2img_without_inversion_edits_from_the_init_image(webui: WebUI) -> None:
    made = webui.generate(img2img(invert=False), mode="img2img")
    assert len(made.images) == 2
    assert masactrl_settings(made.infotexts[1])["invert"] in ("False", "false")
