"""Burn the AI result into a picture: heatmap tint, boxes and a banner above the radiograph.

A pure function of its inputs (same arrays and lines give the same pixels), used for the Secondary
Capture every viewer can show and for the thumbnails of the PDF report. The banner is a band
*added above* the image, so no anatomy is covered; only heatmap pixels above ``HEATMAP_THRESHOLD``
are tinted, so the rest of the radiograph stays exactly as windowed.

What is drawn follows :mod:`dicom_node.overlay_style`, the palette the web viewer and the PDF
share: a solid red box for "present", a dashed amber box for "indeterminate", a blue-to-cyan
tint for the heatmap, and nothing over the image for "absent" (a box or tint on a negative
result reads as a finding). The banner ends with a legend of what this picture shows, each line
beside a sample of its box or tint.

Text uses Pillow's bundled font (``ImageFont.load_default(size=...)``, Pillow >= 10.1): no font
files are read from the system, so the output does not depend on the host. That font covers
Latin-1 only; typographic characters outside it (em dash, arrows) are replaced by ASCII
equivalents rather than drawn as empty boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import get_args

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dicom_node.findings import Box, Decision
from dicom_node.overlay_style import (
    HEATMAP_HIGH,
    HEATMAP_LOW,
    HEATMAP_THRESHOLD,
    LegendEntry,
    box_style,
    dash_mask,
    draws_overlay,
    heatmap_colours,
    legend_for,
)

__all__ = [
    "BANNER_BACKGROUND",
    "BANNER_TEXT",
    "HEATMAP_THRESHOLD",
    "render_overlay",
]

#: Pixels tinted at a time (a band of rows), bounding the float temporaries of the tint.
_BAND_PIXELS = 1 << 20
#: Banner: black text on a light grey band (neutral: amber and red mean a decision's box).
BANNER_BACKGROUND: tuple[int, int, int] = (236, 236, 236)
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
    *,
    decision: str,
    legend: bool = True,
) -> np.ndarray:
    """The windowed radiograph as RGB with heatmap tint, boxes and a text banner above it.

    ``display`` is the windowed source image, uint8 (rows, cols), MONOCHROME2 (0 = black).
    ``heatmap`` is float in [0, 1] of the same shape, or None. ``boxes`` are in source pixels.
    ``decision`` ("present", "indeterminate", "absent") chooses the box style; a decision that
    draws no overlay (:func:`~dicom_node.overlay_style.draws_overlay`) gets neither boxes nor
    tint, whatever is passed. ``legend`` appends the legend of what is drawn to the banner.
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
    if decision not in get_args(Decision):
        raise ValueError(f"unknown decision {decision!r}")
    style = box_style(decision)
    if not draws_overlay(decision) or style is None:
        heatmap, boxes = None, ()
    entries = legend_for(decision, heatmap=heatmap is not None) if legend else ()
    banner = _banner(banner_lines, entries, rows, cols)
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
    if style is not None:
        for box in boxes:
            _draw_box(rgb, box, width, style.colour, dashed=style.dashed)
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
    """Tint ``rgb`` (a band of the image) in place where ``heatmap`` is above the threshold,
    with the overlay_style ramp (blue at the threshold to cyan at the maximum)."""
    mask, colour, alpha = heatmap_colours(heatmap)
    if not mask.any():
        return
    a = alpha[:, None]
    base = rgb[mask].astype(np.float32)
    rgb[mask] = np.clip(np.rint(base * (1.0 - a) + colour * a), 0, 255).astype(np.uint8)


def _draw_box(
    rgb: np.ndarray, box: Box, width: int, colour: tuple[int, int, int], *, dashed: bool
) -> None:
    """Outline drawn inside the box's pixel extent, clipped to the image; ``dashed``: dashes
    and gaps along each side (:func:`~dicom_node.overlay_style.dash_mask`), corners drawn."""
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
    if not dashed:
        rgb[r0 : r0 + w_r, c0:c1] = value
        rgb[r1 - w_r : r1, c0:c1] = value
        rgb[r0:r1, c0 : c0 + w_c] = value
        rgb[r0:r1, c1 - w_c : c1] = value
        return
    along_row = np.flatnonzero(dash_mask(c1 - c0, width)) + c0  # columns of the dashes
    along_col = np.flatnonzero(dash_mask(r1 - r0, width)) + r0  # rows of the dashes
    for r in (slice(r0, r0 + w_r), slice(r1 - w_r, r1)):
        rgb[r, along_row] = value
    for c in (slice(c0, c0 + w_c), slice(c1 - w_c, c1)):
        rgb[along_col, c] = value


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


def _banner(
    banner_lines: Sequence[str], entries: Sequence[LegendEntry], rows: int, cols: int
) -> np.ndarray:
    """The text band: ``banner_lines`` wrapped, then one line per legend entry, each after a
    sample of what it names (box outline, dashed box, heatmap ramp; none for "no overlay")."""
    size = font_size(rows, cols)
    font = _font(size)
    margin = max(2, size // 2)
    limit = max(1, cols - 2 * margin)
    swatch = size + size // 2  # sample width; a legend line's text starts after it
    indent = swatch + size // 2
    # (text, indent, swatch kind drawn before it or None)
    lines: list[tuple[str, int, str | None]] = []
    for line in banner_lines:
        lines.extend(
            (part, 0, None) for part in _wrap(line.translate(_ASCII_FALLBACK), font, limit)
        )
    for entry in entries:
        shift = 0 if entry.swatch == "none" else indent  # "no overlay": nothing to sample
        parts = _wrap(entry.text, font, max(1, limit - shift))
        lines.extend(
            (part, shift, entry.swatch if i == 0 else None) for i, part in enumerate(parts)
        )
    spacing = round(size * 1.3)
    height = 2 * margin + spacing * max(1, len(lines))
    image = Image.new("RGB", (cols, height), BANNER_BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, (line, shift, kind) in enumerate(lines):
        top = margin + i * spacing
        if kind is not None and margin + swatch <= cols:
            _swatch(image, kind, margin, top, swatch, size)
        draw.text((margin + shift, top), line, fill=BANNER_TEXT, font=font)
    return np.asarray(image, dtype=np.uint8)


def _swatch(image: Image.Image, kind: str, left: int, top: int, width: int, height: int) -> None:
    """A legend sample at (left, top): a box outline in a decision's style, or the heatmap
    ramp as a horizontal gradient; nothing for "none"."""
    sample = np.empty((height, width, 3), np.uint8)
    if kind == "heatmap":
        t = np.linspace(0.0, 1.0, width)[:, None]
        low, high = np.asarray(HEATMAP_LOW, float), np.asarray(HEATMAP_HIGH, float)
        sample[...] = np.rint(low + (high - low) * t).astype(np.uint8)[None, :, :]
    else:
        style = box_style(kind)
        if style is None:
            return
        sample[...] = BANNER_BACKGROUND
        line = max(2, height // 6)
        _draw_box(sample, Box(0, 0, height, width), line, style.colour, dashed=style.dashed)
    image.paste(Image.fromarray(sample, mode="RGB"), (left, top))
