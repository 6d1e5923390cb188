"""The overlay legend of the PDF report: each line of :mod:`dicom_node.overlay_style`'s legend
after a vector sample of what it names (the solid red box, the dashed amber box, the
blue-to-cyan heatmap ramp), in the colours the burned-in thumbnails use."""

from __future__ import annotations

from xml.sax.saxutils import escape

from reportlab.graphics.shapes import Drawing, Rect
from reportlab.lib import colors
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, Table, TableStyle

from dicom_node.overlay_style import (
    HEATMAP_HIGH,
    HEATMAP_LOW,
    LegendEntry,
    box_style,
    legend_for,
)

__all__ = ["overlay_legend"]

_SWATCH_WIDTH, _SWATCH_HEIGHT = 9 * mm, 4 * mm


def overlay_legend(width: float, style: ParagraphStyle) -> Table:
    """The overlay legend: each entry of overlay_style's legend after a sample of it."""
    rows = [[_swatch(entry), Paragraph(escape(entry.text), style)] for entry in legend_for(None)]
    table = Table(rows, colWidths=[_SWATCH_WIDTH + 4 * mm, width - _SWATCH_WIDTH - 4 * mm])
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return table


def _swatch(entry: LegendEntry) -> Drawing:
    """A vector sample: the box outline in its colour and dash, or the heatmap ramp."""
    drawing = Drawing(_SWATCH_WIDTH, _SWATCH_HEIGHT)
    if entry.swatch == "heatmap":
        steps = 24
        step = _SWATCH_WIDTH / steps
        for i in range(steps):
            t = i / (steps - 1)
            rgb = [lo + (hi - lo) * t for lo, hi in zip(HEATMAP_LOW, HEATMAP_HIGH, strict=True)]
            fill = colors.Color(*(v / 255 for v in rgb))
            drawing.add(
                Rect(i * step, 0, step + 0.3, _SWATCH_HEIGHT, fillColor=fill, strokeColor=None)
            )
        return drawing
    style = box_style(entry.swatch)
    if style is not None:
        drawing.add(
            Rect(
                1,
                1,
                _SWATCH_WIDTH - 2,
                _SWATCH_HEIGHT - 2,
                fillColor=None,
                strokeColor=colors.HexColor(style.hex),
                strokeWidth=1.6,
                strokeDashArray=[3, 2] if style.dashed else None,
            )
        )
    return drawing
