"""storage.outbox on SQLite and PostgreSQL: queueing (a delivery and its queue job in one
transaction), claiming, ownership of claims, backoff, dead letters (also when the queue
dead-letters a lost job), retry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from storage import outbox, queue
from storage.audit import list_audit
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade
from storage.peers import DestinationRow, add_destination
from storage.schema import Delivery, Job, Result, Study

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
LEASE = 300.0
SENDER = "host:1:delivery-0"
OTHER = "host:2:delivery-0"


def s(n: float) -> timedelta:
    return timedelta(seconds=n)


@dataclass(frozen=True)
class Dest:
    name: str
    send: tuple[str, ...] = ("sr", "sc")


@pytest.fixture
def sm(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


_study_counter = iter(range(1, 10_000))


def make_result(
    sm: sessionmaker[Session], kind: str = "sr", *, file_path: str | None = None
) -> int:
    n = next(_study_counter)
    with sm.begin() as session:
        study = Study(
            study_instance_uid=f"1.2.826.0.1.{n}",
            state="analysed",
            first_received_at=T0,
            last_received_at=T0,
        )
        session.add(study)
        session.flush()
        result = Result(
            study_id=study.id,
            kind=kind,
            sop_instance_uid=f"1.2.826.0.2.{n}",
            file_path=file_path or f"results/{n}.dcm",
        )
        session.add(result)
        session.flush()
        return result.id


def delivery(sm: sessionmaker[Session], delivery_id: int) -> Delivery:
    with sm() as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        return found


def jobs_of(sm: sessionmaker[Session], delivery_id: int) -> list[Job]:
    """The delivery's queue jobs, oldest first."""
    with sm() as session:
        return list(
            session.scalars(
                select(Job)
                .where(Job.kind == outbox.DELIVER, Job.ref_id == delivery_id)
                .order_by(Job.id)
            ).all()
        )


def job_of(sm: sessionmaker[Session], delivery_id: int) -> Job:
    """The delivery's one queue job."""
    (job,) = jobs_of(sm, delivery_id)
    return job


def due(sm: sessionmaker[Session], delivery_id: int) -> datetime:
    """When the delivery's queued job falls due."""
    job = job_of(sm, delivery_id)
    assert job.state == "queued"
    return job.next_attempt_at


def queued(
    sm: sessionmaker[Session],
    kind: str = "sr",
    dest: str = "PACS",
    at: datetime = T0,
    max_attempts: int = 5,
) -> int:
    result_id = make_result(sm, kind)
    (delivery_id,) = outbox.queue_deliveries(
        sm, result_id, kind, [Dest(dest, (kind,))], now=at, max_attempts=max_attempts
    )
    return delivery_id


def fail(
    sm: sessionmaker[Session],
    claim: outbox.ClaimedDelivery,
    now: datetime,
    *,
    transient: bool = True,
    status: int | None = 0xA700,
    jitter: float | None = 1.0,
) -> outbox.FailureOutcome:
    return outbox.delivery_failed(
        sm,
        claim,
        now,
        transient=transient,
        status=status,
        error="status 0xA700 (out of resources)",
        base_delay_seconds=10,
        max_delay_seconds=100,
        jitter=None if jitter is None else (lambda: jitter),
    )


def claim(
    sm: sessionmaker[Session], now: datetime, worker_id: str = SENDER
) -> outbox.ClaimedDelivery:
    got = outbox.claim_delivery(sm, now, LEASE, worker_id=worker_id)
    assert got is not None
    return got


def no_claim(sm: sessionmaker[Session], now: datetime) -> bool:
    return outbox.claim_delivery(sm, now, LEASE, worker_id=SENDER) is None


# -- queueing --------------------------------------------------------------------------------


