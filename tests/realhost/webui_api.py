"""What every real-host scenario shares: the address of the WebUI under test, an HTTP client with
timeouts, payloads built from MasaCtrl's field names, images decoded for comparison and infotexts
read back.

Only the standard library, numpy, Pillow and pytest at import: the tier talks to the WebUI over HTTP, as an
API user does, and must not depend on a package the test environment only happens to carry. The
field table (``lib_masactrl.fields``, which imports torch) is imported where a payload is built,
so that skipping the tier without a WebUI stays quick.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
from PIL import Image

URL_VARIABLE = "MASACTRL_WEBUI_URL"
TIMEOUT_VARIABLE = "MASACTRL_WEBUI_TIMEOUT"
LAST = "realhost_last"
"""Marker of the tests that must run after every other real-host scenario of the session."""
SKIP_REASON = (
    f"{URL_VARIABLE} is not set: the real-host tier needs a running WebUI with this extension "
    f"(README.md, Developers; docs/development.md, 'Real-host tests')"
)

SIZE = 64
STEPS = 4
SEED = 1234
SOURCE_PROMPT = "a photo of a corgi sitting on the beach"
TARGET_PROMPT = "a photo of a corgi running on the beach"
SEQUENCE_LINES = (TARGET_PROMPT, "a photo of a corgi jumping on the beach")

# Control from the first step and layer on: with the defaults (step 4 of the paper's 50, layer 10
# of 16) a 4-step 64x64 generation would be uncontrolled, and from layer 4 on, where a 64x64 image
# has at most 4x4 tokens, control changes a target by only ~1.5 levels on average.
CONTROLLED = {"start_step": 0, "start_layer": 0}

# The lab's random text encoder ends in a layer norm at its initial weights (scale 1, shift 0), so
# every token's embedding has mean 0 and so has the empty prompt's whole embedding. The WebUI's
# default emphasis mode ("Original") rescales an embedding by its mean before over its mean after
# weighting: 0/0 makes the empty negative prompt's conditioning NaN, and every generation fails
# with NansException. "No norm" weights without that rescaling (identical for prompts without
# emphasis); override_settings hold for the one request.
HOST_SETTINGS = {"emphasis": "No norm"}

# Pixel tolerances on 0-255 images. Calls of one shape agree bit for bit on the lab's CPU, and of
# different shapes to rounding (well under a tenth of a level on average); what the scenarios
# look for changes an image by a level or more on average: control ~12, word masks against mutual
# mode ~1, ControlNet ~5.
SAME_MAX = 4
SAME_MEAN = 0.1
DIFFERENT_MEAN = 0.5


def is_forge(generation: "Generation") -> bool:
    """Whether ``generation`` was made by WebUI Forge, whose version strings start with "f"."""
    return str(generation.info.get("version", "")).startswith("f")


def is_sdxl(generation: "Generation") -> bool:
    """Whether ``generation``'s checkpoint is an SDXL one, told by its name as the labs name them
    (``random-sdxl-...``): the API does not say a checkpoint's family."""
    return "xl" in str(generation.info.get("sd_model_name", "")).lower()


def webui_url() -> str | None:
    """The WebUI to test, from the environment; ``None`` skips the tier."""
    url = os.environ.get(URL_VARIABLE, "").strip()
    return url.rstrip("/") or None


def request_timeout() -> float:
    """Seconds one request may take: a 64x64 generation takes 15-250 s on two shared CPU cores."""
    return float(os.environ.get(TIMEOUT_VARIABLE, "900"))


# --- payloads --------------------------------------------------------------------------------


def _checked(values: Mapping[str, Any]) -> Dict[str, Any]:
    """``values`` with MasaCtrl enabled, refused here when a name is not a field (a typo would
    otherwise test the default)."""
    from lib_masactrl.fields import FIELD_NAMES

    unknown = set(values) - set(FIELD_NAMES)
    if unknown:
        raise TypeError(f"not MasaCtrl fields: {sorted(unknown)}")
    return {"enabled": True, **values}


def masactrl_args(**values: Any) -> List[Any]:
    """MasaCtrl's positional API args (README, API), enabled, every field not named at its
    default: the order comes from the field table, as the WebUI's accordion builds it."""
    from lib_masactrl.fields import FIELDS

    chosen = _checked(values)
    return [chosen.get(item.name, item.default) for item in FIELDS]


def masactrl_keyed(**values: Any) -> List[Dict[str, Any]]:
    """The same settings in the API's other form: one object keyed by field name."""
    return [_checked(values)]


def payload(
    prompt: str = TARGET_PROMPT,
    *,
    batch_size: int = 2,
    masactrl: Sequence[Any] | None = None,
    controlnet: Sequence[Mapping[str, Any]] | None = None,
    **extra: Any,
) -> Dict[str, Any]:
    """A small generation request: 64x64, 4 Euler steps, a fixed seed. ``masactrl`` is the
    script's args (see :func:`masactrl_args`); ``controlnet`` the ControlNet units."""
    body: Dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": "",
        "width": SIZE,
        "height": SIZE,
        "steps": STEPS,
        "sampler_name": "Euler",
        "scheduler": "Automatic",
        "cfg_scale": 5,
        "seed": SEED,
        "batch_size": batch_size,
        "n_iter": 1,
        "override_settings": dict(HOST_SETTINGS),
    }
    scripts: Dict[str, Any] = {}
    if masactrl is not None:
        scripts["MasaCtrl"] = {"args": list(masactrl)}
    if controlnet is not None:
        scripts["ControlNet"] = {"args": [dict(unit) for unit in controlnet]}
    if scripts:
        body["alwayson_scripts"] = scripts
    body.update(extra)
    return body


