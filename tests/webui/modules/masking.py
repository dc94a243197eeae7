"""Stand-in for ``modules/masking.py`` of the WebUI v1.10.1: the "only masked" crop box of an
inpainting mask and the "fill" masked-content mode; plus ``masked_out``, the masked-out copy of an
image that both the fill and img2img's inpainting overlay (modules/processing.py) start from."""

from __future__ import annotations

from PIL import Image, ImageFilter, ImageOps


def get_crop_region_v2(mask, pad: int = 0) -> tuple[int, int, int, int] | None:
    """masking.py ``get_crop_region_v2``: the bounding box of the mask's non-zero pixels grown by
    ``pad`` on every side (kept inside the mask), or None for an empty mask."""
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    box = mask.getbbox()
    if not box or not pad:
        return box
    left, top, right, bottom = box
    return max(left - pad, 0), max(top - pad, 0), min(right + pad, mask.width), min(bottom + pad, mask.height)


def _widen(start: int, end: int, extra: int, limit: int) -> tuple[int, int]:
    """[start, end) grown by ``extra`` (half on each side, the odd pixel after), then pushed back
    inside [0, limit) and clipped to it if still too long."""
    start, end = start - extra // 2, end + extra - extra // 2
    overflow = max(end - limit, 0)
    start, end = start - overflow, end - overflow
    if start < 0:
        start, end = 0, end - start
    return start, min(end, limit)


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    """masking.py ``expand_crop_region``: the box grown along one axis to the processing size's aspect
    ratio, so that the crop scales to the processing size without distortion."""
    left, top, right, bottom = crop_region
    aspect = processing_width / processing_height
    if (right - left) / (bottom - top) > aspect:
        top, bottom = _widen(top, bottom, int((right - left) / aspect - (bottom - top)), image_height)
    else:
        left, right = _widen(left, right, int((bottom - top) * aspect - (right - left)), image_width)
    return left, top, right, bottom


def masked_out(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The image where the mask is dark, transparent where it is bright (premultiplied "RGBa")."""
    result = Image.new("RGBa", image.size)
    result.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    return result


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """masking.py ``fill``: the masked area painted with the surrounding colours, by stacking ever
    sharper blurs of the unmasked part (256, 64, 16 twice, 4 four times, 2 twice, then unblurred)."""
    unmasked = masked_out(image, mask)
    result = Image.new("RGBA", image.size)
    blurs: dict[int, Image.Image] = {}
    for radius in (256, 64, 16, 16, 4, 4, 4, 4, 2, 2, 0):
        if radius not in blurs:
            blurs[radius] = unmasked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        result.alpha_composite(blurs[radius])
    return result.convert("RGB")
