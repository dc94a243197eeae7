"""The X/Y/Z plot with a [MasaCtrl] axis: every cell runs with its own value, shows its batch side
by side (through the API too), and its infotext tells that cell's settings.

The axis sweeps the mode from union back to mutual, mutual being the default, which the infotext
leaves out: a cell must not keep the value an earlier cell wrote (issue 17)."""

from __future__ import annotations

from typing import Any, List, Sequence

import pytest

from realhost.webui_api import (
    CONTROLLED,
    SIZE,
    SOURCE_PROMPT,
    Generation,
    WebUI,
    assert_close,
    assert_different,
    masactrl_args,
    masactrl_settings,
    payload,
    pixels,
)

MODES = ("union", "mutual")
PLOT = "x/y/z plot"


def axis_index(webui: WebUI, label: str) -> int:
    """The X type is sent as its index in the plot's axis list, which /sdapi/v1/script-info lists
    in order as the choices of the plot's first argument."""
    scripts = webui.get("/sdapi/v1/script-info").body
    plot = next(script for script in scripts if script["name"] == PLOT and not script["is_img2img"])
    choices = plot["args"][0]["choices"]
    assert label in choices, f"the plot has no axis {label!r}"
    return choices.index(label)


def plot_args(x_type: int, values: Sequence[str]) -> List[Any]:
    """The plot's positional args: an X axis only, sub-images included so that the API returns the
    cells after the grid. The values go in as text and as the dropdown's list: an axis with
    choices (the mode) reads the list, the others the text."""
    nothing = [0, "", []]
    return [x_type, ",".join(values), list(values), *nothing, *nothing, True, True, False, False, False, False, False, 0,
            False]


@pytest.fixture(scope="module")
def plot(webui: WebUI) -> Generation:
    axis = axis_index(webui, "[MasaCtrl] Mode")
    return webui.generate(payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED),
                                  script_name=PLOT, script_args=plot_args(axis, MODES)))


def halves(generation: Generation, cell: int) -> List[Any]:
    """A cell's picture split into its source and its target."""
    picture = pixels(generation.images[1 + cell])
    assert picture.shape[:2] == (SIZE, 2 * SIZE), "a cell shows its pair side by side"
    return [picture[:, :SIZE], picture[:, SIZE:]]


def test_every_cell_shows_its_pair_and_only_the_target_changes(plot: Generation, plain_before: Generation) -> None:
    assert len(plot.images) == 1 + len(MODES), "the grid, then one picture per cell"
    cells = [halves(plot, cell) for cell in range(len(MODES))]
    for cell, (source, _) in enumerate(cells):
        assert_close(source, plain_before.rgb(0), f"source of cell {cell + 1} vs the plain run")
    assert_different(cells[0][1], cells[1][1], "the union cell's target vs the mutual cell's")


def test_the_first_cell_states_its_mode(plot: Generation) -> None:
    assert masactrl_settings(plot.infotexts[1])["mode"] == MODES[0]


def test_every_cell_states_its_own_mode(plot: Generation) -> None:
    assert [masactrl_settings(text)["mode"] for text in plot.infotexts[1:3]] == list(MODES)


def test_a_value_masactrl_refuses_is_a_refusal(serving: WebUI, layer_range: str) -> None:
    axis = axis_index(serving, "[MasaCtrl] Start layer")
    reply = serving.call("POST", "/sdapi/v1/txt2img", payload(
        masactrl=masactrl_args(source_prompt=SOURCE_PROMPT), script_name=PLOT, script_args=plot_args(axis, ["99"])))
    assert 400 <= reply.status < 500, f"answered {reply.status}"
    assert "start layer 99" in reply.message, reply.message
    assert layer_range in reply.message, "the loaded model's own range: " + reply.message
