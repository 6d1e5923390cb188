"""The web viewer and images beyond the [limits] (issue 15): refused from their header, with a
clear error, never decoded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bombs import MIB, deflate_bomb, measure, pixel_bomb
from dicom_factory import save
from web_helpers import Web, make_web, seed_study

BOMBS = {
    "j2k-8192": lambda: pixel_bomb(8192, 8192),
    "j2k-65535": lambda: pixel_bomb(65535, 65535),
    "rle-65535": lambda: pixel_bomb(65535, 65535, "rle"),
}


def _image_url(web: Web, study: int) -> str:
    page = web.client.get(f"/studies/{study}")
    assert page.status_code == 200  # the page itself is shown (the header is small)
    [url] = re.findall(r'src="(/studies/\d+/images/\d+\.png)"', page.text)
    return str(url)


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_an_image_too_large_is_refused_with_a_clear_error(web: Web, bomb: str) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    save(BOMBS[bomb](), web.ctx.spool.absolute(f"instances/{study}/0.dcm"))
    web.login("rad")
    url = _image_url(web, study)
    for params in ({}, {"wc": 1000, "ww": 400}):  # the image's own window, or one asked for
        response = web.client.get(url, params=params)
        assert response.status_code == 422
        assert "image too large to show" in response.text


def test_a_deflated_image_beyond_max_inflated_is_refused(tmp_path: Path) -> None:
    web = make_web(tmp_path / "data", limits={"max_inflated_mb": 16})
    try:
        study = seed_study(web.sessions, web.ctx.spool)
        deflate_bomb(web.ctx.spool.absolute(f"instances/{study}/0.dcm"), 64 * MIB)
        web.login("rad")
        response = web.client.get(_image_url(web, study))
        assert response.status_code == 422
        assert "image too large to show" in response.text
    finally:
        web.storage.engine.dispose()


def test_an_ordinary_image_is_still_shown(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    web.login("rad")
    response = web.client.get(_image_url(web, study))
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_the_viewer_refuses_a_bomb_without_a_large_allocation(tmp_path: Path, bomb: str) -> None:
    """A 252-byte JPEG 2000 declaring 8192 x 8192 made the viewer allocate ~1.7 GiB, and
    65535 x 65535 killed it; refused from the header, the peak RSS grows < 200 MiB."""
    path = save(BOMBS[bomb](), tmp_path / "bomb.dcm")
    probe: dict[str, Any] = measure(
        f"""
        from pathlib import Path
        from models.errors import NotAnalysable
        from xrayd.web.images import radiograph_png
        from dicom_factory import compress_j2k, compress_rle, make_radiograph, save
        warm = Path({str(tmp_path)!r})
        for n, ds in enumerate([compress_j2k(make_radiograph()), compress_rle(make_radiograph())]):
            radiograph_png(save(ds, warm / f"warm{{n}}.dcm"))  # decoders loaded before
        def show():
            try:
                return len(radiograph_png(Path({str(path)!r})))
            except NotAnalysable as exc:
                return str(exc)
        """,
        "show()",
    )
    assert "error" not in probe, probe
    assert probe["result"].startswith("'image too large: "), probe
    assert probe["growth_mib"] < 200, probe
