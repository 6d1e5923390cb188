from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.audit import Action, InvalidAuditEntryError, list_audit
from storage.instances import InstanceRecord, record_instance
from storage.jobs import claim_job, fail_job, promote_studies_now
from storage.peers import (
    CallerRow,
    DestinationRow,
    InvalidEntryError,
    SeedResult,
    add_caller,
    add_destination,
    caller_allowed,
    get_destination,
    list_callers,
    list_destinations,
    remove_caller,
    remove_destination,
    seed_callers,
    seed_destinations,
)
from storage.schema import Delivery, Result
from storage.status import status_counts

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
RecordFactory = Callable[..., InstanceRecord]


# -- callers -----------------------------------------------------------------------------------


def test_add_list_remove_callers(sm: sessionmaker[Session]) -> None:
    assert add_caller(sm, "CR1")
    assert not add_caller(sm, "CR1")  # already allowed from any host
    assert add_caller(sm, " CR2 ", "10.0.0.5", "cli")
    assert add_caller(sm, "CR2", "10.0.0.6")
    assert not add_caller(sm, "CR2", "10.0.0.5")
    assert list_callers(sm) == [
        CallerRow("CR1", None, "cli"),
        CallerRow("CR2", "10.0.0.5", "cli"),
        CallerRow("CR2", "10.0.0.6", "cli"),
    ]
    assert remove_caller(sm, "CR2", "10.0.0.5") == 1
    assert remove_caller(sm, "CR2", "10.0.0.5") == 0
    assert remove_caller(sm, "CR1") == 1
    assert list_callers(sm) == [CallerRow("CR2", "10.0.0.6", "cli")]


@pytest.mark.parametrize("bad", ["", "   ", "A" * 17, "BAD\\AE", "NL\nAE"])
def test_invalid_ae_titles_refused(sm: sessionmaker[Session], bad: str) -> None:
    with pytest.raises(InvalidEntryError):
        add_caller(sm, bad)
    assert not caller_allowed(sm, bad, "127.0.0.1")
    with pytest.raises(InvalidEntryError):
        add_caller(sm, "OK", None, "bogus")  # config, cli, web and api are the sources


def test_caller_allowed(sm: sessionmaker[Session]) -> None:
    add_caller(sm, "ANYHOST")
    add_caller(sm, "PINNED", "10.0.0.5")
    assert caller_allowed(sm, "ANYHOST", "192.168.1.1")
    assert caller_allowed(sm, "ANYHOST", None)
    assert caller_allowed(sm, "PINNED", "10.0.0.5")
    assert not caller_allowed(sm, "PINNED", "10.0.0.6")
    assert not caller_allowed(sm, "PINNED", None)
    assert not caller_allowed(sm, "UNKNOWN", "10.0.0.5")
    assert not caller_allowed(sm, "anyhost", "10.0.0.5")  # AE titles are case-sensitive


def test_seed_callers_keeps_cli_entries(sm: sessionmaker[Session]) -> None:
    add_caller(sm, "MANUAL", None, "cli")
    assert seed_callers(sm, [("CR1", None), ("CR2", "10.0.0.5")]) == SeedResult(2, 0, 0)
    assert seed_callers(sm, [("CR1", None), ("CR2", "10.0.0.5")]) == SeedResult(0, 0, 0)
    assert seed_callers(sm, [("CR2", "10.0.0.5"), ("MANUAL", None)]) == SeedResult(0, 0, 1)
    assert list_callers(sm) == [
        CallerRow("CR2", "10.0.0.5", "config"),
        CallerRow("MANUAL", None, "cli"),
    ]
    assert seed_callers(sm, []) == SeedResult(0, 0, 1)
    assert list_callers(sm) == [CallerRow("MANUAL", None, "cli")]


# -- destinations ------------------------------------------------------------------------------


def dest(name: str = "PACS", **kw: object) -> DestinationRow:
    values: dict[str, object] = {
        "name": name,
        "ae_title": "PACS_AE",
        "host": "pacs.example.org",
        "port": 104,
        "send": ("sr", "sc"),
        "source": "config",
    }
    values.update(kw)
    return DestinationRow(**values)  # type: ignore[arg-type]


