"""The real-host tier: end-to-end scenarios against a running WebUI, through its HTTP API.

Without ``MASACTRL_WEBUI_URL`` every test here is skipped with one reason, raised from this file
so that pytest's summary folds it into a single line and ``pytest tests/realhost`` still exits 0
(a directory that collects nothing would exit 5). Nothing is imported that needs a WebUI, so the
normal suite collects this directory in a moment.

Generations several scenarios compare against are made once per session (a 64x64 generation takes
15-250 s on two shared CPU cores), and the plain run that opens the session is repeated by the
last test to show that no patch outlived the MasaCtrl scenarios.
"""

from __future__ import annotations

from typing import Iterator, List

import pytest

from realhost.webui_api import (
    CONTROLLED,
    LAST,
    SEQUENCE_LINES,
    SKIP_REASON,
    SOURCE_PROMPT,
    TARGET_PROMPT,
    Generation,
    WebUI,
    is_forge,
    is_sdxl,
    masactrl_args,
    payload,
    plain_sources_payload,
    request_timeout,
    webui_url,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{LAST}: run after every other real-host scenario")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip before any fixture reaches for the WebUI."""
    if webui_url() is None:
        pytest.skip(SKIP_REASON)


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Put the "no patch left" check last, whichever files were selected and in which order."""
    items.sort(key=lambda item: item.get_closest_marker(LAST) is not None)


@pytest.fixture(scope="session")
def webui() -> WebUI:
    """The WebUI under test; fails every test at once with the address when it does not answer."""
    url = webui_url()
    assert url is not None
    client = WebUI(url, request_timeout())
    try:
        reply = client.get("/sdapi/v1/sd-models")
    except OSError as error:
        pytest.fail(f"no WebUI answers at {url} ({error}); start one or unset MASACTRL_WEBUI_URL")
    assert reply.status == 200, f"{url} is not a WebUI with --api: GET /sdapi/v1/sd-models answered {reply.status}"
    return client


@pytest.fixture(scope="session", autouse=True)
def plain_before(webui: WebUI) -> Generation:
    """The plain run that opens the session, before any MasaCtrl scenario: the reference for the
    sources and, repeated at the end, for "no patch left"."""
    return webui.generate(plain_sources_payload())


@pytest.fixture(scope="session")
def forge(plain_before: Generation) -> bool:
    """Whether the WebUI under test is WebUI Forge (its version string starts with "f")."""
    return is_forge(plain_before)


@pytest.fixture(scope="session")
def layer_range(plain_before: Generation) -> str:
    """How messages name the loaded model's transformer layers: SD1.x and SD2.x have 16, SDXL 70."""
    return "layers 0-69" if is_sdxl(plain_before) else "layers 0-15"


@pytest.fixture(scope="session")
def plain_targets(webui: WebUI) -> Generation:
    """The targets' plain counterparts: the main prompt on the same seeds, same batch shape."""
    return webui.generate(payload(TARGET_PROMPT))


@pytest.fixture(scope="session")
def mutual_pairs(webui: WebUI) -> Generation:
    """One pair in the paper's mode, controlled from the first step and layer on."""
    return webui.generate(payload(masactrl=masactrl_args(source_prompt=SOURCE_PROMPT, **CONTROLLED)))


@pytest.fixture(scope="session")
def sequence(webui: WebUI) -> Generation:
    """One source and two targets with a prompt each, and their GIF."""
    args = masactrl_args(source_prompt=SOURCE_PROMPT, layout="one source", target_prompts="\n".join(SEQUENCE_LINES),
                         animation="gif", **CONTROLLED)
    return webui.generate(payload(batch_size=3, masactrl=args))


@pytest.fixture(scope="session")
def controlnet_model(webui: WebUI, plain_before: Generation) -> str:
    """The canny ControlNet model the lab installs for the loaded checkpoint's family (any canny
    model will do; an SD1.x one fails on SDXL)."""
    reply = webui.get("/controlnet/model_list")
    if reply.status == 404:
        pytest.skip("the ControlNet extension is not installed in this WebUI")
    assert reply.status == 200, f"/controlnet/model_list answered {reply.status}: {reply.message}"
    sdxl = is_sdxl(plain_before)
    models = [name for name in reply.body.get("model_list", [])
              if "canny" in name.lower() and ("xl" in name.lower()) == sdxl]
    if not models:
        pytest.skip(f"no canny ControlNet model for {'SDXL' if sdxl else 'SD1.x'} is installed "
                    "(see /work/shared/lab/build.sh)")
    return models[0]


@pytest.fixture(scope="session")
def refiner(webui: WebUI, plain_before: Generation) -> str:
    """Another checkpoint of the loaded one's family (SDXL or not, told by name), for the refiner."""
    loaded = str(plain_before.info.get("sd_model_name", ""))
    reply = webui.get("/sdapi/v1/sd-models")
    assert reply.status == 200, f"/sdapi/v1/sd-models answered {reply.status}: {reply.message}"
    sdxl = is_sdxl(plain_before)
    others = [model["model_name"] for model in reply.body
              if model["model_name"] != loaded and ("xl" in model["model_name"].lower()) == sdxl]
    if not others:
        pytest.skip(f"no second checkpoint of {loaded}'s family to refine with")
    return others[0]


@pytest.fixture(scope="session")
def no_preprocessor(forge: bool) -> str:
    """The ControlNet preprocessor that passes a map through: "none" in the ControlNet extension,
    "None" in Forge's built-in ControlNet (which fails on "none")."""
    return "None" if forge else "none"


@pytest.fixture
def serving(webui: WebUI) -> Iterator[WebUI]:
    """The client, and afterwards the check that the WebUI still answers."""
    yield webui
    assert webui.serves(), "the WebUI stopped answering after the request"
