"""A one-source sequence's targets, in order, as one animation among the result's images.

The animation is a PIL image like every other entry of ``processed.images`` (its first frame),
so other extensions' ``postprocess`` and the WebUI's gallery, saving and API handle it as an image,
and it keeps its frames: saving it in any format writes them all (an animated WebP or GIF, or an
animated PNG where the WebUI encodes a PNG: the gallery's cache and the API's base64). It is saved
through the WebUI's own ``images.save_image`` when the samples are saved, so the filename pattern,
the date folder, the numbering and the ``on_image_saved`` callbacks apply to it as to any image.
"""

from __future__ import annotations

from typing import Any, List

from PIL import Image

from modules import images

from ..fields import Animation

SUFFIX = "-masactrl-animation"
INFOTEXT_KEY = "MasaCtrl animation"


class AnimatedImage(Image.Image):
    """The first frame, which also holds every frame and writes them all whenever it is saved."""

    frames: List[Image.Image]
    duration: int
    """Milliseconds per frame."""

    def save(self, fp: Any, format: str | None = None, **params: Any) -> None:  # noqa: A002 (PIL's name)
        if len(self.frames) > 1:
            params.update(save_all=True, append_images=self.frames[1:], duration=self.duration, loop=0)
        if str(format or "").upper() == "WEBP" or str(getattr(fp, "name", fp)).lower().endswith(".webp"):
            params["lossless"] = True  # every frame keeps its pixels
        self.frames[0].save(fp, format, **params)


def animated(frames: List[Image.Image], fps: int) -> AnimatedImage:
    """``frames`` as one image that saves as an endlessly looping animation at ``fps``."""
    first = frames[0].convert("RGB")
    first.__class__ = AnimatedImage
    first.frames = [frame.convert("RGB") for frame in frames]
    first.duration = round(1000 / fps)
    return first


def add(p: Any, processed: Any, frames: List[Image.Image], kind: Animation, fps: int, info: str) -> None:
    """Append the animation of ``frames`` to the result with ``info`` (a target's infotext) marked as
    the animation's, and save it beside the images when they are saved."""
    animation = animated(frames, fps)
    info = f"{info}, {INFOTEXT_KEY}: \"{len(frames)} targets at {fps} fps\""
    animation.info["parameters"] = info
    processed.images.append(animation)
    processed.infotexts.append(info)
    if p.save_samples():
        images.save_image(animation, p.outpath_samples, "", p.all_seeds[0], p.all_prompts[0], kind.value, info=info, p=p,
                          suffix=SUFFIX)