def plain_sources_payload() -> Dict[str, Any]:
    """A plain batch shaped as MasaCtrl's pairs: the sources' prompt and seed in its first image.
    The session's first and last generation."""
    return payload(SOURCE_PROMPT)


def controlnet_unit(model: str, image: str, **values: Any) -> Dict[str, Any]:
    """An enabled ControlNet unit given an already preprocessed map (no preprocessor)."""
    return {"enabled": True, "module": "none", "model": model, "image": image, "weight": 1.0,
            "resize_mode": "Just Resize", "processor_res": SIZE, "pixel_perfect": False, **values}


# --- images ----------------------------------------------------------------------------------


def decode(data: str) -> Image.Image:
    """A base64 image from a response (PNG, or a WebP/GIF animation)."""
    if data.startswith("data:"):
        data = data.split(",", 1)[1]
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def pixels(image: Image.Image) -> np.ndarray:
    """RGB pixels as signed integers, so that differences do not wrap around."""
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def encode_png(array: np.ndarray) -> str:
    """A uint8 RGB array as the base64 PNG the API takes."""
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference, in 0-255 levels."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).mean())


def assert_close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Equal within the rounding of differently ordered float arithmetic, not bit for bit."""
    assert a.shape == b.shape, f"{what}: shapes {a.shape} and {b.shape}"
    difference = np.abs(a - b)
    assert difference.max() <= SAME_MAX and difference.mean() <= SAME_MEAN, (
        f"{what}: differ by up to {difference.max()} levels, {difference.mean():.3f} on average")


def assert_different(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Changed well beyond rounding: control (or ControlNet) acted on the image."""
    difference = mean_difference(a, b)
    assert difference >= DIFFERENT_MEAN, f"{what}: only {difference:.3f} levels apart on average"


def frame_count(image: Image.Image) -> int:
    """Frames of an animation; 1 for a still image, which has no frame count."""
    return int(getattr(image, "n_frames", 1))


# --- infotext --------------------------------------------------------------------------------

_ENTRY = re.compile(r'\s*([^:,]+):\s*("(?:\\.|[^"\\])*"|[^,]*)\s*(?:,|$)')


def infotext_values(infotext: str) -> Dict[str, str]:
    """The ``key: value`` entries of an infotext's last line, quoted values unquoted."""
    values: Dict[str, str] = {}
    for key, value in _ENTRY.findall(infotext.strip().splitlines()[-1]):
        if value.startswith('"'):
            value = json.loads(value)
        values[key.strip()] = value.strip()
    return values


def infotext_prompt(infotext: str) -> str:
    """The prompt an infotext starts with: the lines before its negative prompt and settings."""
    lines = infotext.strip().split("\n")[:-1]
    negative = next((i for i, line in enumerate(lines) if line.startswith("Negative prompt:")), len(lines))
    return "\n".join(lines[:negative]).strip()


def masactrl_settings(infotext: str) -> Dict[str, str]:
    """MasaCtrl's settings as pasting this infotext restores them, by field name: the recorded
    ones, and the default of every one the infotext leaves out (it omits settings at their
    defaults)."""
    from lib_masactrl.fields import FIELDS

    recorded = infotext_values(infotext)
    return {item.name: recorded.get(item.infotext, str(item.default)) for item in FIELDS if item.infotext}


# --- the client ------------------------------------------------------------------------------


@dataclass
class Reply:
    """An HTTP answer: status and the decoded JSON body (or the text, when it is not JSON)."""

    status: int
    body: Any

    @property
    def message(self) -> str:
        """What a refusal says: the API's ``detail`` (or the whole body)."""
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("errors") or self.body)
        return str(self.body)


@dataclass
class Generation:
    """A successful generation: every returned image decoded, and the ``info`` infotexts."""

    images: List[Image.Image]
    info: Dict[str, Any]
    infotexts: List[str] = field(default_factory=list)

    def rgb(self, index: int) -> np.ndarray:
        return pixels(self.images[index])


class WebUI:
    """A client of one running WebUI's HTTP API."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return Reply(status, json.loads(raw))
        except ValueError:
            return Reply(status, raw.decode(errors="replace"))

    def get(self, path: str) -> Reply:
        return self.call("GET", path)

    def generate(self, body: Mapping[str, Any], mode: str = "txt2img") -> Generation:
        """Generate, requiring success; a failure's message is the assertion's."""
        reply = self.call("POST", f"/sdapi/v1/{mode}", body)
        assert reply.status == 200, f"{mode} answered {reply.status}: {reply.message}"
        info = json.loads(reply.body["info"])
        return Generation([decode(image) for image in reply.body["images"]], info, list(info.get("infotexts", [])))

    def refusal(self, body: Mapping[str, Any], mode: str = "txt2img") -> Reply:
        """Generate, requiring a refusal: a 4xx with a message."""
        reply = self.call("POST", f"/sdapi/v1/{mode}", body)
        assert 400 <= reply.status < 500, f"{mode} answered {reply.status}, not a refusal: {str(reply.body)[:300]}"
        return reply

    def serves(self) -> bool:
        """Whether the WebUI still answers its API (a quick call that generates nothing)."""
        reply = self.get("/sdapi/v1/progress?skip_current_image=true")
        return reply.status == 200 and isinstance(reply.body, dict) and "state" in reply.body
