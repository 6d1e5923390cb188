"""What the study page gives its viewport (xrayd.web.viewport, templates/_viewport.html): each
image's DICOM address, boxes and heatmap in overlay_style's palette for "present" and
"indeterminate" only, the legend, the module script, and the PACS viewer link when a site sets
[web] pacs_viewer_url."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from config.settings import WebSettings
from dicom_node.overlay_style import LEGEND, box_style
from storage.reviews import study_review

from web_helpers import Web, make_web, seed_study

ATTRIBUTE = re.compile(r"data-([\w-]+)=['\"]([^'\"]*)['\"]")


def _figures(page: str) -> list[dict[str, str]]:
    tags = re.findall(r"<figure class=\"vp[^>]*>", page, flags=re.S)
    return [{k: html.unescape(v) for k, v in ATTRIBUTE.findall(tag)} for tag in tags]


@pytest.mark.parametrize("decision", ["present", "indeterminate"])
def test_a_flagged_study_gives_boxes_and_heatmap_in_the_palette(web: Web, decision: str) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision=decision, images=2)
    review = study_review(web.sessions, study)
    assert review is not None
    web.login("rad")
    page = web.client.get(f"/studies/{study}").text
    figures = _figures(page)
    assert len(figures) == 2
    style = box_style(decision)
    assert style is not None
    for image, figure in zip(review.images, figures, strict=True):
        assert figure["dicom-url"] == f"/studies/{study}/instances/{image.instance_id}.dcm"
        assert figure["heatmap-url"] == f"/studies/{study}/heatmaps/{image.instance_id}.png"
        assert figure["box-colour"] == style.hex
        assert figure["box-dashed"] == ("true" if style.dashed else "false")
        boxes = json.loads(figure["boxes"])
        expected = (image.prediction or {}).get("boxes") or []
        assert boxes == expected
        dicom = web.client.get(figure["dicom-url"])
        assert dicom.status_code == 200 and dicom.content[128:132] == b"DICM"
    for line in LEGEND:
        assert html.escape(line, quote=False) in page
    assert '<script type="module" src="/static/viewer/xrayd-viewport.js"></script>' in page
    assert "Open in PACS viewer" not in page  # not configured


def test_an_absent_study_gives_neither_boxes_nor_heatmap(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="absent", probability=0.1)
    web.login("rad")
    page = web.client.get(f"/studies/{study}").text
    [figure] = _figures(page)
    assert json.loads(figure["boxes"]) == []
    assert "box-colour" not in figure and "heatmap-url" not in figure
    assert 'id="show-heatmap" aria-keyshortcuts="H" disabled' in page


def test_the_pacs_viewer_link_names_the_study(tmp_path: Path) -> None:
    template = "https://pacs.example/viewer?StudyInstanceUIDs={study_uid}"
    web = make_web(tmp_path / "data", web={"pacs_viewer_url": template})
    try:
        study = seed_study(web.sessions, web.ctx.spool)
        review = study_review(web.sessions, study)
        assert review is not None
        web.login("rad")
        page = web.client.get(f"/studies/{study}").text
        [link] = re.findall(r'<a class="vp-pacs" href="([^"]+)"[^>]*>Open in PACS viewer</a>', page)
        uid = review.item.study_instance_uid
        assert html.unescape(link) == template.replace("{study_uid}", uid)
    finally:
        web.storage.engine.dispose()


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://pacs.example/viewer", "ftp://pacs/{study_uid}"]
)
def test_a_pacs_viewer_url_must_be_http_with_the_study(url: str) -> None:
    with pytest.raises(ValidationError, match="pacs_viewer_url"):
        WebSettings(pacs_viewer_url=url)
