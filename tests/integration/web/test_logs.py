"""No patient identifiers in the log: a radiologist's whole visit (login, worklist, study page,
API, images, a disagree review) through the real uvicorn server, with every log record of the
process captured at DEBUG."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import select

from storage.reviews import list_overrides
from storage.schema import Instance, Study
from xrayd.web.server import WebServer

from web_helpers import PASSWORDS, Web, make_web, seed_study

PATIENT_NAME = "Quibbleworth^Zenobia^Marigold"
PATIENT_ID = "PID-7Q3X-UNIQUE-9051"
#: loggers of the libraries that serve the app, besides the root logger
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "starlette")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Web, str]]:
    """The app behind the real uvicorn server of ``xrayd serve`` on a free loopback port.

    Plain http, so the session cookie is sent only without its Secure flag (httpx, unlike a
    browser, does not treat 127.0.0.1 as a secure origin)."""
    web = make_web(tmp_path / "data", web={"host": "127.0.0.1", "port": 0, "cookie_secure": False})
    server = WebServer(web.ctx)
    server.start()
    try:
        yield web, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop(timeout=10)
        web.storage.engine.dispose()


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:500]
    return found.group(1)


def _rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write for ``record``: message with its args, every extra
    attribute, and the formatted exception if any."""
    parts = [record.getMessage(), repr(record.args), repr(record.__dict__)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)


def test_no_patient_identifiers_in_the_web_logs(
    served: tuple[Web, str], caplog: pytest.LogCaptureFixture
) -> None:
    web, base = served

    caplog.set_level(logging.DEBUG)
    for name in SERVER_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    study = seed_study(
        web.sessions, web.ctx.spool, images=2, patient_name=PATIENT_NAME, patient_id=PATIENT_ID
    )
    with web.sessions() as session:
        study_uid = session.scalar(select(Study.study_instance_uid).where(Study.id == study))
        sop_uids = list(session.scalars(select(Instance.sop_instance_uid)))
    assert study_uid and len(sop_uids) == 2
    token = web.token("rad")

    with httpx.Client(base_url=base, timeout=30) as client:
        csrf = _csrf(client.get("/login").text)
        wrong = client.post(
            "/login", data={"username": "rad", "password": "not-it", "csrf_token": csrf}
        )
        assert wrong.status_code == 401  # logged as a failed login
        r = client.post(
            "/login",
            data={"username": "rad", "password": PASSWORDS["rad"], "csrf_token": _csrf(wrong.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text

        worklist = client.get("/worklist")
        assert worklist.status_code == 200 and f'data-study-id="{study}"' in worklist.text
        page = client.get(f"/studies/{study}")
        assert page.status_code == 200
        assert PATIENT_ID in page.text  # the page shows the patient: the log must not
        # what the viewport loads (DICOM, heatmap) and the no-script fallback (PNG)
        images = re.findall(
            r'(?:src|data-heatmap-url)="(/studies/\d+/(?:images|heatmaps)/\d+\.png)"', page.text
        )
        assert len(images) == 4
        for url in images:
            png = client.get(url)
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        dicoms = re.findall(r'data-dicom-url="(/studies/\d+/instances/\d+\.dcm)"', page.text)
        assert len(dicoms) == 2
        for url in dicoms:
            dcm = client.get(url)
            assert dcm.status_code == 200 and dcm.headers["content-type"] == "application/dicom"
        windowed = client.get(images[0], params={"wc": 1000, "ww": 200})
        assert windowed.status_code == 200

        api = {"Authorization": token["Authorization"]}
        assert client.get(f"/api/v1/studies/{study}", headers=api).status_code == 200
        assert client.get(f"/api/v1/studies/{study}/predictions", headers=api).status_code == 200
        assert client.get("/api/v1/studies", headers=api).status_code == 200

        review = client.post(
            f"/studies/{study}/review",
            data={
                "csrf_token": _csrf(page.text),
                "verdict": "disagree",
                "fracture": "absent",
                "count": "0",
                "body_part": "wrist",
                "hardware": "no",
                "comment": "no fracture",
            },
            follow_redirects=False,
        )
        assert review.status_code == 303, review.text
        saved = client.get(review.headers["location"])
        assert saved.status_code == 200 and "Review saved" in saved.text
    assert list_overrides(web.sessions, study_id=study)[1] == 1

    records = caplog.records
    # The capture saw the server thread and the web layer, not just this test's own thread.
    assert any(r.name.startswith("uvicorn") for r in records), {r.name for r in records}
    assert any(r.name == "xrayd.web.pages" and r.getMessage() == "login failed" for r in records)
    text = "\n".join(_rendered(r) for r in records) + "\n" + caplog.text
    secrets = [PATIENT_ID, *PATIENT_NAME.split("^"), study_uid, *sop_uids]
    for secret in secrets:
        assert secret not in text, secret
