"""The admin page and the admin API show a failed C-ECHO's cause and the fix to try, against
real loopback peers (a pynetdicom SCP that rejects the called AE title, a closed port)."""

from __future__ import annotations

import html
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from storage.peers import DestinationRow, add_destination

from web_helpers import Web


@pytest.fixture
def strict_pacs() -> Iterator[int]:
    """A Verification SCP (AE title PACS) that rejects any other called AE title."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    server = ae.start_server(("127.0.0.1", 0), block=False)
    assert server is not None
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _add(web: Web, name: str, ae_title: str, port: int) -> None:
    row = DestinationRow(name=name, ae_title=ae_title, host="127.0.0.1", port=port, send=("sr",))
    add_destination(web.sessions, row)


def _post_echo(web: Web, name: str) -> Any:
    form = {"csrf_token": web.csrf(page="/admin")}
    return web.client.post(f"/admin/destinations/{name}/echo", data=form, follow_redirects=False)


def test_page_and_api_name_a_wrong_called_ae_title_and_the_fix(web: Web, strict_pacs: int) -> None:
    _add(web, "typo", "PACS1", strict_pacs)
    web.login("admin")
    r = _post_echo(web, "typo")
    assert r.status_code == 200 and 'id="echo-failed"' in r.text
    page = html.unescape(r.text)
    assert "called AE title not recognised" in page
    assert '<dd id="echo-cause"><code>called-ae-unknown</code></dd>' in page
    assert "the PACS does not know the AE title you gave it (PACS1)" in page

    out = web.client.post("/api/v1/destinations/typo/echo", headers=web.token("admin")).json()
    assert out["ok"] is False and out["status"] is None
    assert out["cause"] == "called-ae-unknown"
    assert out["detail"].startswith(f"no association with PACS1@127.0.0.1:{strict_pacs}: rejected")
    assert "check the destination's AE title" in out["fix"]


def test_page_and_api_name_a_closed_port_and_the_fix(web: Web) -> None:
    port = _closed_port()
    _add(web, "closed", "PACS", port)
    web.login("admin")
    page = html.unescape(_post_echo(web, "closed").text)
    assert f"nothing listens on 127.0.0.1:{port}" in page
    assert '<dd id="echo-cause"><code>refused</code></dd>' in page
    assert '<dd id="echo-fix">check the port' in page

    out = web.client.post("/api/v1/destinations/closed/echo", headers=web.token("admin")).json()
    assert out["cause"] == "refused" and out["fix"].startswith("check the port")


def test_page_shows_no_cause_on_success(web: Web, strict_pacs: int) -> None:
    _add(web, "good", "PACS", strict_pacs)
    web.login("admin")
    r = _post_echo(web, "good")
    assert 'id="echo-ok"' in r.text and 'id="echo-cause"' not in r.text
    out = web.client.post("/api/v1/destinations/good/echo", headers=web.token("admin")).json()
    assert out["ok"] is True and out["cause"] == "ok" and out["fix"] is None