def test_queue_one_row_per_destination_that_receives_the_kind(sm: sessionmaker[Session]) -> None:
    dests = [Dest("A", ("sr", "sc")), Dest("B", ("sr",)), Dest("C", ("pdf",))]
    sr, sc, pdf = make_result(sm, "sr"), make_result(sm, "sc"), make_result(sm, "pdf")
    assert len(outbox.queue_deliveries(sm, sr, "sr", dests, now=T0)) == 2
    assert len(outbox.queue_deliveries(sm, sc, "sc", dests, now=T0, max_attempts=3)) == 1
    assert len(outbox.queue_deliveries(sm, pdf, "pdf", dests, now=T0)) == 1
    rows = outbox.list_deliveries(sm)
    assert sorted((r.result_id, r.destination_name, r.kind) for r in rows) == sorted(
        [(sr, "A", "sr"), (sr, "B", "sr"), (sc, "A", "sc"), (pdf, "C", "pdf")]
    )
    assert {(r.state, r.attempts, r.next_attempt_at) for r in rows} == {("pending", 0, T0)}
    # each with one queued job of the delivery queue, on the result's study
    for r in rows:
        job = job_of(sm, r.delivery_id)
        assert (job.queue, job.kind, job.state, job.attempts) == (
            "delivery",
            "deliver",
            "queued",
            0,
        )
        assert (job.study_id, job.next_attempt_at) == (r.study_id, T0)
        assert job.lock == f"delivery:{r.delivery_id}"
        assert job.queueing_lock == f"deliver:{r.delivery_id}"
        assert job.max_attempts == (3 if r.kind == "sc" else outbox.DEFAULT_MAX_ATTEMPTS)
    assert outbox.queue_deliveries(sm, make_result(sm, "sr"), "sr", [Dest("C", ("pdf",))]) == []
    with pytest.raises(ValueError, match="max_attempts"):
        outbox.queue_deliveries(sm, sr, "sr", dests, now=T0, max_attempts=0)


def test_queue_is_idempotent_in_any_state(sm: sessionmaker[Session]) -> None:
    result_id = make_result(sm, "sr")
    dests = [Dest("A"), Dest("B")]
    with sm.begin() as session:  # in the caller's transaction
        first = outbox.queue_deliveries(session, result_id, "sr", dests, now=T0)
    assert len(first) == 2
    assert outbox.queue_deliveries(sm, result_id, "sr", dests, now=T0 + s(5)) == []
    assert [len(jobs_of(sm, d)) for d in first] == [1, 1]  # no second job either
    c = claim(sm, T0)
    outbox.delivery_sent(sm, c, T0)
    # a destination added later gets its row; the sent one is not queued again
    again = outbox.queue_deliveries(sm, result_id, "sr", [*dests, Dest("C")], now=T0 + s(9))
    assert len(again) == 1
    states = {r.destination_name: r.state for r in outbox.list_deliveries(sm)}
    assert states == {"A": "sent", "B": "pending", "C": "pending"}
    assert [j.state for d in first for j in jobs_of(sm, d)] == ["done", "queued"]


def test_a_rolled_back_queueing_leaves_neither_delivery_nor_job(sm: sessionmaker[Session]) -> None:
    result_id = make_result(sm, "sr")
    with pytest.raises(RuntimeError), sm.begin() as session:
        assert len(outbox.queue_deliveries(session, result_id, "sr", [Dest("A")], now=T0)) == 1
        raise RuntimeError("recording the result failed")
    assert outbox.list_deliveries(sm) == []
    with sm() as session:
        assert queue.counts(session) == {}
    assert no_claim(sm, T0 + s(3600))
    assert outbox.next_due_at(sm) is None


def test_queue_reads_the_destinations_table_by_default(sm: sessionmaker[Session]) -> None:
    for name, send in (("PACS", ("sr", "sc")), ("ARCHIVE", ("pdf",))):
        add_destination(sm, DestinationRow(name, "AE", "127.0.0.1", 104, send, source="cli"))
    result_id = make_result(sm, "sc")
    assert len(outbox.queue_deliveries(sm, result_id, "sc", now=T0)) == 1
    assert [r.destination_name for r in outbox.list_deliveries(sm)] == ["PACS"]


def test_queueing_for_an_unknown_result_is_refused(sm: sessionmaker[Session]) -> None:
    with pytest.raises(outbox.ResultNotFoundError):
        outbox.queue_deliveries(sm, 424242, "sr", [Dest("A")], now=T0)
    assert outbox.list_deliveries(sm) == []


# -- claiming --------------------------------------------------------------------------------


