"""Mirrors the parts of modules/images.py processing and the X/Y/Z plot use: image_grid,
GridAnnotation + draw_grid_annotations, resize_image, flatten, fix_image, save_image,
get_next_sequence_number.

Grid annotations use Pillow's default font at the requested size (the real one loads Roboto, or
opts.font) and multiline_textbbox where the real one calls multiline_textsize (gone in Pillow 10).

Simplified: save_image writes nothing; it records (image, info, kwargs) in ``saved_images`` (tests can
look at what the real host would have saved) and fires the before/after image-saved callbacks. The
only upscalers are PIL resizes ("None", "Lanczos", "Nearest"), as in a WebUI without upscaler models."""

import math
import os
from collections import namedtuple

from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps

from modules import script_callbacks, shared
from modules.shared import opts

LANCZOS = Image.Resampling.LANCZOS
NEAREST = Image.Resampling.NEAREST

saved_images = []  # stand-in only


class _PilScaler:
    # mirrors modules/upscaler.py UpscalerLanczos / UpscalerNearest (and UpscalerNone for "None")
    def __init__(self, resample):
        self.resample = resample

    def upscale(self, img, scale, selected_model=None):
        if self.resample is None:
            return img
        return img.resize((int(img.width * scale), int(img.height * scale)), resample=self.resample)


UpscalerData = namedtuple("UpscalerData", ["name", "scaler", "data_path"])

shared.sd_upscalers[:] = [
    UpscalerData("None", _PilScaler(None), None),
    UpscalerData("Lanczos", _PilScaler(LANCZOS), None),
    UpscalerData("Nearest", _PilScaler(NEAREST), None),
]


