"""What the listener hands to the rest of xrayd: plain data, no pynetdicom objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicom_node.statuses import RejectReason, StoreStatus


@dataclass(frozen=True)
class Peer:
    """The remote end of an association."""

    association_id: int
    calling_ae_title: str
    called_ae_title: str
    host: str


@dataclass(frozen=True, repr=False)
class ReceivedInstance:
    """One C-STORE'd instance, already durable in a file of DICOM file format.

    ``path`` lies in the listener's stream directory; its bytes (preamble, file meta, data set
    exactly as received) have been ``fdatasync``ed. The sink moves it into place or lets the
    listener remove it.
    """

    path: Path
    size: int
    sha256: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    modality: str
    body_part_examined: str | None
    peer: Peer

    def __repr__(self) -> str:  # never print UIDs or bytes by accident
        return f"ReceivedInstance(sop={uid_log_tag(self.sop_instance_uid)}, {self.size} B)"


def uid_log_tag(uid: str) -> str:
    """A short, stable, non-reversible handle for a UID in log lines."""
    return hashlib.sha256(uid.encode("ascii", "replace")).hexdigest()[:12]


class InstanceSink(Protocol):
    """Where the listener puts what it receives (implemented by the composition root).

    ``store`` must return only after the instance is durable (file renamed into place, its
    directory fsynced, row committed); the listener acknowledges with whatever status it
    returns, and removes the received file if it is still where it was.
    """

    def store(self, instance: ReceivedInstance) -> StoreStatus: ...

    def is_caller_allowed(self, calling_ae_title: str, host: str) -> bool: ...

    def association_rejected(self, peer: Peer, reason: RejectReason) -> None: ...

    def association_released(self, peer: Peer, study_instance_uids: frozenset[str]) -> None: ...
