"""Mirrors modules/masking.py: crop regions of inpainting masks and the "fill" masked-content mode."""

from PIL import Image, ImageFilter, ImageOps


def get_crop_region_v2(mask, pad=0):
    # mirrors masking.get_crop_region_v2: bounding box of the non-zero mask, padded; None if empty
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    box = mask.getbbox()
    if not box:
        return None
    if not pad:
        return box
    x1, y1, x2, y2 = box
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])


def get_crop_region(mask, pad=0):
    # mirrors masking.get_crop_region (an empty mask gives an inverted box)
    mask = mask if isinstance(mask, Image.Image) else Image.fromarray(mask)
    box = get_crop_region_v2(mask, pad)
    if box:
        return box
    x1, y1 = mask.size
    x2 = y2 = 0
    return max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    # mirrors masking.expand_crop_region: grows the box to the processing aspect ratio, kept inside the image
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height

    if ratio_crop_region > ratio_processing:
        desired_height = (x2 - x1) / ratio_processing
        diff = int(desired_height - (y2 - y1))
        y1 -= diff // 2
        y2 += diff - diff // 2
        if y2 >= image_height:
            overflow = y2 - image_height
            y2 -= overflow
            y1 -= overflow
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        if y2 >= image_height:
            y2 = image_height
    else:
        desired_width = (y2 - y1) * ratio_processing
        diff = int(desired_width - (x2 - x1))
        x1 -= diff // 2
        x2 += diff - diff // 2
        if x2 >= image_width:
            overflow = x2 - image_width
            x2 -= overflow
            x1 -= overflow
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        if x2 >= image_width:
            x2 = image_width

    return x1, y1, x2, y2


def fill(image, mask):
    # mirrors masking.fill: fills the masked area from progressively less blurred copies of the rest
    image_mod = Image.new("RGBA", (image.width, image.height))
    image_masked = Image.new("RGBa", (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    image_masked = image_masked.convert("RGBa")
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")
