"""javascript/masactrl.js, run with Node.js against a fake page (tests/js/run_masactrl_js.js): the
tooltips it attaches on both tabs, and the layer sliders' refresh buttons it clicks when the
loaded checkpoint changes."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def page():
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    result = subprocess.run(
        [node, str(ROOT / "tests" / "js" / "run_masactrl_js.js"), str(ROOT / "javascript" / "masactrl.js")],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout)


def test_every_control_gets_its_tooltip_on_both_tabs(page):
    from lib_masactrl.fields import FIELDS

    for tab in ("txt2img", "img2img"):
        for field in FIELDS:
            assert page["titles"][f"script_{tab}_masactrl_{field.name}"].endswith(".")
    source = "script_{}_masactrl_source_prompt"
    assert "Empty: the main prompt" in page["titles"][source.format("txt2img")]
    assert "With it off: empty means the main prompt" in page["titles"][source.format("img2img")]


def test_the_layer_sliders_are_refreshed_when_the_checkpoint_changes(page):
    refresh = ["script_txt2img_masactrl_refresh_layers", "script_img2img_masactrl_refresh_layers"]
    assert page["steps"] == [refresh, [], refresh]


def test_the_texts_follow_the_layout_and_leave_other_titles_alone(page):
    enabled, source = "script_{}_masactrl_enabled", "script_{}_masactrl_source_prompt"
    assert "the first half are sources" in page["titles"][enabled.format("txt2img")]
    one = page["oneSource"]
    assert "image 1 is the source" in one[enabled.format("txt2img")]
    assert "image 1 of every batch" in one[source.format("txt2img")]
    assert "first half" not in one[enabled.format("img2img")]
    assert "With it off: empty means the main prompt" in one[source.format("img2img")]  # img2img's own meaning
    assert page["pairsAgain"][enabled.format("txt2img")] == page["titles"][enabled.format("txt2img")]
    assert one["script_txt2img_masactrl_mode"] == "a title of another extension"
