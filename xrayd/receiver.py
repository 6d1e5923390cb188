"""The listener's sink: makes each received instance durable (spool file + database row).

Runs on the association's thread; does only what must happen before the acknowledgement.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.received import Peer, ReceivedInstance, uid_hash
from dicom_node.statuses import RejectReason, StoreStatus
from storage import jobs, registry
from storage.errors import StorageError
from storage.instances import InstanceRecord, StoreOutcome, record_instance
from storage.spool import Spool, StagedFile

LOGGER = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class SpoolingSink:
    """Implements :class:`dicom_node.received.InstanceSink` over the spool and the database."""

    def __init__(
        self,
        spool: Spool,
        sessions: sessionmaker[Session],
        *,
        min_free_bytes: int,
        release_ends_wait: bool = True,
        clock: Clock = utcnow,
        on_jobs_created: Callable[[], None] | None = None,
    ) -> None:
        self.spool = spool
        self.sessions = sessions
        self.min_free_bytes = min_free_bytes
        self.release_ends_wait = release_ends_wait
        self.clock = clock
        self.on_jobs_created = on_jobs_created

    def store(self, instance: ReceivedInstance) -> StoreStatus:
        sop = uid_hash(instance.sop_instance_uid)
        if free_bytes(self.spool.root) < self.min_free_bytes:
            LOGGER.error("refusing C-STORE %s: spool below its free-space low-water mark", sop)
            return StoreStatus.OUT_OF_RESOURCES
        # The content digest names the file, so a conflicting copy never overwrites the original.
        rel = self.spool.relative_path_for(
            instance.study_instance_uid, instance.sop_instance_uid, instance.sha256
        )
        try:
            size, digest = self.spool.install(
                StagedFile(path=instance.path, size=instance.size, sha256=instance.sha256), rel
            )
        except StorageError as exc:  # SpoolWriteError included
            LOGGER.error("refusing C-STORE %s: spool write failed: %s", sop, exc)
            return StoreStatus.OUT_OF_RESOURCES
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
            with self.sessions.begin() as session:
                outcome = record_instance(session, record)
                if outcome is StoreOutcome.CONFLICT:
                    registry.record_audit(
                        session,
                        actor=f"dicom:{instance.peer.calling_ae_title}",
                        action="instance.conflict",
                        object_type="instance",
                        object_id=sop,
                        detail={"kept_copy": rel, "host": instance.peer.host},
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
        return StoreStatus.SUCCESS

    def is_caller_allowed(self, calling_ae_title: str, host: str) -> bool:
        return registry.caller_allowed(self.sessions, calling_ae_title, host)

    def association_rejected(self, peer: Peer, reason: RejectReason) -> None:
        with self.sessions.begin() as session:
            registry.record_audit(
                session,
                actor=f"dicom:{peer.calling_ae_title}",
                action="association.rejected",
                object_type="association",
                object_id=None,
                detail={
                    "reason": reason.slug,
                    "host": peer.host,
                    "called_ae_title": peer.called_ae_title,
                },
            )

    def association_released(self, peer: Peer, study_instance_uids: frozenset[str]) -> None:
        if not self.release_ends_wait:
            return
        created = jobs.promote_studies_now(self.sessions, study_instance_uids, self.clock())
        if created and self.on_jobs_created is not None:
            self.on_jobs_created()
