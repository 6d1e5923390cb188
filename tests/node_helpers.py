"""Helpers for tests that talk to an in-process node (``start_node`` in the node conftest)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from sqlalchemy import select

from dicom_node.scu import RemoteAE, store_datasets
from dicom_node.statuses import StoreStatus
from storage.schema import Instance

from dicom_factory import DX, make_radiograph


def remote(node: Any) -> RemoteAE:
    """The node's listener as a peer to associate with."""
    return RemoteAE("XRAYD", "127.0.0.1", node.scp.port)


@contextlib.contextmanager
def release_handled(node: Any) -> Iterator[threading.Event]:
    """An event set once ``node``'s sink has handled an association's release (while inside).

    The sender's ``release()`` returns when the peer's A-RELEASE-RP arrives, which may be before
    the listener's association thread has run the sink's ``association_released`` (where, with
    ``release_ends_wait``, the study becomes complete and its job is queued). Waiting on the sink
    itself, not on time, makes "sent, so its job is queued" hold. Only an association that stored
    something reports its release.
    """
    handled = threading.Event()
    sink = node.sink
    original = sink.association_released

    def on_released(peer: Any, studies: frozenset[str]) -> None:
        try:
            original(peer, studies)
        finally:
            handled.set()

    sink.association_released = on_released
    try:
        yield handled
    finally:
        sink.association_released = original


def store_and_wait_for_release(
    node: Any, datasets: Sequence[Any], calling_ae: str = "MODALITY", timeout: float = 60.0
) -> list[int]:
    """C-STORE ``datasets`` to ``node`` over one association; return the statuses once the node
    has handled that association's release (see :func:`release_handled`)."""
    with release_handled(node) as handled:
        statuses = store_datasets(remote(node), calling_ae, list(datasets))
        if StoreStatus.SUCCESS in statuses:
            assert handled.wait(timeout), "the node did not handle the association's release"
    return statuses


def rows(node: Any, model: Any) -> list[Any]:
    """Every row of ``model`` in the node's database."""
    with node.storage.sessions() as session:
        return list(session.scalars(select(model)))


def stored_file(node: Any, sop_uid: str) -> Path:
    """Where the node's spool keeps the instance ``sop_uid``."""
    with node.storage.sessions() as session:
        inst = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one()
        path: Path = node.storage.spool.absolute(inst.spool_path)
        return path


def store_cut_off(node: Any, closed: threading.Event, on_pdu_sent: Callable[[Any], None]) -> None:
    """Send a 2 MB DX data set whose sender runs ``on_pdu_sent`` after each PDU it sends (a
    hook that cuts the connection off), then wait until the node has handled the close."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, "1.2.840.10008.1.2.1")
    assoc = ae.associate(
        "127.0.0.1", node.scp.port, ae_title="XRAYD", evt_handlers=[(evt.EVT_PDU_SENT, on_pdu_sent)]
    )
    assert assoc.is_established
    with contextlib.suppress(Exception):  # the sender sees its own connection die
        assoc.send_c_store(make_radiograph(rows=1024, cols=1024))
    assert closed.wait(timeout=60)