def test_claim_takes_the_oldest_due_row_and_leases_it(sm: sessionmaker[Session]) -> None:
    later = queued(sm, at=T0)
    older = queued(sm, at=T0 - s(60))
    future = queued(sm, at=T0 + s(60))
    first = claim(sm, T0)
    assert (first.delivery_id, first.attempt, first.kind) == (older, 1, "sr")
    assert first.lease_expires_at == T0 + s(LEASE)
    assert (first.worker_id, first.job_id) == (SENDER, job_of(sm, older).id)
    assert first.file_path is not None and first.file_path.startswith("results/")
    assert first.sop_instance_uid is not None
    row = delivery(sm, older)
    assert (row.state, row.attempts) == ("pending", 1)
    job = job_of(sm, older)
    assert (job.state, job.attempts, job.worker_id) == ("running", 1, SENDER)
    assert job.lease_expires_at == T0 + s(LEASE)
    assert outbox.get_delivery(sm, older).next_attempt_at == T0 + s(LEASE)  # the lease's end
    assert claim(sm, T0).delivery_id == later
    assert no_claim(sm, T0)  # `future` is not due, the rest leased
    assert claim(sm, T0 + s(60)).delivery_id == future
    assert outbox.next_due_at(sm) == T0 + s(LEASE)


def test_a_crashed_senders_row_comes_back_when_its_lease_ends(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    first = claim(sm, T0)  # the sender dies without reporting
    assert no_claim(sm, T0 + s(LEASE - 1))
    assert outbox.requeue_expired_deliveries(sm, T0 + s(LEASE - 1)) == outbox.RecoveredDeliveries(
        (), ()
    )
    assert outbox.requeue_expired_deliveries(sm, T0 + s(LEASE + 1)) == outbox.RecoveredDeliveries(
        (delivery_id,), ()
    )
    assert due(sm, delivery_id) == T0 + s(LEASE + 1)  # due again at once
    second = claim(sm, T0 + s(LEASE + 1), OTHER)
    assert (second.delivery_id, second.attempt, second.job_id) == (delivery_id, 2, first.job_id)
    # the first sender's late failure report is stale; its late success report is accepted
    assert fail(sm, first, T0 + s(LEASE + 1)) == "stale"
    assert delivery(sm, delivery_id).last_error is None
    assert outbox.delivery_sent(sm, first, T0 + s(LEASE + 2))
    assert delivery(sm, delivery_id).state == "sent"
    assert job_of(sm, delivery_id).state == "done"  # the second sender's job is finished
    assert outbox.get_delivery(sm, delivery_id).next_attempt_at is None
    assert fail(sm, second, T0 + s(LEASE + 3)) == "stale"
    assert not outbox.delivery_sent(sm, second, T0 + s(LEASE + 3))
    assert no_claim(sm, T0 + s(10 * LEASE))


def test_a_sender_that_lost_its_claim_cannot_record_a_failure(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    first = claim(sm, T0)  # stalls past its lease
    outbox.requeue_expired_deliveries(sm, T0 + s(LEASE + 1))
    second = claim(sm, T0 + s(LEASE + 1), OTHER)
    assert second.attempt == 2
    # the same job, even the same attempt number would not help the first sender: it is
    # not the holder
    assert fail(sm, first, T0 + s(LEASE + 2), transient=False, status=0xA900) == "stale"
    assert fail(sm, first, T0 + s(LEASE + 2)) == "stale"
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("pending", 2, None, None)
    job = job_of(sm, delivery_id)
    assert (job.state, job.worker_id, job.attempts) == ("running", OTHER, 2)
    assert (job.lease_expires_at, job.last_error) == (
        second.lease_expires_at,
        queue.LEASE_EXPIRED_ERROR,
    )
    assert [e for e in list_audit(sm) if e.action == "delivery.dead"] == []
    # the second sender's claim is intact: its report counts
    assert fail(sm, second, T0 + s(LEASE + 3)) == "retry"
    assert due(sm, delivery_id) == T0 + s(LEASE + 3 + 20)  # backoff of its 2nd attempt


def test_a_job_whose_delivery_is_no_longer_pending_is_finished_unsent(
    sm: sessionmaker[Session],
) -> None:
    gone = queued(sm, at=T0 - s(2))
    sent = queued(sm, at=T0 - s(1))
    live = queued(sm, at=T0)
    with sm.begin() as session:  # e.g. recorded by a late report of an older sender
        session.execute(update(Delivery).where(Delivery.id == sent).values(state="sent"))
        session.execute(update(Delivery).where(Delivery.id == gone).values(state="dead"))
    c = claim(sm, T0)
    assert c.delivery_id == live
    assert [job_of(sm, d).state for d in (gone, sent, live)] == ["done", "done", "running"]
    assert (delivery(sm, sent).state, delivery(sm, gone).state) == ("sent", "dead")
    assert delivery(sm, sent).attempts == 0
    assert no_claim(sm, T0)


def test_a_late_success_cancels_the_job_queued_again(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    first = claim(sm, T0)
    outbox.requeue_expired_deliveries(sm, T0 + s(LEASE + 1))  # requeued, not claimed yet
    assert outbox.delivery_sent(sm, first, T0 + s(LEASE + 2))
    assert job_of(sm, delivery_id).state == "cancelled"
    assert delivery(sm, delivery_id).state == "sent"
    assert [e for e in list_audit(sm) if e.action == "delivery.dead"] == []
    assert no_claim(sm, T0 + s(10 * LEASE))
    assert outbox.next_due_at(sm) is None


def test_concurrent_claimers_never_share_a_delivery(sm: sessionmaker[Session]) -> None:
    ids = {queued(sm, dest=f"D{i}") for i in range(12)}
    barrier = threading.Barrier(4)
    got: list[int] = []
    lock = threading.Lock()

    def claimer(worker_id: str) -> None:
        barrier.wait()
        while (c := outbox.claim_delivery(sm, T0, LEASE, worker_id=worker_id)) is not None:
            with lock:
                got.append(c.delivery_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(ids)


# -- failures, backoff, dead letters -------------------------------------------------------------


def test_backoff_formula() -> None:
    assert outbox.backoff_seconds(1, 10, 100, 1.0) == 10
    assert outbox.backoff_seconds(3, 10, 100, 1.0) == 40
    assert outbox.backoff_seconds(5, 10, 100, 1.0) == 100  # capped
    assert outbox.backoff_seconds(500, 10, 100, 0.5) == 50
    assert outbox.backoff_seconds(2, 10, 100, 1.5) == 30


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_transient_failures_back_off_exponentially(
    sm: sessionmaker[Session], factor: float
) -> None:
    delivery_id = queued(sm, max_attempts=10)
    now = T0
    delays = []
    for attempt in range(1, 6):
        c = claim(sm, now)
        assert c.attempt == attempt
        assert fail(sm, c, now, jitter=factor) == "retry"
        row = delivery(sm, delivery_id)
        assert (row.state, row.attempts, row.last_status) == ("pending", attempt, 0xA700)
        next_at = due(sm, delivery_id)
        assert outbox.get_delivery(sm, delivery_id).next_attempt_at == next_at
        delays.append((next_at - now).total_seconds())
        assert no_claim(sm, next_at - s(0.001))
        now = next_at
    assert delays == [d * factor for d in (10, 20, 40, 80, 100)]


def test_random_jitter_stays_within_half_and_one_and_a_half(sm: sessionmaker[Session]) -> None:
    ids = [queued(sm, dest=f"D{i}") for i in range(20)]
    for _ in ids:
        c = claim(sm, T0)
        fail(sm, c, T0, jitter=None)
    delays = [(due(sm, i) - T0).total_seconds() for i in ids]
    assert all(5 <= d <= 15 for d in delays), delays
    assert len(set(delays)) > 1  # really random


def test_permanent_failure_is_a_dead_letter_at_once(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    c = claim(sm, T0)
    assert fail(sm, c, T0 + s(1), transient=False, status=0xA900) == "dead"
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts, row.last_status) == ("dead", 1, 0xA900)
    assert job_of(sm, delivery_id).state == "dead"
    assert outbox.get_delivery(sm, delivery_id).next_attempt_at is None
    assert no_claim(sm, T0 + s(10_000))
    (event,) = [e for e in list_audit(sm) if e.action == "delivery.dead"]
    assert event.object_id == str(delivery_id)
    assert event.detail["destination"] == "PACS"
    assert event.detail["reason"] == "permanent failure"
    assert event.detail["status"] == 0xA900


def test_attempts_are_bounded(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm, max_attempts=3)
    now = T0
    outcomes = []
    for _ in range(3):
        c = claim(sm, now)
        outcomes.append(fail(sm, c, now))
        if outcomes[-1] == "retry":
            now = due(sm, delivery_id)
    assert outcomes == ["retry", "retry", "dead"]
    assert (delivery(sm, delivery_id).state, delivery(sm, delivery_id).attempts) == ("dead", 3)
    assert job_of(sm, delivery_id).state == "dead"
    assert [e.detail["reason"] for e in list_audit(sm) if e.action == "delivery.dead"] == [
        "attempts exhausted"
    ]


def test_a_lost_last_attempt_ends_dead(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm, max_attempts=1)
    claim(sm, T0)  # the sender dies on the last attempt
    assert outbox.requeue_expired_deliveries(sm, T0 + s(LEASE - 1)).dead == ()
    assert no_claim(sm, T0 + s(LEASE + 1))
    recovered = outbox.requeue_expired_deliveries(sm, T0 + s(LEASE + 1))
    assert recovered == outbox.RecoveredDeliveries((), (delivery_id,))
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts, row.last_error) == ("dead", 1, outbox.LEASE_EXPIRED_ERROR)
    assert [e.detail["reason"] for e in list_audit(sm) if e.action == "delivery.dead"] == [
        "lease expired"
    ]


def test_the_queues_own_sweep_dead_letters_the_delivery_too(sm: sessionmaker[Session]) -> None:
    """Whoever sweeps the queue (any process, any queue filter), the delivery follows its
    job: dead, audited, in the same transaction."""
    swept = queued(sm, max_attempts=2)
    released = queued(sm, dest="OTHER", max_attempts=1)
    claim(sm, T0)
    outbox.requeue_expired_deliveries(sm, T0 + s(LEASE + 1))  # the first lost attempt
    # ... and both senders die, each on its delivery's last attempt
    assert claim(sm, T0 + s(LEASE + 1)).delivery_id == swept  # a lost job goes first
    assert claim(sm, T0 + s(LEASE + 100)).delivery_id == released
    assert queue.requeue_expired(sm, T0 + s(2 * LEASE + 2)) == 1  # the swept one's lease ended
    row = delivery(sm, swept)
    assert (row.state, row.attempts, row.last_error) == ("dead", 2, outbox.LEASE_EXPIRED_ERROR)
    assert job_of(sm, swept).state == "dead"
    assert delivery(sm, released).state == "pending"  # its lease runs until 2*LEASE + 100
    assert queue.release(sm, job_of(sm, released).id, T0 + s(2 * LEASE + 3))
    assert (delivery(sm, released).state, delivery(sm, released).last_error) == (
        "dead",
        outbox.RELEASED_ERROR,
    )
    dead = {e.object_id: e.detail for e in list_audit(sm) if e.action == "delivery.dead"}
    assert set(dead) == {str(swept), str(released)}
    assert dead[str(swept)]["reason"] == "lease expired"
    assert dead[str(swept)]["attempts"] == 2
    assert dead[str(released)]["reason"] == "sender gone"


def test_a_cancelled_job_leaves_a_visible_dead_delivery(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    assert queue.cancel(sm, job_of(sm, delivery_id).id, T0)
    row = delivery(sm, delivery_id)
    assert (row.state, row.last_error) == ("dead", outbox.CANCELLED_ERROR)
    assert [e.detail["reason"] for e in list_audit(sm) if e.action == "delivery.dead"] == [
        "cancelled"
    ]
    assert outbox.retry_delivery(sm, delivery_id, T0 + s(1))
    assert (job_of(sm, delivery_id).state, delivery(sm, delivery_id).state) == ("queued", "pending")


# -- operator actions ------------------------------------------------------------------------


def test_retry_one_dead_delivery(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    c = claim(sm, T0)
    fail(sm, c, T0, transient=False, status=0x0122)
    job_id = job_of(sm, delivery_id).id
    assert not outbox.retry_delivery(
        sm, queued(sm, dest="OTHER", at=T0 + s(200)), T0
    )  # pending: not dead
    assert outbox.retry_delivery(sm, delivery_id, T0 + s(100))
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts) == ("pending", 0)
    job = job_of(sm, delivery_id)  # the dead job, revived: still one job
    assert (job.id, job.state, job.attempts, job.next_attempt_at) == (
        job_id,
        "queued",
        0,
        T0 + s(100),
    )
    assert row.last_status == 0x0122  # the last failure stays visible until the next attempt
    again = claim(sm, T0 + s(100))
    assert (again.delivery_id, again.attempt) == (delivery_id, 1)
    with pytest.raises(outbox.DeliveryNotFoundError):
        outbox.retry_delivery(sm, 999_999, T0)


def test_retry_all_dead_deliveries(sm: sessionmaker[Session]) -> None:
    ids = [queued(sm, dest=name) for name in ("A", "A", "B")]
    for _ in ids:
        fail(sm, claim(sm, T0), T0, transient=False)
    live = queued(sm, dest="A")
    assert outbox.retry_dead_deliveries(sm, T0 + s(1), destination="B") == [ids[2]]
    assert outbox.retry_dead_deliveries(sm, T0 + s(2)) == ids[:2]
    assert outbox.retry_dead_deliveries(sm, T0 + s(3)) == []
    assert {r.delivery_id for r in outbox.list_deliveries(sm, "pending")} == {*ids, live}
    assert [job_of(sm, d).state for d in ids] == ["queued"] * 3


def test_a_retried_dead_delivery_is_sent_on_the_next_claim(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm, max_attempts=2)
    for attempt in (1, 2):
        c = claim(sm, T0 + s(attempt * 1000))
        fail(sm, c, T0 + s(attempt * 1000))
    assert delivery(sm, delivery_id).state == "dead"
    assert no_claim(sm, T0 + s(10_000))
    assert outbox.retry_dead_deliveries(sm, T0 + s(10_000)) == [delivery_id]
    job = job_of(sm, delivery_id)
    assert (job.state, job.attempts, job.max_attempts) == ("queued", 0, 2)
    c = claim(sm, T0 + s(10_000))
    assert (c.delivery_id, c.attempt, c.job_id) == (delivery_id, 1, job.id)
    assert outbox.delivery_sent(sm, c, T0 + s(10_001))
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts, row.last_status, row.sent_at) == (
        "sent",
        1,
        0,
        T0 + s(10_001),
    )
    assert job_of(sm, delivery_id).state == "done"


def test_a_dead_delivery_without_a_job_gets_one_when_retried(sm: sessionmaker[Session]) -> None:
    """Dead before the one queue (migration 0006 moves only pending deliveries)."""
    result_id = make_result(sm, "sr")
    with sm.begin() as session:
        session.add(
            Delivery(result_id=result_id, destination_name="PACS", state="dead", attempts=8)
        )
        session.flush()
    (row,) = outbox.list_deliveries(sm, "dead")
    assert row.next_attempt_at is None
    assert outbox.retry_delivery(sm, row.delivery_id, T0, max_attempts=4)
    job = job_of(sm, row.delivery_id)
    assert (job.state, job.attempts, job.max_attempts, job.study_id) == (
        "queued",
        0,
        4,
        row.study_id,
    )
    assert job.lock == f"delivery:{row.delivery_id}"
    c = claim(sm, T0)
    assert (c.delivery_id, c.attempt) == (row.delivery_id, 1)


def test_the_queues_own_retry_revives_the_delivery(sm: sessionmaker[Session]) -> None:
    """``xrayd queue retry`` (storage.queue.retry_dead) on a delivery job: pending again."""
    delivery_id = queued(sm)
    fail(sm, claim(sm, T0), T0, transient=False)
    assert queue.retry_dead(sm, T0 + s(1), queue="delivery") == [job_of(sm, delivery_id).id]
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts) == ("pending", 0)
    assert claim(sm, T0 + s(1)).delivery_id == delivery_id


def test_list_and_get(sm: sessionmaker[Session]) -> None:
    a = queued(sm, dest="A")
    b = queued(sm, dest="B")
    outbox.delivery_sent(sm, claim(sm, T0), T0, status=0xB000, note="status 0xB000 (coercion)")
    assert [r.delivery_id for r in outbox.list_deliveries(sm)] == [a, b]
    (sent,) = outbox.list_deliveries(sm, "sent")
    assert (sent.delivery_id, sent.last_status, sent.last_error, sent.next_attempt_at) == (
        a,
        0xB000,
        "status 0xB000 (coercion)",
        None,
    )
    assert outbox.list_deliveries(sm, "dead") == []
    assert outbox.list_deliveries(sm, limit=1)[0].delivery_id == a
    got = outbox.get_delivery(sm, b)
    assert (got.state, got.next_attempt_at) == ("pending", T0)
    with pytest.raises(ValueError, match="unknown delivery state"):
        outbox.list_deliveries(sm, "sending")
    with pytest.raises(outbox.DeliveryNotFoundError):
        outbox.get_delivery(sm, 424242)
