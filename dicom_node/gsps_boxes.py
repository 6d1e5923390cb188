"""The boxes of the GSPS (:mod:`dicom_node.gsps`): vector outlines and their overlay bitmap.

Each box is a closed POLYLINE in PIXEL units with a Line Style Sequence (PS3.3 C.10.5, Type 3)
in the colour and dash of :mod:`dicom_node.overlay_style`; the same outlines are stored as a
1-bit Overlay Plane (:data:`OVERLAY_GROUP`) activated on the AI layer, dashed for a dashed box
style, for software that shows presentation-state overlays but no graphic annotations.
"""

from __future__ import annotations

import math

import numpy as np
from highdicom.color import CIELabColor
from highdicom.pr import AnnotationUnitsValues, GraphicObject, GraphicTypeValues
from pydicom.dataset import Dataset

from dicom_node.findings import Box, ImageFinding
from dicom_node.overlay_style import box_style, dash_mask

__all__ = [
    "DASH_PATTERN",
    "LAYER",
    "OVERLAY_DESCRIPTION",
    "OVERLAY_GROUP",
    "OVERLAY_LABEL",
    "add_outline_overlay",
    "box_polyline",
    "outline_width",
]

#: The graphic layer of every xrayd annotation (CS: uppercase, digits, "_" and space).
LAYER = "AI"
#: Line Pattern of a DASHED outline: 16 display units on, 16 off (bit 31 first, PS3.3 C.10.5).
DASH_PATTERN = 0xFFFF0000
#: The overlay group of the box outlines (Overlay Plane, activated on :data:`LAYER`).
OVERLAY_GROUP = 0x6000
OVERLAY_LABEL = "AI fracture regions"
OVERLAY_DESCRIPTION = "xrayd AI fracture regions: outlines of the boxes (research use)"
_SS_MAX = 2**15 - 1


def box_polyline(
    box: Box, colour: tuple[int, int, int], width: int, *, dashed: bool
) -> GraphicObject:
    """A closed POLYLINE (5 points, column/row) around ``box``, in PIXEL units, with its line
    style (colour, thickness, SOLID or DASHED; :func:`_line_style`).

    DICOM image coordinates put the top-left corner of the first pixel at (0, 0), so pixel
    (r, c) covers [c, c+1) x [r, r+1), the convention of :class:`~dicom_node.findings.Box`.
    """
    corners = [
        (box.col0, box.row0),
        (box.col1, box.row0),
        (box.col1, box.row1),
        (box.col0, box.row1),
        (box.col0, box.row0),
    ]
    graphic = GraphicObject(
        graphic_type=GraphicTypeValues.POLYLINE,
        graphic_data=np.array(corners, dtype=np.float64),
        units=AnnotationUnitsValues.PIXEL,
        is_filled=False,
    )
    graphic.LineStyleSequence = [_line_style(colour, width, dashed=dashed)]
    return graphic


def _line_style(colour: tuple[int, int, int], width: int, *, dashed: bool) -> Dataset:
    """A Line Style Sequence item (PS3.3 Table C.10-15): the box colour, opaque, ``width``
    thick, SOLID or DASHED (:data:`DASH_PATTERN`), without shadow."""
    item = Dataset()
    item.PatternOnColorCIELabValue = list(CIELabColor.from_rgb(*colour).value)
    item.PatternOnOpacity = 1.0
    item.LineThickness = float(width)
    item.LineDashingStyle = "DASHED" if dashed else "SOLID"
    if dashed:
        item.LinePattern = DASH_PATTERN
    item.ShadowStyle = "OFF"
    item.ShadowOffsetX = 0.0
    item.ShadowOffsetY = 0.0
    item.ShadowColorCIELabValue = list(CIELabColor.from_rgb(0, 0, 0).value)
    item.ShadowOpacity = 0.0
    return item


def outline_width(rows: int, columns: int) -> int:
    """Width in pixels of the box outlines in the overlay: 1/256 of the short side, at least 2."""
    return max(2, round(min(rows, columns) / 256))


