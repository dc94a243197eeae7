"""After every MasaCtrl scenario, refusals included, the WebUI makes the plain run of the
session's start again, pixel for pixel: nothing MasaCtrl (or ControlNet through it) patched
outlived its generation."""

from __future__ import annotations

import numpy as np
import pytest

from realhost.webui_api import Generation, WebUI, plain_sources_payload


@pytest.mark.realhost_last
def test_a_plain_run_is_unchanged_by_everything_before(webui: WebUI, plain_before: Generation) -> None:
    """Same request, same shape, same machine: bit equality is the right test here."""
    after = webui.generate(plain_sources_payload())
    assert len(after.images) == len(plain_before.images)
    for number, (before, now) in enumerate(zip(plain_before.images, after.images), 1):
        assert np.array_equal(np.asarray(before), np.asarray(now)), f"plain image {number} changed"
    assert after.infotexts == plain_before.infotexts
