"""Stand-in for the parts of ``modules/images.py`` (WebUI v1.10.1) that processing, the X/Y/Z plot
and the extension use: grids and their legends, resizing, flattening, reading, the next file number
and ``save_image``.

Simplified: ``save_image`` writes nothing; it fires the before/after image-saved callbacks and
records ``(image, infotext, details)`` in ``saved_images`` (what the real host would have written).
The only upscalers are PIL resizes ("None", "Lanczos", "Nearest"), as in an install without upscaler
models (modules/upscaler.py). Legends use Pillow's default font unless ``opts.font`` names one (the
real default is Roboto)."""

from __future__ import annotations

import contextlib
import math
import os
from collections import namedtuple

from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps

from modules import script_callbacks, shared
from modules.shared import opts

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

saved_images: list[tuple] = []
"""Stand-in only: every ``save_image`` call as (image, infotext, dict of the other details)."""


class _PilScaler:
    """modules/upscaler.py ``UpscalerNone`` / ``UpscalerLanczos`` / ``UpscalerNearest``: one PIL resize
    by the scale (none for "None")."""

    def __init__(self, resample):
        self.resample = resample

    def upscale(self, img: Image.Image, scale: float, selected_model=None) -> Image.Image:
        if self.resample is None:
            return img
        return img.resize((int(img.width * scale), int(img.height * scale)), resample=self.resample)


