"""Outgoing associations: C-ECHO now; the results issue adds C-STORE of result objects."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.errors import PeerUnreachableError
from dicom_node.hardening import quiet_identifiers

LOGGER = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class RemoteAE:
    """A DICOM peer to connect to."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_remote(text: str) -> RemoteAE:
    """Parse ``AE@HOST:PORT`` (as the CLI takes it)."""
    ae, sep, rest = text.partition("@")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not ae or not host or not port.isdigit():
        raise ValueError(f"expected AE@HOST:PORT, got {text!r}")
    if len(ae) > 16 or "\\" in ae or not ae.isascii() or not ae.isprintable():
        raise ValueError(f"invalid AE title {ae!r}")
    port_no = int(port)
    if not 0 < port_no < 65536:
        raise ValueError(f"invalid port {port}")
    return RemoteAE(ae, host.strip("[]"), port_no)


def _associate(
    remote: RemoteAE,
    calling_ae_title: str,
    contexts: dict[str, list[str]],
    timeout: float,
) -> Association:
    """An established association proposing ``contexts`` (SOP class -> transfer syntaxes)."""
    quiet_identifiers()
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    for sop_class, syntaxes in contexts.items():
        if syntaxes:
            ae.add_requested_context(sop_class, syntaxes)
        else:
            ae.add_requested_context(sop_class)
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "refused"
        raise PeerUnreachableError(f"no association with {remote}: {why}")
    return assoc


def echo(remote: RemoteAE, calling_ae_title: str, timeout: float = 10.0) -> int:
    """Send a C-ECHO; returns the DIMSE status (0 on success).

    Raises :class:`PeerUnreachableError` when no association could be made.
    """
    assoc = _associate(remote, calling_ae_title, {VERIFICATION: []}, timeout)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in status:
        raise PeerUnreachableError(f"no C-ECHO response from {remote}")
    return int(status.Status)


def store_datasets(
    remote: RemoteAE,
    calling_ae_title: str,
    datasets: Sequence[Dataset],
    timeout: float = 30.0,
) -> list[int]:
    """C-STORE ``datasets`` over one association; returns each DIMSE status (-1: no response).

    Proposes one context per SOP class with the data sets' own transfer syntaxes.
    """
    contexts: dict[str, set[str]] = {}
    for ds in datasets:
        contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    assoc = _associate(
        remote, calling_ae_title, {k: sorted(v) for k, v in contexts.items()}, timeout
    )
    statuses: list[int] = []
    try:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses
