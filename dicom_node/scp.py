"""The DICOM listener: C-ECHO and C-STORE, thin handlers, bounded resources.

The C-STORE handler parses only the header, checks the UIDs against the request, and hands the
bytes to an :class:`~dicom_node.received.InstanceSink`, which makes them durable. No decoding of
pixels and no analysis happens on the network thread.
"""

from __future__ import annotations

import itertools
import logging
import ssl
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import UID
from pynetdicom import AE, evt

from dicom_node.bounded_dataset import (
    DEFAULT_MAX_INFLATED_BYTES,
    HeaderTooLarge,
    InflatedTooLarge,
    read_bounded_header,
)
from dicom_node.errors import ListenerStartError
from dicom_node.hardening import BoundedAssociationServer, quiet_identifiers
from dicom_node.received import InstanceSink, Peer, ReceivedInstance, uid_log_tag
from dicom_node.sop_classes import ACCEPTED_TRANSFER_SYNTAXES, storage_sop_classes
from dicom_node.statuses import RejectReason, StoreStatus
from dicom_node.streaming import NewPath, StreamingFile, install_streaming
from dicom_node.uids import identify_ae

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.events import Event

LOGGER = logging.getLogger(__name__)

VERIFICATION = UID("1.2.840.10008.1.1")

_HEADER_TAGS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
)


@dataclass(frozen=True)
class ListenerConfig:
    """Everything the listener needs, as plain values (built from settings by ``xrayd``)."""

    ae_title: str
    host: str
    port: int
    #: fresh paths to stream received data sets to (same filesystem as their final place)
    new_stream_path: NewPath
    accept_any_caller: bool = False
    max_associations: int = 16
    max_pdu_bytes: int = 4 * 1024 * 1024
    idle_timeout_seconds: float = 30.0
    extra_sop_classes: Sequence[str] = ()
    #: connections beyond max_associations that still get a proper A-ASSOCIATE-RJ
    reject_headroom: int = 4
    #: serve on this already listening socket, shared with the process that opened it,
    #: instead of binding one (host and port are then ignored)
    listen_fd: int | None = None
    #: DICOM TLS (see dicom_node.tls.server_context); None: plain DICOM. Each handshake must
    #: complete within idle_timeout_seconds.
    ssl_context: ssl.SSLContext | None = None
    #: free bytes where received data sets are written (None: not checked); below
    #: min_free_bytes new associations are rejected (transient, local limit exceeded)
    free_bytes: Callable[[], int] | None = None
    min_free_bytes: int = 0
    #: seconds from accept until the A-ASSOCIATE-RQ must be in (TLS handshake included)
    artim_timeout_seconds: float = 10.0
    #: live connections one source address may hold (0: no per-address cap)
    max_connections_per_host: int = 0
    #: largest C-STORE data set accepted; larger ones are answered 0xA700 (None: no limit)
    max_instance_bytes: int | None = None
    #: told of each TCP connection refused at accept, as (source address, reason); called on
    #: the accepting thread, so it must not block (count it, aggregate it)
    on_connection_refused: Callable[[str, str], None] | None = None
    #: a deflated data set inflating beyond this is refused with 0xA700 ([limits] max_inflated_mb)
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES


