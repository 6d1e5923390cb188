"""What the study page's viewport (templates/_viewport.html, static/viewer/) needs per image:
where to read the DICOM object (xrayd.web.wado), the AI boxes and heatmap with their style from
``dicom_node.overlay_style`` (the palette the Secondary Capture and the PDF use; overlays only
for "present" and "indeterminate"), the legend, and the site's PACS viewer link."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from config.settings import WebSettings
from dicom_node.overlay_style import HEATMAP_HIGH, HEATMAP_LOW, LEGEND, box_style, hex_colour
from storage.reviews import StudyImage, StudyReview

__all__ = ["LegendEntry", "ViewportImage", "ViewportPage", "pacs_link", "viewport_page"]


@dataclass(frozen=True)
class ViewportImage:
    instance_id: int
    decision: str | None  # None: not analysed
    dicom_url: str  # the object, uncompressed (xrayd.web.wado)
    png_url: str  # a rendering, for a browser without scripts
    heatmap_url: str | None  # only for a result that calls for a look
    #: [[top, left, bottom, right], ...] in image pixels; empty for "absent"
    boxes: tuple[tuple[float, float, float, float], ...]
    box_colour: str | None
    box_dashed: bool


@dataclass(frozen=True)
class LegendEntry:
    kind: str  # "present", "indeterminate", "heatmap", "none": the swatch drawn beside it
    text: str


@dataclass(frozen=True)
class ViewportPage:
    images: tuple[ViewportImage, ...]
    legend: tuple[LegendEntry, ...]
    heatmap_low: str
    heatmap_high: str
    pacs_url: str | None


def _image(study_id: int, image: StudyImage) -> ViewportImage:
    prediction = image.prediction or {}
    decision = prediction.get("decision") if image.prediction is not None else None
    style = box_style(str(decision)) if decision is not None else None
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    if style is not None:
        boxes = tuple(
            (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            for b in prediction.get("boxes") or ()
            if len(b) == 4
        )
    base = f"/studies/{study_id}"
    return ViewportImage(
        instance_id=image.instance_id,
        decision=None if decision is None else str(decision),
        dicom_url=f"{base}/instances/{image.instance_id}.dcm",
        png_url=f"{base}/images/{image.instance_id}.png",
        heatmap_url=(
            f"{base}/heatmaps/{image.instance_id}.png"
            if style is not None and image.heatmap_path
            else None
        ),
        boxes=boxes,
        box_colour=style.hex if style is not None else None,
        box_dashed=style.dashed if style is not None else False,
    )


def _legend() -> tuple[LegendEntry, ...]:
    kinds = ("present", "indeterminate", "heatmap", "none")
    return tuple(LegendEntry(k, t) for k, t in zip(kinds, LEGEND, strict=False))


def pacs_link(template: str, study_instance_uid: str) -> str | None:
    """The site's PACS viewer URL for a study (``{study_uid}`` replaced, URL-quoted); None
    when no template is configured."""
    if not template:
        return None
    return template.replace("{study_uid}", quote(study_instance_uid, safe=""))


def viewport_page(review: StudyReview, web: WebSettings) -> ViewportPage:
    study_id = review.item.study_id
    return ViewportPage(
        images=tuple(_image(study_id, i) for i in review.images),
        legend=_legend(),
        heatmap_low=hex_colour(HEATMAP_LOW),
        heatmap_high=hex_colour(HEATMAP_HIGH),
        pacs_url=pacs_link(web.pacs_viewer_url, review.item.study_instance_uid),
    )
