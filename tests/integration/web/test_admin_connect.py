"""The admin home page says what a modality and a PACS must be configured with: our AE title,
address and port (issue 19: they were shown nowhere)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from web_helpers import make_web


def _field(html: str, dd_id: str) -> str:
    found = re.search(rf'<dd id="{dd_id}">([^<]*)</dd>', html)
    assert found is not None, dd_id
    return found.group(1)


@pytest.mark.parametrize(
    ("host", "address"), [("0.0.0.0", socket.getfqdn()), ("10.1.2.3", "10.1.2.3")]
)
def test_the_admin_page_names_our_ae_title_address_and_port(
    tmp_path: Path, host: str, address: str
) -> None:
    web = make_web(tmp_path / "data", node={"ae_title": "XRAYD_ED", "host": host, "port": 11112})
    try:
        client = web.login("admin")
        page = client.get("/admin")
        assert page.status_code == 200
        assert _field(page.text, "node-ae-title") == "XRAYD_ED"
        assert _field(page.text, "node-address") == address
        assert _field(page.text, "node-port") == "11112"
        assert _field(page.text, "node-tls") == "no (plain DICOM)"
    finally:
        web.storage.engine.dispose()
