"""Pictures of detections with Pillow's ImageDraw: boxes coloured by class, labelled
"name score", ground truth dashed in black and white, low-scoring boxes faint and dashed.

Boxes are ``(N, 4)`` xyxy in the image's pixels, continuous coordinates: a box ``[x0, y0,
x1, y1]`` covers the pixel columns ``x0 .. x1 - 1`` (COCO's ``[x, y, w, h]`` is ``[x, y, x + w,
y + h]``). Every outline is drawn inside its box. Small images are first enlarged by a whole
factor (nearest neighbour, pixels stay sharp) so the labels are readable.

Which images get drawn: :func:`choose_images`, a seeded choice over the sorted image ids, so
the same seed picks the same images of a set whatever the model.
"""
from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# 20 distinct colours (Sasha Trubetskoy's list), class c gets PALETTE[c % 20].
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
           (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
           (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128))
MIN_SHORT_SIDE = 320      # images are enlarged until their short side is at least this,
MAX_LONG_SIDE = 480       # unless their long side would pass this (and the factor is > 1)
BOX_WIDTH = 2             # outline of a detection, in pixels of the drawn picture
FAINT_WIDTH = 1           # outline of a box under the score threshold
FAINT_ALPHA = 140         # opacity (of 255) of a faint box
GT_WIDTH = 1              # outline of a ground-truth box
GT_COLOURS = ((255, 255, 255), (0, 0, 0))   # ground truth: dashes of these in turn
DASH = 5                  # length of one dash, in pixels
FONT_SIZE = 12            # labels
TITLE_FONT_SIZE = 16      # titles of a grid's rows and columns
LABEL_PAD = 2             # pixels around the label text
DARK_TEXT_ABOVE = 150     # background luminance above which the label text is black
LUMA_WEIGHTS = (0.299, 0.587, 0.114)   # luminance of an RGB colour (ITU-R BT.601)
PICTURE_SUFFIX = ".png"


def choose_images(image_ids: Iterable[int], count: int, seed: int) -> list[int]:
    """``count`` ids out of ``image_ids`` (all of them when fewer), sorted.

    The ids are sorted, then permuted by ``numpy.random.default_rng(seed)``; the first
    ``count`` are taken. So the same ids and seed give the same images, and the images
    chosen for ``count`` are among those chosen for any larger count.
    """
    ids = sorted(set(image_ids))
    if count <= 0 or not ids:
        return []
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted(ids[i] for i in order[:count])


def picture_name(image_id: int) -> str:
    """The file name of an image's picture: its id in 12 digits, ``000000000042.png``."""
    return f"{image_id:012d}{PICTURE_SUFFIX}"


def upscale_factor(width: int, height: int, min_short_side: int = MIN_SHORT_SIDE,
                   max_long_side: int = MAX_LONG_SIDE) -> int:
    """The smallest whole factor ≥ 1 that brings the short side to ``min_short_side``, made
    smaller (down to 1) while the long side would pass ``max_long_side``."""
    factor = max(1, math.ceil(min_short_side / max(1, min(width, height))))
    while factor > 1 and factor * max(width, height) > max_long_side:
        factor -= 1
    return factor


def class_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour of class index ``label``."""
    return PALETTE[int(label) % len(PALETTE)]


def xywh_to_xyxy(bbox) -> list[float]:
    """COCO ``[x, y, w, h]`` → ``[x0, y0, x1, y1]``."""
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def draw_boxes(image, boxes, labels, scores, class_names: list[str], *,
               faint_below: float | None = None, ground_truth=None,
               min_short_side: int = MIN_SHORT_SIDE) -> Image.Image:
    """A picture of ``image`` with its boxes.

    Args:
        image: RGB uint8, a numpy array (H, W, 3) or a PIL image.
        boxes: (N, 4) xyxy in the image's pixels.
        labels: (N,) class indices into ``class_names``; they pick the colours.
        scores: (N,) shown after the class name.
        class_names: name of each class index.
        faint_below: boxes scoring under this are drawn faint and dashed, without a label
            (None: none are).
        ground_truth: (M, 4) xyxy boxes drawn as black-and-white dashes, or None.
        min_short_side: enlarge the image until its short side is at least this (within
            ``MAX_LONG_SIDE``; 0: never), see :func:`upscale_factor`.

    Returns an RGB PIL image, enlarged by ``upscale_factor``; the highest scores are drawn
    last (on top); every label lies inside the picture.
    """
    picture, scale = _enlarged(_as_rgb(image), min_short_side)
    draw = ImageDraw.Draw(picture, "RGBA")   # RGBA colours blend onto the RGB picture
    font = ImageFont.load_default(size=FONT_SIZE)
    for box in _rows(ground_truth):
        _dashed_rectangle(draw, _pixel_rect(box, scale), GT_COLOURS, GT_WIDTH)
    boxes, scores = _rows(boxes), np.asarray(scores, dtype=float).reshape(-1)
    labels = np.asarray(labels, dtype=int).reshape(-1)
    for i in np.argsort(scores, kind="stable"):
        faint = faint_below is not None and scores[i] < faint_below
        colour = class_colour(labels[i])
        rect = _pixel_rect(boxes[i], scale)
        if faint:
            _dashed_rectangle(draw, rect, (colour + (FAINT_ALPHA,), None), FAINT_WIDTH)
            continue
        draw.rectangle(rect, outline=colour, width=BOX_WIDTH)
        _label(draw, font, rect, f"{class_names[labels[i]]} {scores[i]:.2f}", colour,
               picture.size)
    return picture


def write_pictures(folder, pictures: Iterable[tuple[str, Image.Image]]) -> list[Path]:
    """Save ``(file name, picture)`` pairs as PNG in ``folder``, replacing the folder.

    The pictures go to a hidden folder next to it, which is renamed onto ``folder`` once
    all are written: an interrupted run leaves no half-filled ``folder``. Returns the paths.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        names = []
        for name, picture in pictures:
            picture.save(tmp / name, format="PNG")
            names.append(name)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [folder / name for name in names]


