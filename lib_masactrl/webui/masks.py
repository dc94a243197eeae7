"""Masks for mask-guided control from the WebUI: subject words found in each image's prompt with
the loaded model's own tokenizer, or mask images from the UI or the API; and their previews."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from modules import images, prompt_parser, shared

from ..masks import MaskGuide, mask_guide
from ..session import GenerationSession
from ..settings import SettingsError
from . import model, options

# Word masks are made at latent/4 and the latent is the image/8.
PREVIEW_SCALE = 4 * 8


def guide_for(p: Any, session: GenerationSession, pass_steps: int) -> MaskGuide | None:
    """The batch's masks for a pass of ``pass_steps`` steps. Prompt editing (``[a:b:0.5]``) is read
    at the start step."""
    args = session.args
    source_mask, target_mask = (mask_array(mask) for mask in args.user_masks)
    user_masks = {}
    if source_mask is not None:
        for image, source in enumerate(session.pairing.reads_from):
            user_masks[image] = source_mask if source is None else target_mask
    hires = getattr(p, "is_hr_pass", False)
    prompts = p.hr_prompts if hires else p.prompts
    indexes, flat, _ = prompt_parser.get_multicond_prompt_list(prompts)
    start = session.start_step_for(pass_steps)
    steps = (p.hr_second_pass_steps or p.steps) if hires else p.steps
    subprompts = [[_prompt_at_step(flat[index], start, steps) for index, _ in image] for image in indexes]
    encoder = model.text_encoder()
    return mask_guide(
        session.settings, session.pairing.reads_from, subprompts,
        (lambda text: [chunk.tokens for chunk in encoder.tokenize_line(text)[0]]) if encoder else None,
        (lambda text: list(encoder.tokenize([text])[0])) if encoder else None,
        user_masks,
    )


def _prompt_at_step(prompt: str, step: int, steps: int) -> str:
    schedule = prompt_parser.get_learned_conditioning_prompt_schedules([prompt], steps)[0]
    return next((text for end, text in schedule if end > step), schedule[-1][1])


def mask_array(value: Any) -> np.ndarray | None:
    """A mask from the UI (an image, or gradio's sketch dict of image and drawn strokes) or the
    API (a base64 PNG, with or without a data URL prefix) as a 2-D array in 0..1."""
    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, dict):
        # gradio's sketch tool: the uploaded picture and the strokes drawn on it; strokes win.
        strokes = mask_array(value.get("mask"))
        return strokes if strokes is not None and strokes.any() else mask_array(value.get("image"))
    if isinstance(value, str):
        try:
            value = Image.open(io.BytesIO(base64.b64decode(value.split(",", 1)[-1])))
        except (ValueError, OSError):
            raise SettingsError("a mask given as text must be a base64-encoded image") from None
    if isinstance(value, Image.Image):
        value = value.convert("L")
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 3:
        array = array.max(axis=-1)
    if array.ndim != 2:
        raise SettingsError(f"a mask must be an image, got an array of shape {array.shape}")
    return array / 255.0 if array.max() > 1 else array


def show(p: Any, processed: Any, session: GenerationSession) -> None:
    """Add the masks each pass used to the gallery; saved only if the user asked. Each gets its
    generation's infotext plus a "MasaCtrl mask" entry: the gallery's Save button parses every
    selected image's infotext and needs its Seed (ui_common.py)."""
    base = processed.info
    # Other scripts (ControlNet's detect maps) may have added images without infotexts.
    processed.infotexts.extend([base] * (len(processed.images) - len(processed.infotexts)))
    for used in session.used_masks:
        for image, mask in sorted(used.masks.items()):
            role = "target" if session.pairing.is_target(image) else "source"
            label = f"{role} {image + 1}, step {used.step}"
            size = mask.shape[-1] * PREVIEW_SCALE, mask.shape[-2] * PREVIEW_SCALE
            picture = Image.fromarray((mask.numpy() * 255).astype(np.uint8), "L").resize(size, Image.NEAREST)
            info = f'{base}, MasaCtrl mask: "{label}"'
            processed.images.append(picture)
            processed.infotexts.append(info)
            if options.save_masks():
                images.save_image(picture, p.outpath_samples, "", p.all_seeds[0], label, shared.opts.samples_format,
                                  info=info, p=p, suffix="-masactrl-mask")
