"""What a peer sees of xrayd in the A-ASSOCIATE exchange: xrayd's Implementation Class UID and
Version Name, not pynetdicom's, both when xrayd sends (SCU) and when it receives (listener,
and the demo's local PACS). The peers are plain pynetdicom AEs in this process, on loopback."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom import __version__ as pynetdicom_version
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.local_pacs import LocalPacs
from dicom_node.received import Peer, ReceivedInstance
from dicom_node.scp import ListenerConfig, StoreSCP
from dicom_node.scu import RemoteAE, echo, send_file
from dicom_node.statuses import RejectReason, StoreStatus
from dicom_node.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

from dicom_factory import DX, make_radiograph

PYNETDICOM_NAME = "PYNETDICOM_" + pynetdicom_version.replace(".", "")[:5]


class _Peer:
    """A pynetdicom storage SCP that notes the requestor's implementation identity."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="PEER")
        ae.add_supported_context(DX, ExplicitVRLittleEndian)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._note), (evt.EVT_C_ECHO, self._note)]
        self.server: Any = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = int(self.server.socket.getsockname()[1])

    def _note(self, event: Any) -> int:
        requestor = event.assoc.requestor
        with self._lock:
            self.seen.append(
                (str(requestor.implementation_class_uid), requestor.implementation_version_name)
            )
        return 0x0000


@pytest.fixture
def peer() -> Iterator[_Peer]:
    p = _Peer()
    try:
        yield p
    finally:
        p.server.shutdown()


def test_our_scu_announces_xrayd(peer: _Peer, tmp_path: Path) -> None:
    path = tmp_path / "image.dcm"
    make_radiograph().save_as(path, enforce_file_format=True)
    remote = RemoteAE("PEER", "127.0.0.1", peer.port)
    outcome = send_file(remote, path, calling_ae="XRAYD", timeout=20)
    assert outcome.ok, outcome
    assert echo(remote, "XRAYD", timeout=20) == 0
    assert peer.seen == [(IMPLEMENTATION_CLASS_UID, implementation_version_name())] * 2


class _AnyCaller:
    """The listener's sink for a C-ECHO-only test: every caller allowed, nothing stored."""

    def store(self, instance: ReceivedInstance) -> StoreStatus:
        return StoreStatus.PROCESSING_FAILURE

    def is_caller_allowed(self, calling_ae_title: str, host: str) -> bool:
        return True

    def association_rejected(self, peer: Peer, reason: RejectReason) -> None:
        pass

    def association_released(self, peer: Peer, study_instance_uids: frozenset[str]) -> None:
        pass


def _acceptor_identity(port: int, called: str) -> tuple[str, str | None]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
        acceptor = assoc.acceptor
        return str(acceptor.implementation_class_uid), acceptor.implementation_version_name
    finally:
        assoc.release()


def test_our_listener_answers_as_xrayd(tmp_path: Path) -> None:
    counter = itertools.count()
    scp = StoreSCP(
        ListenerConfig(
            ae_title="XRAYD",
            host="127.0.0.1",
            port=0,
            new_stream_path=lambda: tmp_path / f"{next(counter)}.part",
            accept_any_caller=True,
        ),
        _AnyCaller(),
    )
    _, port = scp.start()
    try:
        identity = _acceptor_identity(port, "XRAYD")
    finally:
        scp.stop(timeout=5)
    assert identity == (IMPLEMENTATION_CLASS_UID, implementation_version_name())
    assert identity[1] != PYNETDICOM_NAME


def test_demo_pacs_answers_as_xrayd(tmp_path: Path) -> None:
    pacs = LocalPacs(tmp_path)
    port = pacs.start()
    try:
        identity = _acceptor_identity(port, "DEMO-PACS")
    finally:
        pacs.stop()
    assert identity == (IMPLEMENTATION_CLASS_UID, implementation_version_name())
