"""The spool's low-water mark (``node.min_free_mb``) over real loopback associations.

The free space is a dependency of the node (``Node(disk=...)``, default ``Spool.usage``, which
is ``os.statvfs``); these tests pass a callable whose value they change, and check that the
default really is the filesystem's figure.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE
from sqlalchemy import select

from dicom_node.statuses import StoreStatus
from storage.schema import AuditEvent, Instance
from storage.spool import DiskUsage
from xrayd.runtime.node import Node, open_storage

from dicom_factory import DX, make_radiograph
from helpers import make_settings

MIB = 1024 * 1024
PLENTY = 50_000 * MIB
LOW = 100 * MIB  # below the mark of 512 MiB


class FakeDisk:
    """A free-space figure the test sets (the filesystem itself is not touched)."""

    def __init__(self) -> None:
        self.free = PLENTY

    def __call__(self) -> DiskUsage:
        return DiskUsage(free_bytes=self.free, total_bytes=100_000 * MIB)


@pytest.fixture
def node_and_disk(database_url: str, tmp_path: Path) -> Iterator[tuple[Node, FakeDisk]]:
    settings = make_settings(tmp_path / "data", database_url, node={"min_free_mb": 512})
    disk = FakeDisk()
    node = Node(
        settings, open_storage(settings, create_if_empty=True, require_current=True), disk=disk
    )
    node.start()
    yield node, disk
    node.stop(timeout=5)


def _associate(port: int) -> Any:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, ["1.2.840.10008.1.2.1"])
    return ae.associate("127.0.0.1", port, ae_title="XRAYD")


def _audit(node: Node, action: str) -> list[AuditEvent]:
    with node.storage.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def _rejected_metric(node: Node) -> dict[str, float]:
    text = node.metrics.render().decode()
    family = next(
        f for f in text_string_to_metric_families(text) if f.name == "xrayd_associations_rejected"
    )
    return {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_low_disk_rejects_new_associations_and_refuses_stores_on_open_ones(
    node_and_disk: tuple[Node, FakeDisk], caplog: pytest.LogCaptureFixture
) -> None:
    node, disk = node_and_disk
    caplog.set_level(logging.INFO)
    first = make_radiograph(seed=1, patient_id="PAT-SECRET-7", patient_name="Doe^Jane")
    assoc = _associate(node.scp.port)
    assert assoc.is_established
    assert assoc.send_c_store(first).Status == StoreStatus.SUCCESS

    # The disk fills while the association is open: its C-STOREs get 0xA700.
    disk.free = LOW
    second = make_radiograph(seed=2, study_uid=first.StudyInstanceUID)
    third = make_radiograph(seed=3, study_uid=first.StudyInstanceUID)
    assert assoc.send_c_store(second).Status == StoreStatus.OUT_OF_RESOURCES
    assert assoc.send_c_store(third).Status == StoreStatus.OUT_OF_RESOURCES
    assoc.release()
    [refused] = _audit(node, "instance.refused")  # once per association, not per image
    assert refused.detail["reason"] == "low_disk_space"
    assert refused.actor == "dicom:MODALITY"

    # A new association is rejected as transient: rejected-transient (2), service provider
    # (presentation) (3), local limit exceeded (2); audited and logged.
    rejected = _associate(node.scp.port)
    assert rejected.is_rejected
    rj = rejected.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
    [event] = _audit(node, "association.rejected")
    assert event.detail["reason"] == "low_disk_space"
    assert "association rejected (low_disk_space)" in caplog.text
    assert "spool below its free-space low-water mark" in caplog.text
    for secret in ("PAT-SECRET-7", "Doe", str(first.StudyInstanceUID), str(second.SOPInstanceUID)):
        assert secret not in caplog.text
        assert secret not in str(refused.detail) + str(event.detail)
    assert _rejected_metric(node) == {"low_disk_space": 1.0}

    # Space is back: associations and stores succeed again.
    disk.free = PLENTY
    again = _associate(node.scp.port)
    assert again.is_established
    assert again.send_c_store(second).Status == StoreStatus.SUCCESS
    again.release()
    with node.storage.sessions() as session:
        assert len(list(session.scalars(select(Instance)))) == 2


def test_the_default_free_space_is_the_filesystems(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", database_url)
    node = Node(settings, open_storage(settings, create_if_empty=True, require_current=True))
    try:
        root = node.storage.spool.root
        st = os.statvfs(root)
        usage = node.disk()
        assert usage.total_bytes == st.f_blocks * st.f_frsize
        # Other processes write meanwhile: the same filesystem, give or take 64 MiB.
        assert abs(usage.free_bytes - st.f_bavail * st.f_frsize) < 64 * MIB
        assert node.free_bytes() > 0
        assert node.scp.config.free_bytes is not None
        assert node.scp.config.min_free_bytes == settings.node.min_free_mb * MIB
    finally:
        node.storage.engine.dispose()
