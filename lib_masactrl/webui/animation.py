"""A one-source sequence's targets, in order, as one animated WebP or GIF: added to the result and
saved beside the images.

The WebUI's gallery and its image saving know still images only, so the file is written here.
The result's ``images`` get, for the UI, the file's path (the gallery shows files as they are, so
it plays), and, for the API, the file as a base64 string, which the API's
``encode_pil_to_base64`` passes through unchanged (modules/api/api.py): the response's last image
is the animation.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
from typing import Any, List

from PIL import Image

from modules import images

from ..fields import Animation

NAME = "masactrl-animation"


def encode(frames: List[Image.Image], kind: Animation, fps: int) -> bytes:
    """The frames as an endlessly looping animation; WebP lossless, so every frame keeps its pixels."""
    buffer = io.BytesIO()
    options = {"save_all": True, "append_images": frames[1:], "duration": round(1000 / fps), "loop": 0}
    if kind is Animation.WEBP:
        frames[0].save(buffer, format="WEBP", lossless=True, **options)
    else:
        frames[0].save(buffer, format="GIF", **options)
    return buffer.getvalue()


def _path(p: Any, kind: Animation, saved: bool) -> str:
    """Beside the samples when they are saved (numbered as the WebUI numbers them), else a
    temporary file that only the gallery shows."""
    extension = kind.value
    if saved:
        folder = p.outpath_samples
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{images.get_next_sequence_number(folder, ''):05}-{p.all_seeds[0]}-{NAME}.{extension}")
    handle, path = tempfile.mkstemp(prefix=f"{NAME}-", suffix=f".{extension}")
    os.close(handle)
    return path


def add(p: Any, processed: Any, frames: List[Image.Image], kind: Animation, fps: int, info: str) -> None:
    """Append the animation of ``frames`` to the result, with ``info`` as its infotext, and write
    it where it is saved or shown."""
    data = encode(frames, kind, fps)
    api, saved = getattr(p, "is_api", False), p.save_samples()
    if saved or not api:
        path = _path(p, kind, saved)
        with open(path, "wb") as file:
            file.write(data)
    processed.images.append(base64.b64encode(data).decode() if api else path)
    processed.infotexts.append(info)
