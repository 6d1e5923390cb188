"""Listener processes share one listening socket (``ListenerConfig.listen_fd``).

Each process accepts from the same socket; whichever is free first takes a connection. A
process that stops closes only its own copy: the others go on listening.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.scp import StoreSCP
from dicom_node.scu import RemoteAE, echo, store_datasets
from storage.schema import Instance

from dicom_factory import make_radiograph


def test_a_listener_on_a_shared_socket_accepts_and_leaves_the_socket_open(
    start_node: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node()
    second = StoreSCP(
        dataclasses.replace(node.scp.config, listen_fd=node.scp.listen_fd), node.sink
    )
    second.start()
    try:
        assert second.port == node.scp.port
        # The first listener finds nothing to accept (as when another process was quicker):
        # the connection can only be taken by the second one.
        first = node.scp._server

        def taken_elsewhere() -> Any:
            raise BlockingIOError("another process accepted it")

        monkeypatch.setattr(first, "get_request", taken_elsewhere)
        remote = RemoteAE("XRAYD", "127.0.0.1", node.scp.port)
        ds = make_radiograph()
        assert store_datasets(remote, "MODALITY", [ds]) == [0]
        with node.storage.sessions() as session:
            assert session.scalars(select(Instance.sop_instance_uid)).all() == [
                ds.SOPInstanceUID
            ]
        monkeypatch.undo()
    finally:
        second.stop(timeout=5)
    # The second listener has stopped; the first still listens on the same socket.
    assert echo(RemoteAE("XRAYD", "127.0.0.1", node.scp.port), "MODALITY") == 0
