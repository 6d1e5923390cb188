"""The study PDF report: findings, thumbnails with overlays, model, thresholds, timings, disclaimer.

The thumbnails are the burned-in captures (:func:`dicom_node.overlay.render_overlay`); a legend
beside them shows each box style and the heatmap ramp of :mod:`dicom_node.overlay_style`, drawn
as vector samples in the same colours, so the report reads like the Secondary Capture and the
web viewer.

Rendered with reportlab in invariant mode (fixed creation date and document ID), so identical
inputs give identical bytes: the report can be regenerated and compared, and a resent
Encapsulated PDF is byte-identical.

The report is a clinical document and shows ``patient_label``; it never goes to a log, and it is
kept out of the PDF's metadata (title, subject), which indexing tools read without opening the
document. Text uses the standard Helvetica fonts (nothing embedded, nothing read from the
host); characters outside their Windows-1252 encoding are replaced by ASCII equivalents or "?".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from io import BytesIO
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image as PILImage
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from dicom_node.findings import ImageFinding, StudyFindings
from xrayd.pipeline.pdf_legend import overlay_legend

__all__ = ["DISCLAIMER", "render_pdf_report"]

DISCLAIMER = "AI result \u2014 not a diagnosis. Research software, not for clinical use."
TITLE = "xrayd AI fracture triage report"
#: Thumbnails are downscaled to at most this many pixels on their long side before embedding.
THUMBNAIL_MAX_PIXELS = 800
_THUMBNAILS_PER_ROW = 2
_THUMBNAIL_MAX_HEIGHT = 95 * mm
_MARGIN = 15 * mm

_REPLACEMENTS = str.maketrans({"\u2192": "->", "\u2190": "<-", "\u2265": ">=", "\u2264": "<="})


def render_pdf_report(
    findings: StudyFindings,
    thumbnails: Sequence[tuple[str, np.ndarray]],
    *,
    study_description: str,
    patient_label: str,
    timings: Mapping[str, float],
    generated_at: datetime,
) -> bytes:
    """The PDF bytes of the study report (A4, several pages when needed).

    ``thumbnails`` are (label, uint8 RGB (rows, cols, 3)) pairs, typically the burned-in
    overlays; ``timings`` are named durations in seconds (e.g. "received -> analysed s").
    """
    for label, image in thumbnails:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"thumbnail {label!r} must be uint8 (rows, cols, 3)")
    styles = _styles()
    buffer = BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=_MARGIN,
        rightMargin=_MARGIN,
        topMargin=_MARGIN,
        bottomMargin=_MARGIN + 6 * mm,
        title=TITLE,
        author="xrayd",
        subject="AI result - not a diagnosis",
        creator="xrayd",
        invariant=1,
    )
    story: list[Flowable] = []
    story += _header(findings, study_description, patient_label, generated_at, styles)
    story += _findings_table(findings.images, doc.width, styles)
    story += _not_analysed(findings, doc.width, styles)
    story += _model(findings, timings, doc.width, styles)
    story += _thumbnails(thumbnails, doc.width, styles)
    doc.build(story, onFirstPage=_footer, onLaterPages=_footer)
    return buffer.getvalue()


def _text(value: object) -> str:
    """Markup-safe text in Helvetica's encoding."""
    text = str(value).translate(_REPLACEMENTS)
    text = text.encode("cp1252", errors="replace").decode("cp1252")
    return escape(text)


def _styles() -> dict[str, ParagraphStyle]:
    sheet = getSampleStyleSheet()
    body = ParagraphStyle("xr-body", parent=sheet["BodyText"], fontSize=9.5, leading=12)
    return {
        "title": ParagraphStyle("xr-title", parent=sheet["Title"], fontSize=18, spaceAfter=4),
        "h2": ParagraphStyle(
            "xr-h2", parent=sheet["Heading2"], fontSize=12, spaceBefore=8, keepWithNext=1
        ),
        "body": body,
        "cell": ParagraphStyle("xr-cell", parent=body, fontSize=8, leading=9.5),
        "head": ParagraphStyle(
            "xr-head", parent=body, fontSize=8, leading=9.5, fontName="Helvetica-Bold"
        ),
        "disclaimer": ParagraphStyle(
            "xr-disclaimer",
            parent=body,
            fontName="Helvetica-Bold",
            fontSize=12.5,
            leading=16,
            textColor=colors.HexColor("#8B0000"),
            alignment=1,
        ),
        "decision": ParagraphStyle("xr-decision", parent=body, fontSize=13, leading=17),
        "caption": ParagraphStyle("xr-caption", parent=body, fontSize=8, leading=10, alignment=1),
    }