def grid(cells: list[list[Image.Image | None]], *, column_titles: list[str],
         row_titles: list[str], cell_size: int = MAX_LONG_SIDE) -> Image.Image:
    """Pictures in a table: ``cells[r][c]`` (None: left blank), each shrunk (never enlarged)
    to fit a ``cell_size`` square; a title over each column, one left of each row. A column
    is ``cell_size`` wide, a row as tall as its tallest picture.

    Returns an RGB image of about ``(row titles + columns × cell_size)`` wide."""
    font = ImageFont.load_default(size=TITLE_FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = 2 * LABEL_PAD
    widest = max([measure.textbbox((0, 0), t, font=font)[2] for t in row_titles] + [0])
    left = widest + 2 * margin
    title_h = TITLE_FONT_SIZE + 2 * margin
    rows = [[None if cell is None else _fitted(cell, cell_size - margin) for cell in row]
            for row in cells]
    heights = [max([cell.height for cell in row if cell is not None] + [0]) + margin
               for row in rows]
    columns = max([len(row) for row in rows] + [len(column_titles)])
    sheet = Image.new("RGB", (left + columns * cell_size, title_h + sum(heights)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(column_titles):
        draw.text((left + c * cell_size + margin, margin), title, fill="black", font=font)
    top = title_h
    for row, height, title in zip(rows, heights, row_titles):
        draw.text((margin, top + height // 2), title, fill="black", font=font, anchor="lm")
        for c, cell in enumerate(row):
            if cell is not None:
                sheet.paste(cell, (left + c * cell_size + (cell_size - cell.width) // 2,
                                   top + (height - cell.height) // 2))
        top += height
    return sheet


# ---- helpers


def _as_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {array.dtype} "
                         f"{array.shape}")
    return Image.fromarray(array, "RGB")


def _enlarged(picture: Image.Image, min_short_side: int) -> tuple[Image.Image, int]:
    """(``picture`` enlarged by :func:`upscale_factor`, nearest neighbour; the factor)."""
    scale = upscale_factor(picture.width, picture.height, min_short_side)
    if scale == 1:
        return picture, scale
    size = (picture.width * scale, picture.height * scale)
    return picture.resize(size, Image.Resampling.NEAREST), scale


def _rows(boxes) -> np.ndarray:
    if boxes is None:
        return np.zeros((0, 4))
    return np.asarray(boxes, dtype=float).reshape(-1, 4)


def _pixel_rect(box, scale: int) -> tuple[int, int, int, int]:
    """The inclusive pixel rectangle ``(left, top, right, bottom)`` of a continuous xyxy box
    in a picture enlarged ``scale`` times; at least one pixel."""
    x0, y0, x1, y1 = (round(float(v) * scale) for v in box)
    return x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, rect, colours, width: int) -> None:
    """Outline ``rect`` (inclusive pixels) inward, ``width`` thick, in dashes of ``DASH``
    pixels taking ``colours`` in turn (None: a gap)."""
    left, top, right, bottom = rect
    inner = width - 1
    edges = (((left, right), (top, top + inner), True),            # top
             ((left, right), (bottom - inner, bottom), True),      # bottom
             ((top, bottom), (left, left + inner), False),         # left
             ((top, bottom), (right - inner, right), False))       # right
    for (start, end), (across0, across1), horizontal in edges:
        for k, at in enumerate(range(start, end + 1, DASH)):
            colour = colours[k % len(colours)]
            if colour is None:
                continue
            stop = min(at + DASH - 1, end)
            piece = (at, across0, stop, across1) if horizontal else (across0, at, across1, stop)
            draw.rectangle(piece, fill=colour)


def _label(draw: ImageDraw.ImageDraw, font, rect, text: str, colour, size) -> None:
    """``text`` on a tag of ``colour`` just above the box's top-left corner (inside the box
    when there is no room above), moved as needed to lie inside a picture of ``size``."""
    _, text_top, text_w, text_bottom = draw.textbbox((0, 0), text, font=font)
    tag_w, tag_h = text_w + 2 * LABEL_PAD, text_bottom - text_top + 2 * LABEL_PAD
    width, height = size
    x = min(max(rect[0], 0), max(width - tag_w, 0))
    y = rect[1] - tag_h if rect[1] - tag_h >= 0 else rect[1]
    y = min(max(y, 0), max(height - tag_h, 0))
    draw.rectangle((x, y, x + tag_w - 1, y + tag_h - 1), fill=colour)
    luminance = sum(w * c for w, c in zip(LUMA_WEIGHTS, colour))
    ink = (0, 0, 0) if luminance > DARK_TEXT_ABOVE else (255, 255, 255)
    draw.text((x + LABEL_PAD, y + LABEL_PAD - text_top), text, fill=ink, font=font)


def _fitted(picture: Image.Image, room: int) -> Image.Image:
    """``picture`` (RGB) shrunk to fit a ``room`` square, aspect kept; as it is if it fits."""
    factor = min(1.0, room / picture.width, room / picture.height)
    if factor == 1.0:
        return picture.convert("RGB")
    size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
    return picture.convert("RGB").resize(size, Image.Resampling.LANCZOS)