def test_add_list_remove_destinations(sm: sessionmaker[Session]) -> None:
    assert add_destination(sm, dest("B", source="cli", tls={"ca": "/etc/ca.pem"}))
    assert add_destination(sm, dest("A"))
    assert not add_destination(sm, dest("A", port=11112))
    rows = list_destinations(sm)
    assert [r.name for r in rows] == ["A", "B"]
    assert rows[0] == dest("A")
    assert rows[1].tls == {"ca": "/etc/ca.pem"} and rows[1].source == "cli"
    assert get_destination(sm, "B") == rows[1]
    assert get_destination(sm, "nope") is None
    assert remove_destination(sm, "A") == 1
    assert remove_destination(sm, "A") == 0
    assert [r.name for r in list_destinations(sm)] == ["B"]


@pytest.mark.parametrize(
    "bad", [{"port": 0}, {"port": 70000}, {"name": ""}, {"host": ""}, {"send": ("",)}]
)
def test_invalid_destinations_refused(sm: sessionmaker[Session], bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidEntryError):
        add_destination(sm, dest(**bad))
    assert list_destinations(sm) == []


def test_seed_destinations(sm: sessionmaker[Session]) -> None:
    add_destination(sm, dest("MANUAL", source="cli"))
    add_destination(sm, dest("TAKEN", source="cli", port=1000))
    result = seed_destinations(sm, [dest("PACS"), dest("ARCHIVE"), dest("TAKEN", port=2000)])
    assert result == SeedResult(added=2, updated=1, removed=0)
    taken = get_destination(sm, "TAKEN")
    assert taken is not None and taken.port == 2000 and taken.source == "config"
    result = seed_destinations(sm, [dest("PACS", send=("sr",)), dest("TAKEN", port=2000)])
    assert result == SeedResult(added=0, updated=1, removed=1)
    names = {r.name: r for r in list_destinations(sm)}
    assert set(names) == {"MANUAL", "PACS", "TAKEN"}
    assert names["PACS"].send == ("sr",)
    assert names["MANUAL"].source == "cli"


# -- audit -------------------------------------------------------------------------------------


def test_audit_in_own_and_callers_transaction(sm: sessionmaker[Session]) -> None:
    audit.record(
        sm,
        actor="dicom:CR1",
        action=Action.ASSOCIATION_REJECTED,
        object_type="association",
        detail={"why": "x"},
        at=T0,
    )
    with sm.begin() as session:
        audit.append(
            session,
            actor="admin",
            action=Action.CALLER_ADDED,
            object_type="caller",
            object_id="CR9",
            at=T0 + timedelta(1),
        )
    with sm() as session:  # rolled back with the caller's transaction
        audit.append(
            session,
            actor="admin",
            action=Action.CALLER_REMOVED,
            object_type="caller",
            object_id="CR9",
            at=T0 + timedelta(2),
        )
        session.rollback()
    events = list_audit(sm, limit=10)
    assert [e.action for e in events] == ["caller.added", "association.rejected"]
    assert events[1].detail == {"why": "x"} and events[1].at == T0
    assert events[0].object_id == "CR9"
    assert [e.action for e in list_audit(sm, limit=1)] == ["caller.added"]
    with pytest.raises(InvalidAuditEntryError):
        audit.record(sm, actor="", action=Action.CALLER_ADDED, object_type="y")


# -- status and results ------------------------------------------------------------------------


def test_status_counts(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    empty = status_counts(sm)
    assert (empty.instances, empty.dead_letters, empty.jobs_by_state) == (0, 0, {})
    with sm.begin() as session:
        record_instance(session, make_rec(study="1.1", sop="1.1.1"))
        record_instance(session, make_rec(study="1.1", sop="1.1.2"))
        record_instance(session, make_rec(study="1.2", sop="1.2.1"))
        record_instance(session, make_rec(study="1.3", sop="1.3.1"))
    (dead_job,) = promote_studies_now(sm, ["1.1"], T0, max_attempts=1)  # commits itself
    claimed = claim_job(sm, "w", T0, 60)
    assert claimed is not None and claimed.job_id == dead_job
    assert fail_job(sm, dead_job, T0, "err") == "dead"
    promote_studies_now(sm, ["1.2"], T0)
    with sm.begin() as session:
        result = Result(study_id=claimed.study_id, kind="sr", detail={})
        session.add(result)
        session.flush()
        session.add(
            Delivery(
                result_id=result.id,
                destination_name="PACS",
                state="dead",
                attempts=5,
            )
        )
    counts = status_counts(sm)
    assert counts.instances == 4
    assert counts.studies_by_state == {"failed": 1, "queued": 1, "receiving": 1}
    assert counts.jobs_by_state == {"dead": 1, "queued": 1}
    assert counts.deliveries_by_state == {"dead": 1}
    assert counts.dead_letters == 2