def _boxed(flowable: Flowable, width: float, border: colors.Color, fill: colors.Color) -> Table:
    table = Table([[flowable]], colWidths=[width])
    table.setStyle(
        TableStyle(
            [
                ("BOX", (0, 0), (-1, -1), 1.5, border),
                ("BACKGROUND", (0, 0), (-1, -1), fill),
                ("TOPPADDING", (0, 0), (-1, -1), 6),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
            ]
        )
    )
    return table


def _header(
    findings: StudyFindings,
    study_description: str,
    patient_label: str,
    generated_at: datetime,
    styles: dict[str, ParagraphStyle],
) -> list[Flowable]:
    width = A4[0] - 2 * _MARGIN
    decision = findings.decision.upper()
    rows = [
        ("Patient", patient_label or "-"),
        ("Study", study_description or "-"),
        ("Study Instance UID", findings.study_instance_uid),
        ("Generated", generated_at.isoformat(sep=" ", timespec="seconds")),
    ]
    info = Table(
        [
            [Paragraph(f"<b>{_text(k)}</b>", styles["cell"]), Paragraph(_text(v), styles["cell"])]
            for k, v in rows
        ],
        colWidths=[40 * mm, width - 40 * mm],
        hAlign="LEFT",
    )
    info.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return [
        Paragraph(_text(TITLE), styles["title"]),
        _boxed(
            Paragraph(_text(DISCLAIMER), styles["disclaimer"]),
            width,
            colors.HexColor("#8B0000"),
            colors.HexColor("#FFF3CD"),
        ),
        Spacer(1, 4 * mm),
        info,
        Spacer(1, 3 * mm),
        _boxed(
            Paragraph(
                f"Study AI decision: <b>fracture {_text(decision)}</b> &nbsp; "
                f"(probability {findings.fracture_probability:.2f}; "
                f"{len(findings.images)} image(s) analysed, "
                f"{len(findings.not_analysed)} not analysed)",
                styles["decision"],
            ),
            width,
            colors.grey,
            colors.HexColor("#F2F2F2"),
        ),
    ]


def _table(rows: list[list[Flowable]], widths: list[float]) -> Table:
    table = Table(rows, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#DDDDDD")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#F7F7F7")]),
            ]
        )
    )
    return table


