"""Burn the AI result into a picture: heatmap tint, boxes and a banner above the radiograph.

A pure function of its inputs (same arrays and lines give the same pixels), used for the Secondary
Capture every viewer can show and for the thumbnails of the PDF report. The banner is a band
*added above* the image, so no anatomy is covered; only heatmap pixels above ``HEATMAP_THRESHOLD``
are tinted, so the rest of the radiograph stays exactly as windowed.

Text uses Pillow's bundled font (``ImageFont.load_default(size=...)``, Pillow >= 10.1): no font
files are read from the system, so the output does not depend on the host. That font covers
Latin-1 only; typographic characters outside it (em dash, arrows) are replaced by ASCII
equivalents rather than drawn as empty boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dicom_node.findings import Box

__all__ = [
    "BANNER_BACKGROUND",
    "BANNER_TEXT",
    "BOX_COLOUR",
    "HEATMAP_THRESHOLD",
    "render_overlay",
]

#: Heatmap values at or below this are not drawn (the anatomy stays readable there).
HEATMAP_THRESHOLD = 0.3
#: Pixels tinted at a time (a band of rows), bounding the float temporaries of the tint.
_BAND_PIXELS = 1 << 20
#: Opacity of the tint at the threshold and at 1.0.
_ALPHA_MIN, _ALPHA_MAX = 0.30, 0.55
#: Boxes: bright green, distinct from the red-to-yellow heatmap and from grey anatomy.
BOX_COLOUR: tuple[int, int, int] = (0, 255, 0)
#: Banner: dark text on a light amber band.
BANNER_BACKGROUND: tuple[int, int, int] = (255, 214, 10)
BANNER_TEXT: tuple[int, int, int] = (0, 0, 0)

_ASCII_FALLBACK = str.maketrans(
    {
        "\u2014": "-",  # em dash
        "\u2013": "-",  # en dash
        "\u2192": "->",
        "\u2265": ">=",
        "\u2264": "<=",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
    }
)


def render_overlay(
    display: np.ndarray,
    heatmap: np.ndarray | None,
    boxes: Sequence[Box],
    banner_lines: Sequence[str],
) -> np.ndarray:
    """The windowed radiograph as RGB with heatmap tint, boxes and a text banner above it.

    ``display`` is the windowed source image, uint8 (rows, cols), MONOCHROME2 (0 = black).
    ``heatmap`` is float in [0, 1] of the same shape, or None. ``boxes`` are in source pixels.
    Returns uint8 (banner_height + rows, cols, 3); image row ``r`` is output row
    ``banner_height + r`` where ``banner_height = output.shape[0] - rows``.
    """
    if display.ndim != 2 or display.dtype != np.uint8:
        raise ValueError(f"display must be uint8 (rows, cols), got {display.dtype} {display.shape}")
    rows, cols = display.shape
    if rows == 0 or cols == 0:
        raise ValueError("empty display image")
    if heatmap is not None and heatmap.shape != display.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} != display shape {display.shape}")
    banner = _banner(banner_lines, rows, cols)
    # One output array, filled a band of rows at a time: a 7,000 x 17,000 long-leg DX needs
    # no full-size float copies of the heatmap and no second copy of the RGB image.
    out = np.empty((banner.shape[0] + rows, cols, 3), dtype=np.uint8)
    out[: banner.shape[0]] = banner
    rgb = out[banner.shape[0] :]
    band = max(1, _BAND_PIXELS // cols)
    for row in range(0, rows, band):
        part = rgb[row : row + band]
        part[...] = display[row : row + band, :, None]
        if heatmap is not None:
            _tint(part, heatmap[row : row + band])
    width = line_width(rows, cols)
    for box in boxes:
        _draw_box(rgb, box, width, BOX_COLOUR)
    return out


def line_width(rows: int, cols: int) -> int:
    """Box outline width in pixels: 2 on small images, about 8 on a 2k radiograph."""
    return max(2, round(min(rows, cols) / 256))


def font_size(rows: int, cols: int) -> int:
    """Banner font size in pixels: about 1/45 of the image's *long* side, at least 11.

    A viewer fits the whole capture to its viewport, so what keeps the text legible is its size
    relative to the long side: a 3,000 x 1,000 px long bone fitted to 1,000 px shows a 67 px font
    at 22 px (sized by the width alone it would be 7 px). At most a tenth of the width, so a
    line still holds a few words on a narrow image.
    """
    return max(11, min(round(max(rows, cols) / 45), max(11, cols // 10)))


def _tint(rgb: np.ndarray, heatmap: np.ndarray) -> None:
    """Tint ``rgb`` (a band of the image) in place where ``heatmap`` is above the threshold."""
    heat = np.nan_to_num(heatmap.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    heat = np.clip(heat, 0.0, 1.0)
    mask = heat > HEATMAP_THRESHOLD
    if not mask.any():
        return
    # Strength 0 at the threshold, 1 at the maximum; colour runs red -> yellow.
    t = (heat[mask] - HEATMAP_THRESHOLD) / (1.0 - HEATMAP_THRESHOLD)
    colour = np.stack([np.full_like(t, 255.0), 255.0 * t, np.zeros_like(t)], axis=1)
    alpha = (_ALPHA_MIN + (_ALPHA_MAX - _ALPHA_MIN) * t)[:, None]
    base = rgb[mask].astype(np.float32)
    rgb[mask] = np.clip(np.rint(base * (1.0 - alpha) + colour * alpha), 0, 255).astype(np.uint8)


def _draw_box(rgb: np.ndarray, box: Box, width: int, colour: tuple[int, int, int]) -> None:
    """Outline drawn inside the box's pixel extent, clipped to the image."""
    rows, cols = rgb.shape[:2]
    r0 = int(np.floor(box.row0))
    c0 = int(np.floor(box.col0))
    r1 = min(int(np.ceil(box.row1)), rows)  # exclusive
    c1 = min(int(np.ceil(box.col1)), cols)
    if r0 >= rows or c0 >= cols or r1 <= r0 or c1 <= c0:
        return
    w_r = min(width, r1 - r0)
    w_c = min(width, c1 - c0)
    value = np.array(colour, dtype=np.uint8)
    rgb[r0 : r0 + w_r, c0:c1] = value
    rgb[r1 - w_r : r1, c0:c1] = value
    rgb[r0:r1, c0 : c0 + w_c] = value
    rgb[r0:r1, c1 - w_c : c1] = value


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, limit: float) -> list[str]:
    """Greedy word wrap to ``limit`` pixels; a single over-long word is cut by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= limit:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        while font.getlength(word) > limit and len(word) > 1:
            cut = len(word) - 1
            while cut > 1 and font.getlength(word[:cut]) > limit:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines or [""]


def _banner(banner_lines: Sequence[str], rows: int, cols: int) -> np.ndarray:
    size = font_size(rows, cols)
    font = _font(size)
    margin = max(2, size // 2)
    limit = max(1, cols - 2 * margin)
    lines: list[str] = []
    for line in banner_lines:
        lines.extend(_wrap(line.translate(_ASCII_FALLBACK), font, limit))
    spacing = round(size * 1.3)
    height = 2 * margin + spacing * max(1, len(lines))
    image = Image.new("RGB", (cols, height), BANNER_BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * spacing), line, fill=BANNER_TEXT, font=font)
    return np.asarray(image, dtype=np.uint8)
