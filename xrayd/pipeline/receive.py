"""The listener's sink: makes each received instance durable (its bytes + a database row).

Runs on the association's thread; does only what must happen before the acknowledgement.

Where the bytes go is the byte store of ``[object_store]`` (:mod:`storage.bytestore`); the
instance's key is its spool-relative path in both cases (``objects/<aa>/<bb>/<sha256(study)>/
<sha256(sop)[:40]>-<sha256(content)[:16]>.dcm``: hashes, never a raw UID).

* ``backend = "local"``: the listener's streamed file (already ``fdatasync``ed in the spool's
  ``tmp/``) is renamed into the spool and its directories are fsynced, then the row is
  committed, then the C-STORE is answered 0x0000 (Success).
* ``backend = "s3"``: the same fsynced temporary file is uploaded *synchronously*, before the
  acknowledgement, with :meth:`ByteStore.put_file` (which returns only after the server
  answered 200 to the whole object, each request carrying its body's Content-MD5, and the
  stored size was read back); then the row is committed; then 0x0000; the temporary file is
  removed. We chose the synchronous upload over "fsync locally, upload later by a durable job"
  because Success lets the modality delete its copy: after this order the image survives the
  loss of the listener's *host* (disk included), not only of its process, and no worker ever
  needs the listener's filesystem. The price is the upload's latency inside each C-STORE.

A store that cannot be used (network, credentials, server errors, a full disk) answers the
C-STORE 0xA700 (Out of Resources): the modality keeps its copy and may retry; nothing is
indexed and the log line names only hashes, never patient identifiers. A crash after the upload
and before the commit leaves an object no row names (harmless: a retransmission writes the same
bytes under the same key).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from dicom_node.received import Peer, ReceivedInstance, uid_log_tag
from dicom_node.statuses import RejectReason, StoreStatus
from storage import audit, jobs, peers
from storage.bytestore import ByteStore, ByteStoreError, LocalByteStore
from storage.db import Sessions
from storage.errors import StorageError
from storage.instances import InstanceRecord, StoreOutcome, store_received
from storage.spool import Spool, StagedFile

LOGGER = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


#: associations whose low-disk refusal was audited (one event per association, not per image)
_AUDITED_MEMORY = 256


class SpoolingSink:
    """Implements :class:`dicom_node.received.InstanceSink` over the byte store and the
    database.

    ``store`` (default: the spool itself, :class:`LocalByteStore`) is where the bytes go; any
    other store gets them uploaded from the spool's ``tmp/`` before the acknowledgement (see
    the module docstring).

    ``free_bytes`` measures the spool's filesystem (default: :meth:`Spool.usage`, i.e.
    ``os.statvfs``); below ``min_free_bytes`` each C-STORE is refused with 0xA700, logged,
    and audited once per association. ``on_stored(outcome)`` ("new", "duplicate", "conflict"),
    ``on_rejected(reason)`` and ``on_low_disk()`` observe what happened (metrics, retention).
    """

    def __init__(
        self,
        spool: Spool,
        sessions: Sessions,
        *,
        min_free_bytes: int,
        release_ends_wait: bool = True,
        max_attempts: int = jobs.DEFAULT_MAX_ATTEMPTS,
        clock: Clock = utcnow,
        on_jobs_created: Callable[[], None] | None = None,
        free_bytes: Callable[[], int] | None = None,
        on_stored: Callable[[str], None] | None = None,
        on_rejected: Callable[[str], None] | None = None,
        on_low_disk: Callable[[], None] | None = None,
        audit_rejection: Callable[[str, str, str], bool] | None = None,
        store: ByteStore | None = None,
    ) -> None:
        self.spool = spool
        #: None: the spool itself (rename into place); else uploaded before the acknowledgement
        self.object_store = None if store is None or isinstance(store, LocalByteStore) else store
        self.sessions = sessions
        self.min_free_bytes = min_free_bytes
        self.release_ends_wait = release_ends_wait
        #: ``[jobs] max_attempts`` of the jobs the release of an association creates
        self.max_attempts = max_attempts
        self.clock = clock
        self.on_jobs_created = on_jobs_created
        self.free_bytes = free_bytes or (lambda: spool.usage().free_bytes)
        self.on_stored = on_stored
        self.on_rejected = on_rejected
        self.on_low_disk = on_low_disk
        #: (host, calling AE, reason) -> whether this rejection gets its own audit row
        self.audit_rejection = audit_rejection
        self._lock = threading.Lock()
        self._low_disk_audited: OrderedDict[int, None] = OrderedDict()

    def store(self, instance: ReceivedInstance) -> StoreStatus:
        sop = uid_log_tag(instance.sop_instance_uid)
        if self.min_free_bytes > 0 and self.free_bytes() < self.min_free_bytes:
            LOGGER.error(
                "refusing C-STORE %s: spool below its free-space low-water mark",
                sop,
                extra={"sop": sop, "reason": "low_disk_space"},
            )
            self._low_disk_refused(instance.peer)
            return StoreStatus.OUT_OF_RESOURCES
        # The content digest names the file, so a conflicting copy never overwrites the original.
        rel = self.spool.relative_path_for(
            instance.study_instance_uid, instance.sop_instance_uid, instance.sha256
        )
        if self.object_store is None:
            try:
                size, digest = self.spool.install(
                    StagedFile(path=instance.path, size=instance.size, sha256=instance.sha256),
                    rel,
                )
            except StorageError as exc:  # SpoolWriteError included
                LOGGER.error("refusing C-STORE %s: spool write failed: %s", sop, exc)
                return StoreStatus.OUT_OF_RESOURCES
        else:
            if not self._upload(instance, rel, sop):
                return StoreStatus.OUT_OF_RESOURCES
            size, digest = instance.size, instance.sha256
        record = InstanceRecord(
            study_instance_uid=instance.study_instance_uid,
            series_instance_uid=instance.series_instance_uid,
            sop_instance_uid=instance.sop_instance_uid,
            sop_class_uid=instance.sop_class_uid,
            transfer_syntax_uid=instance.transfer_syntax_uid,
            modality=instance.modality,
            body_part_examined=instance.body_part_examined,
            spool_path=rel,
            size_bytes=size,
            sha256=digest,
            calling_ae_title=instance.peer.calling_ae_title,
            received_at=self.clock(),
        )
        try:
            outcome = store_received(
                self.sessions,
                record,
                actor=f"dicom:{instance.peer.calling_ae_title}",
                host=instance.peer.host,
            )
        except StorageError as exc:
            LOGGER.error("refusing C-STORE %s: database: %s", sop, exc)
            return StoreStatus.OUT_OF_RESOURCES
        except Exception:
            LOGGER.exception("refusing C-STORE %s: database error", sop)
            return StoreStatus.OUT_OF_RESOURCES
        log = LOGGER.warning if outcome is StoreOutcome.CONFLICT else LOGGER.info
        log(
            "stored %s from %r (%s, %d bytes)",
            sop,
            instance.peer.calling_ae_title,
            outcome.name.lower(),
            size,
            extra={"sop": sop, "outcome": outcome.name.lower()},
        )
        if self.on_stored is not None:
            self.on_stored(outcome.name.lower())
        return StoreStatus.SUCCESS

    def _upload(self, instance: ReceivedInstance, rel: str, sop: str) -> bool:
        """Upload the received (fsynced) file to the object store under ``rel``; whether it is
        stored. The temporary file is removed either way."""
        assert self.object_store is not None
        try:
            self.object_store.put_file(rel, instance.path)
        except ByteStoreError as exc:
            # the message names the store and the key (hashes), never the patient
            LOGGER.error(
                "refusing C-STORE %s: object store write failed: %s",
                sop,
                exc,
                extra={"sop": sop, "reason": "object_store_unavailable"},
            )
            return False
        except Exception as exc:  # an SDK error the store did not translate
            LOGGER.error(
                "refusing C-STORE %s: object store write failed (%s)",
                sop,
                type(exc).__name__,
                extra={"sop": sop, "reason": "object_store_unavailable"},
            )
            return False
        finally:
            try:
                instance.path.unlink(missing_ok=True)
            except OSError:
                LOGGER.warning("could not remove a received temporary file")
        return True

    def _low_disk_refused(self, peer: Peer) -> None:
        """Audit the first low-disk refusal of an association; tell ``on_low_disk``."""
        with self._lock:
            first = peer.association_id not in self._low_disk_audited
            if first:
                self._low_disk_audited[peer.association_id] = None
                while len(self._low_disk_audited) > _AUDITED_MEMORY:
                    self._low_disk_audited.popitem(last=False)
        if first:
            try:
                audit.record(
                    self.sessions,
                    actor=f"dicom:{peer.calling_ae_title}",
                    action=audit.Action.INSTANCE_REFUSED,
                    object_type="association",
                    detail={"reason": "low_disk_space", "status": "0xA700", "host": peer.host},
                )
            except Exception:
                LOGGER.exception("could not audit a low-disk refusal")
        if self.on_low_disk is not None:
            self.on_low_disk()

    def is_caller_allowed(self, calling_ae_title: str, host: str) -> bool:
        return peers.caller_allowed(self.sessions, calling_ae_title, host)

    def association_rejected(self, peer: Peer, reason: RejectReason) -> None:
        if self.on_rejected is not None:
            self.on_rejected(reason.slug)
        if reason is RejectReason.LOW_DISK_SPACE and self.on_low_disk is not None:
            self.on_low_disk()
        gate = self.audit_rejection
        if gate is not None and not gate(peer.host, peer.calling_ae_title, reason.slug):
            return  # counted into the next aggregate row instead
        audit.record(
            self.sessions,
            actor=f"dicom:{peer.calling_ae_title}",
            action=audit.Action.ASSOCIATION_REJECTED,
            object_type="association",
            detail={
                "reason": reason.slug,
                "host": peer.host,
                "called_ae_title": peer.called_ae_title,
            },
        )

    def association_released(self, peer: Peer, study_instance_uids: frozenset[str]) -> None:
        if not self.release_ends_wait:
            return
        created = jobs.promote_studies_now(
            self.sessions, study_instance_uids, self.clock(), max_attempts=self.max_attempts
        )
        if created and self.on_jobs_created is not None:
            self.on_jobs_created()