def _findings_table(
    images: Sequence[ImageFinding], width: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    out: list[Flowable] = [Paragraph("Findings per image", styles["h2"])]
    if not images:
        return [*out, Paragraph("No image was analysed.", styles["body"])]
    cell, head = styles["cell"], styles["head"]
    header = [
        "#",
        "Series / instance",
        "Decision",
        "P(fracture)",
        "Count",
        "Body part",
        "Hardware",
        "Boxes",
    ]
    rows: list[list[Flowable]] = [[Paragraph(h, head) for h in header]]
    for n, image in enumerate(images, start=1):
        rows.append(
            [
                Paragraph(str(n), cell),
                Paragraph(
                    f"{_text(image.series_instance_uid)}<br/>{_text(image.sop_instance_uid)}",
                    cell,
                ),
                Paragraph(f"<b>{_text(image.decision)}</b>", cell),
                Paragraph(f"{image.fracture_probability:.2f}", cell),
                Paragraph(_text(image.count), cell),
                Paragraph(f"{_text(image.body_part)} ({image.body_part_probability:.2f})", cell),
                Paragraph(
                    f"{'yes' if image.hardware else 'no'} ({image.hardware_probability:.2f})", cell
                ),
                Paragraph(str(len(image.boxes)), cell),
            ]
        )
    fixed = [7, 18, 20, 13, 26, 20, 13]
    widths = [w * mm for w in fixed]
    widths.insert(1, width - sum(widths))
    return [*out, _table(rows, widths)]


def _not_analysed(
    findings: StudyFindings, width: float, styles: dict[str, ParagraphStyle]
) -> list[Flowable]:
    if not findings.not_analysed:
        return []
    cell, head = styles["cell"], styles["head"]
    rows: list[list[Flowable]] = [[Paragraph(h, head) for h in ("Instance", "SOP class", "Reason")]]
    for item in findings.not_analysed:
        rows.append(
            [
                Paragraph(_text(item.sop_instance_uid), cell),
                Paragraph(_text(item.sop_class_uid), cell),
                Paragraph(_text(item.reason), cell),
            ]
        )
    widths = [width * 0.4, width * 0.25, width * 0.35]
    return [Paragraph("Images not analysed", styles["h2"]), _table(rows, widths)]


def _model(
    findings: StudyFindings,
    timings: Mapping[str, float],
    width: float,
    styles: dict[str, ParagraphStyle],
) -> list[Flowable]:
    cell, head = styles["cell"], styles["head"]
    algorithm = findings.algorithm
    model_rows: list[list[Flowable]] = [
        [Paragraph("Model", head), Paragraph(_text(algorithm.name), cell)],
        [Paragraph("Version", head), Paragraph(_text(algorithm.version), cell)],
        [Paragraph("Weights SHA-256", head), Paragraph(_text(algorithm.weights_sha256), cell)],
    ]
    out: list[Flowable] = [
        Paragraph("Model", styles["h2"]),
        _table(model_rows, [40 * mm, width - 40 * mm]),
    ]
    if algorithm.parameters:
        rows: list[list[Flowable]] = [
            [Paragraph("Operating parameter", head), Paragraph("Value", head)]
        ]
        for key in sorted(algorithm.parameters):
            rows.append(
                [Paragraph(_text(key), cell), Paragraph(_text(algorithm.parameters[key]), cell)]
            )
        out += [
            Paragraph("Operating thresholds", styles["h2"]),
            _table(rows, [70 * mm, width - 70 * mm]),
        ]
    if timings:
        rows = [[Paragraph("Step", head), Paragraph("Seconds", head)]]
        for key, seconds in timings.items():
            rows.append([Paragraph(_text(key), cell), Paragraph(f"{seconds:.2f}", cell)])
        out += [Paragraph("Timings", styles["h2"]), _table(rows, [70 * mm, 30 * mm])]
    return out


def _thumbnails(
    thumbnails: Sequence[tuple[str, np.ndarray]],
    width: float,
    styles: dict[str, ParagraphStyle],
) -> list[Flowable]:
    if not thumbnails:
        return []
    cell_width = width / _THUMBNAILS_PER_ROW
    cells: list[list[Flowable]] = []
    for label, array in thumbnails:
        image = PILImage.fromarray(array, mode="RGB")
        scale = min(1.0, THUMBNAIL_MAX_PIXELS / max(image.size))
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, PILImage.Resampling.LANCZOS)
        fit = min((cell_width - 6 * mm) / image.width, _THUMBNAIL_MAX_HEIGHT / image.height)
        # JPEG: reportlab embeds it as is (DCTDecode); a PNG would be re-encoded in Python.
        jpeg = BytesIO()
        image.save(jpeg, format="JPEG", quality=88, optimize=False)
        jpeg.seek(0)
        picture = Image(jpeg, width=image.width * fit, height=image.height * fit)
        cells.append([picture, Paragraph(_text(label), styles["caption"])])
    rows: list[list[list[Flowable]]] = []
    for start in range(0, len(cells), _THUMBNAILS_PER_ROW):
        row = cells[start : start + _THUMBNAILS_PER_ROW]
        row += [[]] * (_THUMBNAILS_PER_ROW - len(row))
        rows.append(row)
    grid = Table(rows, colWidths=[cell_width] * _THUMBNAILS_PER_ROW, hAlign="LEFT")
    grid.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 8),
            ]
        )
    )
    # the legend stays on the page of the first thumbnails (a grid taller than a page splits)
    return [
        KeepTogether(
            [
                Paragraph("Images with AI overlay", styles["h2"]),
                overlay_legend(width, styles["cell"]),
                Spacer(1, 2 * mm),
                grid,
            ]
        )
    ]


def _footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica-Bold", 8)
    canvas.setFillColor(colors.HexColor("#8B0000"))
    canvas.drawString(_MARGIN, 10 * mm, _plain(DISCLAIMER))
    canvas.setFillColor(colors.black)
    canvas.setFont("Helvetica", 8)
    canvas.drawRightString(A4[0] - _MARGIN, 10 * mm, f"page {doc.page}")
    canvas.restoreState()


def _plain(text: str) -> str:
    return text.translate(_REPLACEMENTS).encode("cp1252", errors="replace").decode("cp1252")