def _pixel_extent(box: Box, rows: int, columns: int) -> tuple[int, int, int, int]:
    """The pixels the box touches, clipped to the image: rows r0..r1-1, columns c0..c1-1."""
    r0 = min(max(math.floor(box.row0), 0), rows - 1)
    c0 = min(max(math.floor(box.col0), 0), columns - 1)
    r1 = min(max(math.ceil(box.row1), r0 + 1), rows)
    c1 = min(max(math.ceil(box.col1), c0 + 1), columns)
    return r0, c0, r1, c1


def add_outline_overlay(ds: Dataset, finding: ImageFinding) -> str | None:
    """Overlay Plane :data:`OVERLAY_GROUP` with the outlines of the boxes, activated on LAYER.

    The bitmap spans the bounding rectangle of the boxes' pixels (Overlay Origin, 1-based
    row\\column); each outline is :func:`outline_width` pixels wide, inside the box, dashed for a
    dashed box style (indeterminate). Overlay
    Data: one bit per pixel, row by row, the first pixel in the lowest bit of the first byte
    (PS3.5 8.1.2), padded to an even length. Returns "rows x columns" of the bitmap (for logs);
    None, and no overlay, where the origin is beyond what Overlay Origin (SS) can hold.
    """
    rows, columns = finding.rows, finding.columns
    extents = [_pixel_extent(box, rows, columns) for box in finding.boxes]
    top, left = min(e[0] for e in extents), min(e[1] for e in extents)
    if max(top, left) + 1 > _SS_MAX:
        return None  # an image over 32,767 pixels: the vector outlines alone
    bottom, right = max(e[2] for e in extents), max(e[3] for e in extents)
    width = outline_width(rows, columns)
    style = box_style(finding.decision)
    dashed = style is not None and style.dashed
    bitmap = np.zeros((bottom - top, right - left), dtype=bool)
    for r0, c0, r1, c1 in extents:
        r0, r1, c0, c1 = r0 - top, r1 - top, c0 - left, c1 - left
        # dashed (indeterminate): the dashes of the Secondary Capture, corners drawn
        cols = dash_mask(c1 - c0, width) if dashed else np.ones(c1 - c0, dtype=bool)
        rows_on = dash_mask(r1 - r0, width) if dashed else np.ones(r1 - r0, dtype=bool)
        for band in (slice(r0, min(r0 + width, r1)), slice(max(r1 - width, r0), r1)):
            bitmap[band, c0:c1] |= cols[None, :]
        for band in (slice(c0, min(c0 + width, c1)), slice(max(c1 - width, c0), c1)):
            bitmap[r0:r1, band] |= rows_on[:, None]
    data = np.packbits(bitmap.ravel(), bitorder="little").tobytes()
    if len(data) % 2:
        data += b"\0"
    group = OVERLAY_GROUP << 16
    ds.add_new(group | 0x0010, "US", bitmap.shape[0])  # Overlay Rows
    ds.add_new(group | 0x0011, "US", bitmap.shape[1])  # Overlay Columns
    ds.add_new(group | 0x0022, "LO", OVERLAY_DESCRIPTION)  # Overlay Description
    ds.add_new(group | 0x0040, "CS", "G")  # Overlay Type: graphics
    ds.add_new(group | 0x0045, "LO", "AUTOMATED")  # Overlay Subtype: algorithm output
    ds.add_new(group | 0x0050, "SS", [top + 1, left + 1])  # Overlay Origin, row\column
    ds.add_new(group | 0x0100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(group | 0x0102, "US", 0)  # Overlay Bit Position
    ds.add_new(group | 0x1001, "CS", LAYER)  # Overlay Activation Layer
    ds.add_new(group | 0x1500, "LO", OVERLAY_LABEL)  # Overlay Label
    ds.add_new(group | 0x3000, "OW", data)  # Overlay Data
    return f"{bitmap.shape[0]}x{bitmap.shape[1]}"