UpscalerData = namedtuple("UpscalerData", ["name", "scaler", "data_path"])
shared.sd_upscalers[:] = [UpscalerData(name, _PilScaler(resample), None)
                          for name, resample in (("None", None), ("Lanczos", LANCZOS), ("Nearest", NEAREST))]


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: int | None = None) -> Image.Image:
    """images.py ``image_grid``: the images in a grid of cells as large as the largest image (smaller
    ones centred). Rows: as given, else ``opts.n_rows``, where 0 means one row per batch and -1 a
    near-square grid (without empty cells with ``opts.grid_prevent_empty_spots``). The image_grid
    callbacks may change the images, columns and rows."""
    if rows is None and opts.n_rows >= 0:
        rows = opts.n_rows or batch_size
    elif rows is None and opts.grid_prevent_empty_spots:
        rows = next(count for count in range(math.isqrt(len(imgs)), 0, -1) if len(imgs) % count == 0)
    elif rows is None:
        rows = round(math.sqrt(len(imgs)))
    rows = min(rows, len(imgs))
    layout = script_callbacks.ImageGridLoopParams(imgs, math.ceil(len(imgs) / rows), rows)
    script_callbacks.image_grid_callback(layout)

    cell_w = max(img.width for img in imgs)
    cell_h = max(img.height for img in imgs)
    background = ImageColor.getcolor(opts.grid_background_color, "RGB")
    grid = Image.new("RGB", (layout.cols * cell_w, layout.rows * cell_h), background)
    for position, img in enumerate(layout.imgs):
        row, column = divmod(position, layout.cols)
        grid.paste(img, (column * cell_w + (cell_w - img.width) // 2, row * cell_h + (cell_h - img.height) // 2))
    return grid


class GridAnnotation:
    """images.py ``GridAnnotation``: one legend label; inactive labels are drawn struck through."""

    def __init__(self, text: str = "", is_active: bool = True):
        self.text = text
        self.is_active = is_active
        self.size = None


def get_font(fontsize: int):
    try:
        return ImageFont.truetype(opts.font, fontsize)
    except Exception:
        return ImageFont.load_default(size=fontsize)


def draw_grid_annotations(im: Image.Image, width: int, height: int, hor_texts, ver_texts, margin: int = 0) -> Image.Image:
    """images.py ``draw_grid_annotations``: the grid ``im`` of width x height cells redrawn with
    ``margin`` pixels between cells, column labels above and row labels to the left. Labels wrap to
    their space (the cell width, or three quarters of it on the left) and a font size of
    (width + height) / 25, shrunk for a word that does not fit."""
    cols, rows = im.width // width, im.height // height
    assert cols == len(hor_texts), f"bad number of horizontal texts: {len(hor_texts)}; must be {cols}"
    assert rows == len(ver_texts), f"bad number of vertical texts: {len(ver_texts)}; must be {rows}"
    fontsize = (width + height) // 25
    spacing = fontsize // 2
    font = get_font(fontsize)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad_left = width * 3 // 4 if any(label.text for labels in ver_texts for label in labels) else 0

    def text_size(text: str, face) -> tuple[int, int]:
        left, top, right, bottom = measure.multiline_textbbox((0, 0), text, font=face)
        return right - left, bottom - top

    def wrapped(labels: list[GridAnnotation], room: int) -> list[GridAnnotation]:
        lines = []
        for label in labels:
            texts = [""]
            for word in label.text.split():
                joined = f"{texts[-1]} {word}".strip()
                if measure.textlength(joined, font=font) <= room:
                    texts[-1] = joined
                else:
                    texts.append(word)
            lines += [GridAnnotation(text, label.is_active) for text in texts]
        for line in lines:
            line.size, line.room = text_size(line.text, font), room
        return lines

    columns = [wrapped(labels, width) for labels in hor_texts]
    row_labels = [wrapped(labels, pad_left) for labels in ver_texts]
    column_heights = [sum(line.size[1] + spacing for line in lines) - spacing for lines in columns]
    # as in the real function, a row label's height leaves out every line's spacing
    row_heights = [sum(line.size[1] for line in lines) for lines in row_labels]
    pad_top = max(column_heights) + spacing * 2 if sum(column_heights) else 0

    background = ImageColor.getcolor(opts.grid_background_color, "RGB")
    result = Image.new("RGB", (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1)), background)
    for position in range(rows * cols):
        row, column = divmod(position, cols)
        left, top = column * width, row * height
        cell = im.crop((left, top, left + width, top + height))
        result.paste(cell, (pad_left + left + margin * column, pad_top + top + margin * row))

    draw = ImageDraw.Draw(result)
    colours = {True: ImageColor.getcolor(opts.grid_text_active_color, "RGB"),
               False: ImageColor.getcolor(opts.grid_text_inactive_color, "RGB")}

    def draw_lines(lines: list[GridAnnotation], x: float, y: float) -> None:
        for line in lines:
            size, line_font = fontsize, font
            while size > 0 and text_size(line.text, line_font)[0] > line.room:
                size -= 1
                line_font = get_font(size)
            middle = y + line.size[1] / 2
            draw.multiline_text((x, middle), line.text, font=line_font, fill=colours[line.is_active], anchor="mm", align="center")
            if not line.is_active:
                half = line.size[0] // 2
                draw.line((x - half, y + line.size[1] // 2, x + half, y + line.size[1] // 2), fill=colours[False], width=4)
            y += line.size[1] + spacing

    for column, lines in enumerate(columns):
        draw_lines(lines, pad_left + (width + margin) * column + width / 2, pad_top / 2 - column_heights[column] / 2)
    for row, lines in enumerate(row_labels):
        draw_lines(lines, pad_left / 2, pad_top + (height + margin) * row + height / 2 - row_heights[row] / 2)
    return result


def resize_image(resize_mode: int, im: Image.Image, width: int, height: int, upscaler_name: str | None = None) -> Image.Image:
    """images.py ``resize_image``: 0 stretches to width x height; 1 scales to cover and crops the
    centre; 2 scales to fit and fills the two empty bands by stretching the image's edge rows or
    columns. Enlarging goes through the named upscaler (default ``opts.upscaler_for_img2img``) before
    the final Lanczos resize; masks ("L" images) and "None" use Lanczos only."""
    upscaler_name = upscaler_name or opts.upscaler_for_img2img

    def resized(image: Image.Image, w: int, h: int) -> Image.Image:
        if upscaler_name in (None, "None") or image.mode == "L":
            return image.resize((w, h), resample=LANCZOS)
        scale = max(w / image.width, h / image.height)
        if scale > 1.0:
            upscaler = next((x for x in shared.sd_upscalers if x.name == upscaler_name), shared.sd_upscalers[0])
            image = upscaler.scaler.upscale(image, scale, upscaler.data_path)
        return image if image.size == (w, h) else image.resize((w, h), resample=LANCZOS)

    if resize_mode == 0:
        return resized(im, width, height)
    target, source = width / height, im.width / im.height
    # the image's width becomes the target's when covering (1) a relatively wider target, or when
    # fitting (2) a relatively wider image
    match_width = target > source if resize_mode == 1 else target < source
    src_w, src_h = (width, im.height * width // im.width) if match_width else (im.width * height // im.height, height)
    content = resized(im, src_w, src_h)
    result = Image.new("RGB", (width, height))
    result.paste(content, (width // 2 - src_w // 2, height // 2 - src_h // 2))
    if resize_mode == 1 or target == source:
        return result
    if match_width:  # empty bands above and below
        band = height // 2 - src_h // 2
        if band > 0:
            result.paste(content.resize((width, band), box=(0, 0, width, 0)), (0, 0))
            result.paste(content.resize((width, band), box=(0, content.height, width, content.height)), (0, band + src_h))
    else:  # empty bands left and right
        band = width // 2 - src_w // 2
        if band > 0:
            result.paste(content.resize((band, height), box=(0, 0, 0, height)), (0, 0))
            result.paste(content.resize((band, height), box=(content.width, 0, content.width, height)), (band + src_w, 0))
    return result


def flatten(img: Image.Image, bgcolor) -> Image.Image:
    """images.py ``flatten``: transparency replaced by ``bgcolor``, as RGB."""
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def fix_image(image: Image.Image | None) -> Image.Image | None:
    """images.py ``fix_image``: EXIF orientation applied; palette/RGB images with a transparency colour
    become RGBA."""
    if image is None:
        return None
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
            image = image.convert("RGBA")
    except Exception:
        pass
    return image


def read(fp, **kwargs) -> Image.Image:
    return fix_image(Image.open(fp, **kwargs))


def get_next_sequence_number(path: str, basename: str) -> int:
    """images.py ``get_next_sequence_number``: one more than the largest number that starts a file name
    in ``path`` (after "basename-" when a basename is given); 0 when there is none."""
    prefix = f"{basename}-" if basename else ""
    numbers = [-1]
    for name in os.listdir(path):
        if name.startswith(prefix):
            with contextlib.suppress(ValueError):
                numbers.append(int(os.path.splitext(name[len(prefix):])[0].split("-")[0]))
    return max(numbers) + 1


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, *, p=None, suffix="", grid=False,
               pnginfo_section_name="parameters", **unused):
    """images.py ``save_image`` without the writing (see the module docstring): the callbacks get the
    image, ``p``, a file name and the PNG info; returns (file name, None)."""
    pnginfo = {pnginfo_section_name: info} if info else {}
    params = script_callbacks.ImageSaveParams(image, p, f"{basename}{suffix}.{extension}", pnginfo)
    script_callbacks.before_image_saved_callback(params)
    saved_images.append((params.image, info, dict(path=path, seed=seed, prompt=prompt, grid=grid, suffix=suffix, p=p)))
    script_callbacks.image_saved_callback(params)
    return params.filename, None