def image_grid(imgs, batch_size=1, rows=None):
    # mirrors images.image_grid (fires image_grid callbacks, which may change cols/rows/images)
    if rows is None:
        if opts.n_rows > 0:
            rows = opts.n_rows
        elif opts.n_rows == 0:
            rows = batch_size
        elif opts.grid_prevent_empty_spots:
            rows = math.floor(math.sqrt(len(imgs)))
            while len(imgs) % rows != 0:
                rows -= 1
        else:
            rows = round(math.sqrt(len(imgs)))
    if rows > len(imgs):
        rows = len(imgs)
    cols = math.ceil(len(imgs) / rows)

    params = script_callbacks.ImageGridLoopParams(imgs, cols, rows)
    script_callbacks.image_grid_callback(params)

    w, h = map(max, zip(*(img.size for img in imgs)))
    grid = Image.new("RGB", size=(params.cols * w, params.rows * h), color=ImageColor.getcolor(opts.grid_background_color, "RGB"))
    for i, img in enumerate(params.imgs):
        img_w, img_h = img.size
        w_offset = 0 if img_w == w else (w - img_w) // 2
        h_offset = 0 if img_h == h else (h - img_h) // 2
        grid.paste(img, box=(i % params.cols * w + w_offset, i // params.cols * h + h_offset))
    return grid


class GridAnnotation:
    # mirrors images.GridAnnotation
    def __init__(self, text="", is_active=True):
        self.text = text
        self.is_active = is_active
        self.size = None


def get_font(fontsize: int):
    # mirrors images.get_font (see the module docstring)
    try:
        return ImageFont.truetype(opts.font, fontsize)
    except Exception:
        return ImageFont.load_default(size=fontsize)


def draw_grid_annotations(im, width, height, hor_texts, ver_texts, margin=0):
    # mirrors images.draw_grid_annotations: column labels above, row labels to the left (wrapped to the
    # cell width, shrunk until they fit), cells pasted with ``margin`` pixels between them
    color_active = ImageColor.getcolor(opts.grid_text_active_color, "RGB")
    color_inactive = ImageColor.getcolor(opts.grid_text_inactive_color, "RGB")
    color_background = ImageColor.getcolor(opts.grid_background_color, "RGB")

    def wrap(drawing, text, font, line_length):
        lines = [""]
        for word in text.split():
            line = f"{lines[-1]} {word}".strip()
            if drawing.textlength(line, font=font) <= line_length:
                lines[-1] = line
            else:
                lines.append(word)
        return lines

    def text_width(drawing, text, font):
        bbox = drawing.multiline_textbbox((0, 0), text, font=font)
        return bbox[2] - bbox[0]

    def draw_texts(drawing, draw_x, draw_y, lines, initial_fnt, initial_fontsize):
        for line in lines:
            fnt = initial_fnt
            fontsize = initial_fontsize
            while text_width(drawing, line.text, fnt) > line.allowed_width and fontsize > 0:
                fontsize -= 1
                fnt = get_font(fontsize)
            fill = color_active if line.is_active else color_inactive
            center = (draw_x, draw_y + line.size[1] / 2)
            drawing.multiline_text(center, line.text, font=fnt, fill=fill, anchor="mm", align="center")
            if not line.is_active:
                y = draw_y + line.size[1] // 2
                drawing.line((draw_x - line.size[0] // 2, y, draw_x + line.size[0] // 2, y), fill=color_inactive, width=4)
            draw_y += line.size[1] + line_spacing

    fontsize = (width + height) // 25
    line_spacing = fontsize // 2
    fnt = get_font(fontsize)
    pad_left = 0 if sum([sum([len(line.text) for line in lines]) for lines in ver_texts]) == 0 else width * 3 // 4

    cols = im.width // width
    rows = im.height // height
    assert cols == len(hor_texts), f"bad number of horizontal texts: {len(hor_texts)}; must be {cols}"
    assert rows == len(ver_texts), f"bad number of vertical texts: {len(ver_texts)}; must be {rows}"

    calc_d = ImageDraw.Draw(Image.new("RGB", (1, 1), color_background))
    for texts, allowed_width in zip(hor_texts + ver_texts, [width] * len(hor_texts) + [pad_left] * len(ver_texts)):
        items = [] + texts
        texts.clear()
        for line in items:
            texts += [GridAnnotation(x, line.is_active) for x in wrap(calc_d, line.text, fnt, allowed_width)]
        for line in texts:
            bbox = calc_d.multiline_textbbox((0, 0), line.text, font=fnt)
            line.size = (bbox[2] - bbox[0], bbox[3] - bbox[1])
            line.allowed_width = allowed_width

    hor_text_heights = [sum([line.size[1] + line_spacing for line in lines]) - line_spacing for lines in hor_texts]
    ver_text_heights = [sum([line.size[1] + line_spacing for line in lines]) - line_spacing * len(lines) for lines in ver_texts]
    pad_top = 0 if sum(hor_text_heights) == 0 else max(hor_text_heights) + line_spacing * 2

    size = (im.width + pad_left + margin * (cols - 1), im.height + pad_top + margin * (rows - 1))
    result = Image.new("RGB", size, color_background)
    for row in range(rows):
        for col in range(cols):
            cell = im.crop((width * col, height * row, width * (col + 1), height * (row + 1)))
            result.paste(cell, (pad_left + (width + margin) * col, pad_top + (height + margin) * row))

    d = ImageDraw.Draw(result)
    for col in range(cols):
        x = pad_left + (width + margin) * col + width / 2
        y = pad_top / 2 - hor_text_heights[col] / 2
        draw_texts(d, x, y, hor_texts[col], fnt, fontsize)
    for row in range(rows):
        x = pad_left / 2
        y = pad_top + (height + margin) * row + height / 2 - ver_text_heights[row] / 2
        draw_texts(d, x, y, ver_texts[row], fnt, fontsize)
    return result


def resize_image(resize_mode, im, width, height, upscaler_name=None):
    # mirrors images.resize_image: 0 = stretch, 1 = crop to fill, 2 = fit and fill the borders
    upscaler_name = upscaler_name or opts.upscaler_for_img2img

    def resize(im, w, h):
        if upscaler_name is None or upscaler_name == "None" or im.mode == "L":
            return im.resize((w, h), resample=LANCZOS)
        scale = max(w / im.width, h / im.height)
        if scale > 1.0:
            upscalers = [x for x in shared.sd_upscalers if x.name == upscaler_name]
            if not upscalers:
                upscaler = shared.sd_upscalers[0]
                print(f"could not find upscaler named {upscaler_name or '<empty string>'}, using {upscaler.name} as a fallback")
            else:
                upscaler = upscalers[0]
            im = upscaler.scaler.upscale(im, scale, upscaler.data_path)
        if im.width != w or im.height != h:
            im = im.resize((w, h), resample=LANCZOS)
        return im

    if resize_mode == 0:
        return resize(im, width, height)

    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res

    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(
                resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h)
            )
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(
                resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0)
            )
    return res


def flatten(img, bgcolor):
    # mirrors images.flatten: transparency replaced by bgcolor
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, bgcolor)
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def fix_image(image):
    # mirrors images.fix_image
    if image is None:
        return None
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGB", "P") and isinstance(image.info.get("transparency"), bytes):
            image = image.convert("RGBA")
    except Exception:
        pass
    return image


def read(fp, **kwargs):
    return fix_image(Image.open(fp, **kwargs))


def get_next_sequence_number(path, basename):
    # mirrors images.get_next_sequence_number: one more than the largest number that starts a file
    # name in ``path`` (after "basename-"), 0 for none
    result = -1
    prefix = f"{basename}-" if basename != "" else ""
    for name in os.listdir(path):
        if name.startswith(prefix):
            first = os.path.splitext(name[len(prefix):])[0].split("-")[0]
            try:
                result = max(int(first), result)
            except ValueError:
                pass
    return result + 1


def save_image(
    image,
    path,
    basename,
    seed=None,
    prompt=None,
    extension="png",
    info=None,
    short_filename=False,
    no_prompt=False,
    grid=False,
    pnginfo_section_name="parameters",
    p=None,
    existing_info=None,
    forced_filename=None,
    suffix="",
    save_to_dirs=None,
):
    # mirrors images.save_image's callbacks, simplified: nothing is written to disk
    params = script_callbacks.ImageSaveParams(
        image, p, f"{basename}{suffix}.{extension}", {pnginfo_section_name: info} if info else {}
    )
    script_callbacks.before_image_saved_callback(params)
    saved_images.append((params.image, info, dict(path=path, seed=seed, prompt=prompt, grid=grid, suffix=suffix, p=p)))
    script_callbacks.image_saved_callback(params)
    return params.filename, None