class HeaderError(ValueError):
    """The data set's identifying attributes are missing, invalid or disagree with the request."""

    def __init__(self, status: StoreStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _valid_uid(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and UID(value).is_valid


def read_header(
    source: Path | bytes,
    sop_class_uid: str,
    sop_instance_uid: str,
    *,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> tuple[str, str, str, str | None]:
    """Return (study UID, series UID, modality, body part) after checking the data set's UIDs.

    A deflated data set is inflated with bounded memory and refused once it inflates beyond
    ``max_inflated_bytes`` (see :mod:`dicom_node.bounded_dataset`).
    Raises :class:`HeaderError` with the status to answer.
    """
    try:
        ds = read_bounded_header(
            source, specific_tags=_HEADER_TAGS, max_inflated_bytes=max_inflated_bytes
        )
        values = {tag: ds.get(tag) for tag in _HEADER_TAGS}
    except (InflatedTooLarge, HeaderTooLarge) as exc:
        raise HeaderError(StoreStatus.OUT_OF_RESOURCES, str(exc)) from None
    except (
        InvalidDicomError,
        ValueError,
        EOFError,
        OSError,
        KeyError,
        TypeError,
        zlib.error,
        NotImplementedError,  # an unknown VR (found by fuzzing)
        BytesLengthException,  # a value of the wrong length for its VR (found by fuzzing)
        struct.error,  # a file meta element cut short (found by fuzzing)
    ) as exc:
        raise HeaderError(
            StoreStatus.CANNOT_UNDERSTAND, f"unparseable data set ({type(exc).__name__})"
        ) from None
    if not _valid_uid(sop_instance_uid) or not _valid_uid(sop_class_uid):
        raise HeaderError(StoreStatus.DATASET_MISMATCH, "request carries an invalid UID")
    for tag in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        if not _valid_uid(values[tag]):
            raise HeaderError(StoreStatus.DATASET_MISMATCH, f"{tag} missing or not a valid UID")
    if values["SOPInstanceUID"] != sop_instance_uid:
        raise HeaderError(StoreStatus.DATASET_MISMATCH, "SOPInstanceUID differs from the request")
    if values["SOPClassUID"] != sop_class_uid:
        raise HeaderError(StoreStatus.DATASET_MISMATCH, "SOPClassUID differs from the request")
    modality = str(values["Modality"] or "")[:16]
    body_part = values["BodyPartExamined"]
    return (
        str(values["StudyInstanceUID"]),
        str(values["SeriesInstanceUID"]),
        modality,
        str(body_part)[:64] if body_part else None,
    )


class StoreSCP:
    """A running (or ready to run) DICOM listener."""

    def __init__(self, config: ListenerConfig, sink: InstanceSink) -> None:
        self.config = config
        self.sink = sink
        self._server: BoundedAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._peers: dict[int, Peer] = {}
        self._studies: dict[int, set[str]] = {}

    # -- construction -------------------------------------------------------------------------
    def _make_ae(self) -> AE:
        quiet_identifiers()
        install_streaming()
        cfg = self.config
        ae = identify_ae(AE(ae_title=cfg.ae_title))
        ae.maximum_associations = cfg.max_associations
        ae.maximum_pdu_size = cfg.max_pdu_bytes
        ae.acse_timeout = cfg.artim_timeout_seconds  # also pynetdicom's ARTIM timer
        ae.dimse_timeout = cfg.idle_timeout_seconds
        ae.network_timeout = cfg.idle_timeout_seconds
        ae.require_called_aet = True
        ae.add_supported_context(VERIFICATION)
        for sop_class in storage_sop_classes(cfg.extra_sop_classes):
            ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))
        return ae

    def start(self) -> tuple[str, int]:
        """Bind and serve in a background thread; returns the bound (host, port)."""
        ae = self._make_ae()
        handlers: list[Any] = [
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        try:
            server = cast(
                BoundedAssociationServer,
                ae.make_server(
                    (self.config.host, self.config.port),
                    evt_handlers=handlers,
                    server_class=BoundedAssociationServer,
                    ssl_context=self.config.ssl_context,
                    listen_fd=self.config.listen_fd,
                ),
            )
        except OSError as exc:
            raise ListenerStartError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}"
            ) from None
        server.max_pdata = self.config.max_pdu_bytes
        server.max_connections = self.config.max_associations + self.config.reject_headroom
        server.accept_hook = self._accept_hook
        server.new_stream_path = self.config.new_stream_path
        server.handshake_timeout = self.config.artim_timeout_seconds
        server.artim_timeout = self.config.artim_timeout_seconds
        server.idle_timeout = self.config.idle_timeout_seconds
        server.max_per_host = self.config.max_connections_per_host
        server.max_instance_bytes = self.config.max_instance_bytes
        server.on_refused = self.config.on_connection_refused
        ae._servers.append(server)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="dicom-listener"
        )
        self._thread.daemon = True
        self._thread.start()
        host, port = server.server_address[:2]
        LOGGER.info(
            "DICOM listener %s on %s:%d%s",
            self.config.ae_title,
            host,
            port,
            " (TLS)" if self.config.ssl_context is not None else "",
        )
        return str(host), int(port)

    @property
    def port(self) -> int:
        assert self._server is not None, "listener not started"
        return int(self._server.server_address[1])

    @property
    def listen_fd(self) -> int:
        """The listening socket's descriptor, to share with listener processes."""
        assert self._server is not None, "listener not started"
        return self._server.listen_fd

    @property
    def refused_connections(self) -> int:
        return self._server.refused_connections if self._server is not None else 0

    @property
    def refused_by_reason(self) -> dict[str, int]:
        """TCP connections refused at accept so far, by reason."""
        return dict(self._server.refused_by_reason) if self._server is not None else {}

    def stop_accepting(self) -> None:
        """Close the listening socket; running associations continue."""
        if self._server is not None:
            self._server.shutdown()
            if self._thread is not None:
                self._thread.join(timeout=5)

    def active_associations(self) -> list[Association]:
        return [] if self._server is None else list(self._server.active_associations)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let running associations finish for ``timeout`` s, then abort them."""
        self.stop_accepting()
        for assoc in self.active_associations():
            assoc.join(timeout=timeout)
        for assoc in self.active_associations():
            assoc.abort()

    # -- association policy ---------------------------------------------------------------------
    def _peer_of(self, assoc: Association) -> Peer:
        rq = assoc.requestor
        primitive = rq.primitive
        assert primitive is not None
        return Peer(
            association_id=next(self._ids),
            calling_ae_title=str(primitive.calling_ae_title).strip(),
            called_ae_title=str(primitive.called_ae_title).strip(),
            host=str(rq.address),
        )

    def _accept_hook(self, assoc: Association) -> bool:
        """Apply the AE title and host policy; returns True when the association was rejected."""
        peer = self._peer_of(assoc)
        reason: RejectReason | None = None
        if peer.called_ae_title != self.config.ae_title:
            reason = RejectReason.CALLED_AE_NOT_RECOGNISED
        elif not self.config.accept_any_caller and not self._caller_allowed(peer):
            reason = RejectReason.CALLING_AE_NOT_RECOGNISED
        elif self._busy(assoc):
            reason = RejectReason.TOO_MANY_ASSOCIATIONS
        elif self._low_on_space():
            reason = RejectReason.LOW_DISK_SPACE
        if reason is None:
            with self._lock:
                self._peers[id(assoc)] = peer
            return False
        LOGGER.warning(
            "association rejected (%s): calling AE %r from %s to %r",
            reason.slug,
            peer.calling_ae_title,
            peer.host,
            peer.called_ae_title,
        )
        try:  # recorded before the peer hears of it
            self.sink.association_rejected(peer, reason)
        except Exception:
            LOGGER.exception("could not record an association rejection")
        assoc.acse.send_reject(*reason.wire)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
        return True

    def _caller_allowed(self, peer: Peer) -> bool:
        try:
            return self.sink.is_caller_allowed(peer.calling_ae_title, peer.host)
        except Exception:
            LOGGER.exception("caller lookup failed; rejecting")
            return False

    def _low_on_space(self) -> bool:
        """True below the free-space low-water mark (an unreadable figure does not refuse:
        each C-STORE is checked again before it is acknowledged)."""
        measure = self.config.free_bytes
        if measure is None or self.config.min_free_bytes <= 0:
            return False
        try:
            return measure() < self.config.min_free_bytes
        except Exception:
            LOGGER.exception("cannot measure the free space; accepting")
            return False

    def _busy(self, assoc: Association) -> bool:
        acceptors = [a for a in assoc.ae.active_associations if a.is_acceptor]
        return len(acceptors) > self.config.max_associations

    # -- handlers ---------------------------------------------------------------------------------
    def _on_echo(self, event: Event) -> int:
        return int(StoreStatus.SUCCESS)

    def _on_store(self, event: Event) -> int:
        assoc = event.assoc
        with self._lock:
            peer = self._peers.get(id(assoc))
        request = cast("C_STORE", event.request)
        stream = request._dataset_file
        if peer is None or not isinstance(stream, StreamingFile):
            # cannot happen after our accept hook and streaming set-up; refuse rather than guess
            return int(StoreStatus.PROCESSING_FAILURE)
        try:
            return int(self._store(event, peer, request, stream))
        finally:
            stream.discard()  # a no-op once the sink has moved the file into place

    def _store(
        self, event: Event, peer: Peer, request: C_STORE, stream: StreamingFile
    ) -> StoreStatus:
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        if stream.too_large:
            stream.end_of_data(abandon=True)
            LOGGER.warning(
                "C-STORE refused (0x%04X %s) from %r: data set larger than %d MiB "
                "(node.max_instance_mb)",
                StoreStatus.OUT_OF_RESOURCES,
                StoreStatus.OUT_OF_RESOURCES.name,
                peer.calling_ae_title,
                (stream.max_bytes or 0) // (1024 * 1024),
            )
            return StoreStatus.OUT_OF_RESOURCES
        # The header is checked while the flusher makes the last stretch durable.
        stream.end_of_data()
        header = None  # not read when the write failed: finish() raises that error
        if stream.error is None:
            try:
                header = read_header(
                    stream.path,
                    sop_class,
                    sop_instance,
                    max_inflated_bytes=self.config.max_inflated_bytes,
                )
            except HeaderError as exc:
                LOGGER.warning(
                    "C-STORE refused (0x%04X %s) from %r: %s",
                    exc.status,
                    exc.status.name,
                    peer.calling_ae_title,
                    exc.reason,
                )
                return exc.status
        try:
            size, digest = stream.finish()
        except OSError as exc:
            LOGGER.error(
                "C-STORE %s refused: writing it failed (%s)",
                uid_log_tag(sop_instance),
                exc.strerror or type(exc).__name__,
            )
            return StoreStatus.OUT_OF_RESOURCES
        if header is None:  # pragma: no cover - finish() raised the write error
            return StoreStatus.OUT_OF_RESOURCES
        study, series, modality, body_part = header
        instance = ReceivedInstance(
            path=stream.path,
            size=size,
            sha256=digest,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_instance,
            study_instance_uid=study,
            series_instance_uid=series,
            transfer_syntax_uid=str(event.context.transfer_syntax),
            modality=modality,
            body_part_examined=body_part,
            peer=peer,
        )
        try:
            status = self.sink.store(instance)
        except Exception:
            LOGGER.exception("C-STORE of %s failed unexpectedly", uid_log_tag(sop_instance))
            return StoreStatus.PROCESSING_FAILURE
        if status == StoreStatus.SUCCESS:
            with self._lock:
                self._studies.setdefault(id(event.assoc), set()).add(study)
        return status

    def _on_released(self, event: Event) -> None:
        with self._lock:
            peer = self._peers.get(id(event.assoc))
            studies = frozenset(self._studies.pop(id(event.assoc), set()))
        if peer is not None and studies:
            try:
                self.sink.association_released(peer, studies)
            except Exception:
                LOGGER.exception("could not mark studies complete on release")

    def _on_closed(self, event: Event) -> None:
        # A transfer cut off mid-data-set leaves its stream behind: remove it now.
        message = getattr(event.assoc.dimse, "message", None)
        stream = getattr(message, "_data_set_file", None)
        if isinstance(stream, StreamingFile):
            LOGGER.info("association closed mid-transfer: partial data set discarded")
            stream.discard()
        with self._lock:
            self._peers.pop(id(event.assoc), None)
            self._studies.pop(id(event.assoc), None)
