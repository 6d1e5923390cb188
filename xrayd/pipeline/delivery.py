"""Sending result objects to their destinations: the outbox's sender thread.

A :class:`DeliveryWorker` loops claim → send → record (see :mod:`storage.outbox` for the
states): it claims the most urgent due delivery job of the ``delivery`` queue under its own
worker id (``<host>:<pid>:delivery-<index>``), looks its destination up in the registry, fetches
the result's file from the byte store (the spool, or an object store: a local temporary copy,
sent as a stream from that file and removed after the send; the bytes written when the result
was made, so a resend is byte-identical) and C-STOREs it with :func:`dicom_node.scu.send_file`,
then records ``sent``, a retry with backoff, or a dead letter (audited by the outbox), as the
holder of the job: a sender whose lease was lost cannot record a failure over another's claim.
Deliveries whose sender vanished (lease expired) are requeued (or dead-lettered on their last
attempt) by every sender: whenever it finds nothing to claim, and at least every
``poll_seconds`` while it is busy. With nothing due it waits until the next delivery falls
due (or a lease ends), at most ``poll_seconds``, or until a producer sets its
:class:`~xrayd.workers.analysis.Wakeup`. :meth:`DeliveryWorker.stop` lets the send in
hand finish and be recorded before the thread ends.

Logs name deliveries, results and destinations by their internal ids and names; UIDs appear
only hashed, at DEBUG; never patient data.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from config.settings import DeliverySettings, DestinationTLSSettings
from dicom_node.received import uid_log_tag
from dicom_node.scu import DEFAULT_MAX_PDU, OutgoingLimits, RemoteAE, SendOutcome, send_file
from dicom_node.tls import ClientTLS
from storage import outbox, peers
from storage.bytestore import (
    ByteStore,
    ByteStoreError,
    ByteStoreNotFoundError,
    ByteStoreUnavailableError,
    InvalidKeyError,
    LocalByteStore,
)
from storage.db import Sessions
from storage.spool import Spool
from xrayd.workers.base import LoopWorker, Wakeup

LOGGER = logging.getLogger(__name__)

Sender = Callable[[RemoteAE, Path], SendOutcome]
Recorded = Literal["sent", "retry", "dead", "stale"]


@dataclass(frozen=True)
class DeliveryOptions:
    """How deliveries are sent and retried.

    Each send is bounded (:class:`dicom_node.scu.OutgoingLimits`): ``connect_timeout_seconds``
    for the TCP connection and TLS handshake, ``send_timeout_seconds`` for the association
    negotiation, each DIMSE wait and every socket read or write, ``max_pdu_bytes`` for the
    PDUs a destination may send us. ``lease_seconds`` must exceed the slowest send (a send may
    take the connection plus a few times ``send_timeout_seconds``: association, DIMSE wait,
    release or abort), or a slow send can be overtaken by a second one. How many attempts a
    delivery gets is decided when it is queued (``[delivery] max_attempts``, kept by its queue
    job), not here.
    """

    calling_ae_title: str = "XRAYD"
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    send_timeout_seconds: float = 30.0
    lease_seconds: float = 600.0
    poll_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    max_pdu_bytes: int = DEFAULT_MAX_PDU

    def __post_init__(self) -> None:
        if min(self.retry_base_seconds, self.retry_max_seconds, self.poll_seconds) <= 0:
            raise ValueError("retry and poll intervals must be positive")
        if self.lease_seconds <= 3 * self.send_timeout_seconds:
            raise ValueError("lease_seconds must exceed three times send_timeout_seconds")
        _ = self.limits  # OutgoingLimits checks the connection bounds

    @property
    def limits(self) -> OutgoingLimits:
        """The bounds of each outgoing association."""
        return OutgoingLimits(
            timeout=self.send_timeout_seconds,
            connect_timeout=self.connect_timeout_seconds,
            max_pdu=self.max_pdu_bytes,
        )


def outgoing_limits(settings: DeliverySettings, *, at_most: float | None = None) -> OutgoingLimits:
    """The bounds of every outgoing association (deliveries and C-ECHOs) from ``[delivery]``;
    ``at_most`` caps both timeouts (an interactive C-ECHO gives up sooner, never later)."""
    timeout, connect = settings.send_timeout_seconds, settings.connect_timeout_seconds
    if at_most is not None:
        timeout, connect = min(timeout, at_most), min(connect, at_most)
    return OutgoingLimits(timeout=timeout, connect_timeout=connect, max_pdu=settings.max_pdu_bytes)


def stored_tls(tls: DestinationTLSSettings | None) -> dict[str, Any] | None:
    """A destination's TLS settings as the registry stores them (read back by
    :meth:`dicom_node.tls.ClientTLS.from_mapping`): unset keys left out, and
    ``check_hostname`` only when it is turned off (absent means checked)."""
    if tls is None:
        return None
    exclude = {"check_hostname"} if tls.check_hostname else set()
    return tls.model_dump(mode="json", exclude_none=True, exclude=exclude)


@dataclass(frozen=True)
class DeliveryReport:
    """One attempt, as recorded: what the send said and what the outbox made of it."""

    claim: outbox.ClaimedDelivery
    outcome: SendOutcome
    recorded: Recorded


class DeliveryWorker(LoopWorker):
    """Sends due deliveries until stopped; the send in hand is finished and recorded first.

    ``sender`` defaults to :func:`send_file` with the options' calling AE title and limits;
    ``on_report`` is called (on this thread) after each attempt is recorded.
    """

    what = "delivery"

    def __init__(
        self,
        sessions: Sessions,
        spool: Spool,
        options: DeliveryOptions,
        clock: Callable[[], datetime],
        stop: threading.Event,
        wakeup: Wakeup,
        *,
        index: int = 0,
        sender: Sender | None = None,
        on_report: Callable[[DeliveryReport], None] | None = None,
        store: ByteStore | None = None,
    ) -> None:
        """``store`` holds the result objects (default: the spool)."""
        super().__init__(f"xrayd-delivery-{index}", stop, wakeup, options.poll_seconds)
        #: the holder of this sender's claims: only it may record their outcome
        self.worker_id = sender_id(index)
        self.sessions = sessions
        self.spool = spool
        self.store: ByteStore = store or LocalByteStore(spool)
        self.options = options
        self.clock = clock
        self.sender: Sender = sender or self._send_file
        self.on_report = on_report
        self._last_sweep: datetime | None = None

    # -- thread ----------------------------------------------------------------------------

    def turn(self) -> bool:
        return self.run_once()

    def idle_seconds(self) -> float:
        """Until the next delivery falls due (or a lease ends), at most ``poll_seconds``."""
        poll = self.options.poll_seconds
        try:
            due = outbox.next_due_at(self.sessions)
        except Exception:
            LOGGER.exception("could not read the next due time")
            return poll
        if due is None:
            return poll
        # Never spin: a due row another sender holds locked right now is retried shortly.
        return min(poll, max(0.05, (due - self.clock()).total_seconds()))

    # -- one attempt -----------------------------------------------------------------------

    def run_once(self) -> bool:
        """Claim, send and record at most one delivery; returns whether there was one."""
        now = self.clock()
        swept = False
        if self._last_sweep is None or now - self._last_sweep >= timedelta(
            seconds=self.options.poll_seconds
        ):
            # while busy too: a lost delivery must not wait until the queue runs dry
            self._sweep(now)
            swept = True
        claim = self._claim(now)
        if claim is None and not swept and self._sweep(now):
            claim = self._claim(now)
        if claim is None:
            return False
        LOGGER.debug(
            "delivery %d: sending result %d (%s, sop %s) to %s, attempt %d",
            claim.delivery_id,
            claim.result_id,
            claim.kind,
            uid_log_tag(claim.sop_instance_uid or ""),
            claim.destination_name,
            claim.attempt,
        )
        outcome = self._attempt(claim)
        recorded = self._record(claim, outcome)
        report = DeliveryReport(claim, outcome, recorded)
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:
                LOGGER.exception("delivery report hook failed")
        return True

    def _claim(self, now: datetime) -> outbox.ClaimedDelivery | None:
        return outbox.claim_delivery(
            self.sessions, now, self.options.lease_seconds, worker_id=self.worker_id
        )

    def _sweep(self, now: datetime) -> bool:
        """Requeue (or dead-letter) deliveries whose sender vanished; whether any is due again."""
        self._last_sweep = now
        recovered = outbox.requeue_expired_deliveries(self.sessions, now)
        for delivery_id in recovered.requeued:
            LOGGER.warning("delivery %d: its sender stopped; due again", delivery_id)
        for delivery_id in recovered.dead:
            LOGGER.error(
                "delivery %d dead-lettered: its sender stopped on the last attempt", delivery_id
            )
        return bool(recovered.requeued)

    def _attempt(self, claim: outbox.ClaimedDelivery) -> SendOutcome:
        destination = peers.get_destination(self.sessions, claim.destination_name)
        if destination is None:
            return SendOutcome(False, False, None, "destination is no longer configured")
        tls: ClientTLS | None = None
        if destination.tls is not None:
            try:
                tls = ClientTLS.from_mapping(destination.tls)
            except ValueError as exc:
                return SendOutcome(False, False, None, f"destination's TLS settings: {exc}")
        if not claim.file_path:
            return SendOutcome(False, False, None, "the result has no file")
        remote = RemoteAE(destination.ae_title, destination.host, destination.port, tls=tls)
        try:
            with self.store.fetch(claim.file_path) as path:
                return self._send(claim, remote, path)
        except InvalidKeyError as exc:
            return SendOutcome(False, False, None, f"result file path refused: {exc}")
        except ByteStoreNotFoundError:
            return SendOutcome(False, False, None, "the result's file is missing from the store")
        except ByteStoreUnavailableError as exc:  # the store's trouble: try again later
            return SendOutcome(False, True, None, f"byte store unavailable: {exc}")
        except ByteStoreError as exc:
            return SendOutcome(False, True, None, f"cannot read the result's file: {exc}")

    def _send(self, claim: outbox.ClaimedDelivery, remote: RemoteAE, path: Path) -> SendOutcome:
        try:
            return self.sender(remote, path)
        except Exception as exc:  # a sender bug must not lose the delivery
            LOGGER.exception("delivery %d: sender raised", claim.delivery_id)
            return SendOutcome(False, True, None, f"sender error: {type(exc).__name__}")

    def _record(self, claim: outbox.ClaimedDelivery, outcome: SendOutcome) -> Recorded:
        opts = self.options
        now = self.clock()
        if outcome.ok:
            note = None if outcome.status in (None, 0) else outcome.message
            changed = outbox.delivery_sent(
                self.sessions, claim, now, status=outcome.status, note=note
            )
            LOGGER.info(
                "delivery %d: result %d sent to %s (attempt %d)",
                claim.delivery_id,
                claim.result_id,
                claim.destination_name,
                claim.attempt,
            )
            return "sent" if changed else "stale"
        recorded = outbox.delivery_failed(
            self.sessions,
            claim,
            now,
            transient=outcome.transient,
            status=outcome.status,
            error=outcome.message,
            base_delay_seconds=opts.retry_base_seconds,
            max_delay_seconds=opts.retry_max_seconds,
        )
        if recorded == "dead":
            LOGGER.error(
                "delivery %d: result %d to %s dead-lettered after %d attempt(s): %s",
                claim.delivery_id,
                claim.result_id,
                claim.destination_name,
                claim.attempt,
                outcome.message,
            )
        else:
            LOGGER.warning(
                "delivery %d: attempt %d to %s failed (%s): %s",
                claim.delivery_id,
                claim.attempt,
                claim.destination_name,
                "will retry" if recorded == "retry" else "stale claim",
                outcome.message,
            )
        return recorded

    def _send_file(self, remote: RemoteAE, path: Path) -> SendOutcome:
        return send_file(
            remote, path, calling_ae=self.options.calling_ae_title, limits=self.options.limits
        )


def sender_id(index: int) -> str:
    """The worker id of this process's delivery thread ``index`` (``<host>:<pid>:delivery-<i>``):
    stable for the thread's life, distinct from the analysis workers' ids."""
    return f"{socket.gethostname()}:{os.getpid()}:delivery-{index}"
