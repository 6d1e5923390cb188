"""storage.outbox on SQLite and PostgreSQL: queueing, claiming, backoff, dead letters, retry."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage import outbox
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade
from storage.registry import DestinationRow, add_destination, list_audit
from storage.schema import Delivery, Result, Study

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
LEASE = 300.0


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


def queued(
    sm: sessionmaker[Session], kind: str = "sr", dest: str = "PACS", at: datetime = T0
) -> int:
    result_id = make_result(sm, kind)
    (delivery_id,) = outbox.queue_deliveries(sm, result_id, kind, [Dest(dest, (kind,))], now=at)
    return delivery_id


def fail(
    sm: sessionmaker[Session],
    claim: outbox.ClaimedDelivery,
    now: datetime,
    *,
    transient: bool = True,
    status: int | None = 0xA700,
    max_attempts: int = 5,
    jitter: float | None = 1.0,
) -> outbox.FailureOutcome:
    return outbox.delivery_failed(
        sm,
        claim,
        now,
        transient=transient,
        status=status,
        error="status 0xA700 (out of resources)",
        max_attempts=max_attempts,
        base_delay_seconds=10,
        max_delay_seconds=100,
        jitter=None if jitter is None else (lambda: jitter),
    )


def claim(
    sm: sessionmaker[Session], now: datetime, max_attempts: int = 5
) -> outbox.ClaimedDelivery:
    got = outbox.claim_delivery(sm, now, LEASE, max_attempts=max_attempts)
    assert got is not None
    return got


# -- queueing --------------------------------------------------------------------------------


def test_queue_one_row_per_destination_that_receives_the_kind(sm: sessionmaker[Session]) -> None:
    dests = [Dest("A", ("sr", "sc")), Dest("B", ("sr",)), Dest("C", ("pdf",))]
    sr, sc, pdf = make_result(sm, "sr"), make_result(sm, "sc"), make_result(sm, "pdf")
    assert len(outbox.queue_deliveries(sm, sr, "sr", dests, now=T0)) == 2
    assert len(outbox.queue_deliveries(sm, sc, "sc", dests, now=T0)) == 1
    assert len(outbox.queue_deliveries(sm, pdf, "pdf", dests, now=T0)) == 1
    rows = outbox.list_deliveries(sm)
    assert sorted((r.result_id, r.destination_name, r.kind) for r in rows) == sorted(
        [(sr, "A", "sr"), (sr, "B", "sr"), (sc, "A", "sc"), (pdf, "C", "pdf")]
    )
    assert {(r.state, r.attempts, r.next_attempt_at) for r in rows} == {("pending", 0, T0)}
    assert outbox.queue_deliveries(sm, make_result(sm, "sr"), "sr", [Dest("C", ("pdf",))]) == []


def test_queue_is_idempotent_in_any_state(sm: sessionmaker[Session]) -> None:
    result_id = make_result(sm, "sr")
    dests = [Dest("A"), Dest("B")]
    with sm.begin() as session:  # in the caller's transaction
        first = outbox.queue_deliveries(session, result_id, "sr", dests, now=T0)
    assert len(first) == 2
    assert outbox.queue_deliveries(sm, result_id, "sr", dests, now=T0 + s(5)) == []
    c = claim(sm, T0)
    outbox.delivery_sent(sm, c, T0)
    # a destination added later gets its row; the sent one is not queued again
    again = outbox.queue_deliveries(sm, result_id, "sr", [*dests, Dest("C")], now=T0 + s(9))
    assert len(again) == 1
    states = {r.destination_name: r.state for r in outbox.list_deliveries(sm)}
    assert states == {"A": "sent", "B": "pending", "C": "pending"}


def test_queue_reads_the_destinations_table_by_default(sm: sessionmaker[Session]) -> None:
    for name, send in (("PACS", ("sr", "sc")), ("ARCHIVE", ("pdf",))):
        add_destination(sm, DestinationRow(name, "AE", "127.0.0.1", 104, send, source="cli"))
    result_id = make_result(sm, "sc")
    assert len(outbox.queue_deliveries(sm, result_id, "sc", now=T0)) == 1
    assert [r.destination_name for r in outbox.list_deliveries(sm)] == ["PACS"]


# -- claiming --------------------------------------------------------------------------------


def test_claim_takes_the_oldest_due_row_and_leases_it(sm: sessionmaker[Session]) -> None:
    later = queued(sm, at=T0)
    older = queued(sm, at=T0 - s(60))
    future = queued(sm, at=T0 + s(60))
    first = claim(sm, T0)
    assert (first.delivery_id, first.attempt, first.kind) == (older, 1, "sr")
    assert first.lease_expires_at == T0 + s(LEASE)
    assert first.file_path is not None and first.file_path.startswith("results/")
    assert first.sop_instance_uid is not None
    row = delivery(sm, older)
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, T0 + s(LEASE))
    assert claim(sm, T0).delivery_id == later
    assert outbox.claim_delivery(sm, T0, LEASE) is None  # `future` is not due, the rest leased
    assert claim(sm, T0 + s(60)).delivery_id == future
    assert outbox.next_due_at(sm) == T0 + s(LEASE)


def test_a_crashed_senders_row_comes_back_when_its_lease_ends(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    first = claim(sm, T0)  # the sender dies without reporting
    assert outbox.claim_delivery(sm, T0 + s(LEASE - 1), LEASE) is None
    second = claim(sm, T0 + s(LEASE))
    assert (second.delivery_id, second.attempt) == (delivery_id, 2)
    # the first sender's late failure report is stale; its late success report is accepted
    assert fail(sm, first, T0 + s(LEASE + 1)) == "stale"
    assert delivery(sm, delivery_id).last_error is None
    assert outbox.delivery_sent(sm, first, T0 + s(LEASE + 2))
    assert delivery(sm, delivery_id).state == "sent"
    assert fail(sm, second, T0 + s(LEASE + 3)) == "stale"
    assert not outbox.delivery_sent(sm, second, T0 + s(LEASE + 3))


def test_concurrent_claimers_never_share_a_delivery(sm: sessionmaker[Session]) -> None:
    ids = {queued(sm, dest=f"D{i}") for i in range(12)}
    barrier = threading.Barrier(4)
    got: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        barrier.wait()
        while (c := outbox.claim_delivery(sm, T0, LEASE)) is not None:
            with lock:
                got.append(c.delivery_id)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
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
    delivery_id = queued(sm)
    now = T0
    delays = []
    for attempt in range(1, 6):
        c = claim(sm, now, max_attempts=10)
        assert c.attempt == attempt
        assert fail(sm, c, now, max_attempts=10, jitter=factor) == "retry"
        row = delivery(sm, delivery_id)
        assert (row.state, row.last_status) == ("pending", 0xA700)
        delays.append((row.next_attempt_at - now).total_seconds())
        assert outbox.claim_delivery(sm, row.next_attempt_at - s(0.001), LEASE) is None
        now = row.next_attempt_at
    assert delays == [d * factor for d in (10, 20, 40, 80, 100)]


def test_random_jitter_stays_within_half_and_one_and_a_half(sm: sessionmaker[Session]) -> None:
    ids = [queued(sm, dest=f"D{i}") for i in range(20)]
    for _ in ids:
        c = claim(sm, T0)
        fail(sm, c, T0, jitter=None)
    delays = [(delivery(sm, i).next_attempt_at - T0).total_seconds() for i in ids]
    assert all(5 <= d <= 15 for d in delays), delays
    assert len(set(delays)) > 1  # really random


def test_permanent_failure_is_a_dead_letter_at_once(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    c = claim(sm, T0)
    assert fail(sm, c, T0 + s(1), transient=False, status=0xA900) == "dead"
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts, row.last_status) == ("dead", 1, 0xA900)
    assert outbox.claim_delivery(sm, T0 + s(10_000), LEASE) is None
    (event,) = [e for e in list_audit(sm) if e.action == "delivery.dead"]
    assert event.object_id == str(delivery_id)
    assert event.detail["destination"] == "PACS"
    assert event.detail["reason"] == "permanent failure"
    assert event.detail["status"] == 0xA900


def test_attempts_are_bounded(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    now = T0
    outcomes = []
    for _ in range(3):
        c = claim(sm, now, max_attempts=3)
        outcomes.append(fail(sm, c, now, max_attempts=3))
        now = delivery(sm, delivery_id).next_attempt_at
    assert outcomes == ["retry", "retry", "dead"]
    assert delivery(sm, delivery_id).state == "dead"
    assert [e.detail["reason"] for e in list_audit(sm) if e.action == "delivery.dead"] == [
        "attempts exhausted"
    ]


def test_a_lost_last_attempt_ends_dead(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    claim(sm, T0, max_attempts=1)  # the sender dies on the last attempt
    assert outbox.requeue_expired_deliveries(sm, T0 + s(LEASE - 1), max_attempts=1) == []
    assert outbox.claim_delivery(sm, T0 + s(LEASE + 1), LEASE, max_attempts=1) is None
    assert outbox.requeue_expired_deliveries(sm, T0 + s(LEASE + 1), max_attempts=1) == [delivery_id]
    row = delivery(sm, delivery_id)
    assert (row.state, row.last_error) == ("dead", outbox.LEASE_EXPIRED_ERROR)
    assert [e.detail["reason"] for e in list_audit(sm) if e.action == "delivery.dead"] == [
        "lease expired"
    ]


# -- operator actions ------------------------------------------------------------------------


def test_retry_one_dead_delivery(sm: sessionmaker[Session]) -> None:
    delivery_id = queued(sm)
    c = claim(sm, T0)
    fail(sm, c, T0, transient=False, status=0x0122)
    assert not outbox.retry_delivery(
        sm, queued(sm, dest="OTHER", at=T0 + s(200)), T0
    )  # pending: not dead
    assert outbox.retry_delivery(sm, delivery_id, T0 + s(100))
    row = delivery(sm, delivery_id)
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 0, T0 + s(100))
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


def test_list_and_get(sm: sessionmaker[Session]) -> None:
    a = queued(sm, dest="A")
    b = queued(sm, dest="B")
    outbox.delivery_sent(sm, claim(sm, T0), T0, status=0xB000, note="status 0xB000 (coercion)")
    assert [r.delivery_id for r in outbox.list_deliveries(sm)] == [a, b]
    (sent,) = outbox.list_deliveries(sm, "sent")
    assert (sent.delivery_id, sent.last_status, sent.last_error) == (
        a,
        0xB000,
        "status 0xB000 (coercion)",
    )
    assert outbox.list_deliveries(sm, "dead") == []
    assert outbox.list_deliveries(sm, limit=1)[0].delivery_id == a
    assert outbox.get_delivery(sm, b).state == "pending"
    with pytest.raises(ValueError, match="unknown delivery state"):
        outbox.list_deliveries(sm, "sending")
    with pytest.raises(outbox.DeliveryNotFoundError):
        outbox.get_delivery(sm, 424242)
