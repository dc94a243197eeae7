"""WebUI Forge only: img2img from the init image as it is (no inversion) works. Every other scenario
of the tier runs in Forge as in the AUTOMATIC1111 WebUI; this file is skipped there."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np
import pytest

from realhost.webui_api import (
    CONTROLLED,
    SOURCE_PROMPT,
    WebUI,
    encode_png,
    masactrl_args,
    masactrl_settings,
    payload,
)

BLANK = encode_png(np.zeros((64, 64, 3), np.uint8))


@pytest.fixture(autouse=True)
def forge_only(forge: bool) -> None:
    if not forge:
        pytest.skip("checks WebUI Forge; this WebUI is not Forge")


def img2img(**values: Any) -> Dict[str, Any]:
    return payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED, **values),
                   init_images=[BLANK], denoising_strength=0.75)


def test_img2img_without_inversion_edits_from_the_init_image(webui: WebUI) -> None:
    made = webui.generate(img2img(invert=False), mode="img2img")
    assert len(made.images) == 2
    assert masactrl_settings(made.infotexts[1])["invert"] in ("False", "false")
