"""The audit trail's hash chain (storage.audit): it verifies on a fresh and a long log, names the
first row an edit, a deletion, a swap or an insertion breaks, stays one chain under concurrent
writers, and commits or fails together with the change it records. On SQLite and PostgreSQL;
the ``xrayd audit`` commands on SQLite."""

from __future__ import annotations

import getpass
import itertools
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.audit import GENESIS_HASH, Action, chain_hash
from storage.logins import LoginLimits, begin_attempt, clear_failures
from storage.schema import AuditEvent, LoginFailure, WebSession
from storage.users import add_user, create_session
from xrayd.cli.actor import cli_actor
from xrayd.cli.main import main

from helpers import make_settings

T0 = datetime(2026, 12, 8, 9, 30, 15, 123456, tzinfo=UTC)
LIMITS = LoginLimits(max_failures=3, window=timedelta(minutes=15))


def _fill(sm: sessionmaker[Session], n: int) -> None:
    """``n`` rows in one transaction, ``at`` 7 µs apart."""
    with sm.begin() as session:
        for i in range(n):
            audit.append(
                session,
                actor=f"web:user{i % 3}",
                action=Action.STUDY_VIEWED,
                object_type="study",
                object_id=str(i),
                detail={"via": "api", "n": i, "nested": {"b": [1, 2.5, None], "a": "é"}},
                at=T0 + timedelta(microseconds=7 * i),
            )


def _ids(sm: sessionmaker[Session]) -> list[int]:
    with sm() as session:
        return list(session.scalars(text("SELECT id FROM audit_events ORDER BY id")))


# -- the chain ---------------------------------------------------------------------------------


def test_fresh_and_long_logs_verify(sm: sessionmaker[Session]) -> None:
    empty = audit.verify(sm)
    assert empty.ok and empty.checked == 0 and empty.head_hash == GENESIS_HASH
    _fill(sm, 1)
    [first] = audit.list_audit(sm)
    assert first.prev_hash == GENESIS_HASH and len(first.row_hash) == 64
    assert first.at == T0  # microseconds kept, UTC, on both databases
    assert first.row_hash == chain_hash(
        id=first.id,
        at=T0,
        actor="web:user0",
        action="study.viewed",
        object_type="study",
        object_id="0",
        detail={"via": "api", "n": 0, "nested": {"b": [1, 2.5, None], "a": "é"}},
        prev_hash=GENESIS_HASH,
    )
    _fill(sm, 60)
    assert audit.verify(sm) == audit.verify(sm, chunk=7)  # walked in one read or in nine
    result = audit.verify(sm)
    assert result.ok and result.checked == 61 and result.problem is None
    rows = sorted(audit.list_audit(sm, limit=5000), key=lambda r: r.id)
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
    assert result.head_hash == rows[-1].row_hash


def test_edited_row_is_named(sm: sessionmaker[Session]) -> None:
    _fill(sm, 6)
    ids = _ids(sm)
    with sm.begin() as session:
        session.execute(
            text("UPDATE audit_events SET actor = 'web:someone_else' WHERE id = :id"),
            {"id": ids[3]},
        )
    result = audit.verify(sm)
    assert result.first_bad_id == ids[3] and result.checked == 3
    assert result.problem == "its contents were changed"
    assert audit.verify(sm, chunk=2) == result  # found in a later read as well


def test_edited_detail_is_named(sm: sessionmaker[Session]) -> None:
    _fill(sm, 6)
    ids = _ids(sm)
    with sm.begin() as session:
        row = session.get(AuditEvent, ids[2])
        assert row is not None
        row.detail = {**row.detail, "n": 99}
    assert audit.verify(sm).first_bad_id == ids[2]


def test_deleted_row_is_named_by_the_row_after_it(sm: sessionmaker[Session]) -> None:
    _fill(sm, 6)
    ids = _ids(sm)
    with sm.begin() as session:
        session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[2]})
    result = audit.verify(sm)
    assert result.first_bad_id == ids[3] and result.checked == 2
    assert result.problem == "does not follow the row before"


def test_swapped_rows_are_named(sm: sessionmaker[Session]) -> None:
    _fill(sm, 6)
    ids = _ids(sm)
    a, b = ids[1], ids[2]
    with sm.begin() as session:  # exchange the two rows' ids (through a free one)
        free = ids[-1] + 100
        session.execute(
            text("UPDATE audit_events SET id = :free WHERE id = :a"), {"free": free, "a": a}
        )
        session.execute(text("UPDATE audit_events SET id = :a WHERE id = :b"), {"a": a, "b": b})
        session.execute(
            text("UPDATE audit_events SET id = :b WHERE id = :free"), {"b": b, "free": free}
        )
    result = audit.verify(sm)
    assert result.first_bad_id == a and result.checked == 1


def test_inserted_row_is_named(sm: sessionmaker[Session]) -> None:
    _fill(sm, 5)
    ids = _ids(sm)
    [third] = [r for r in audit.list_audit(sm) if r.id == ids[2]]
    with sm.begin() as session:  # make room after the third row, highest id first
        for old in reversed(ids[3:]):
            session.execute(
                text("UPDATE audit_events SET id = :new WHERE id = :old"),
                {"new": old + 1, "old": old},
            )
    forged = AuditEvent(
        id=ids[3],
        at=T0,
        actor="web:admin",
        action="user.added",
        object_type="user",
        object_id="mallory",
        detail={},
        prev_hash=third.row_hash,
    )
    # a well-formed row that links to the one before it: only the row after it shows the gap
    forged.row_hash = chain_hash(
        id=ids[3],
        at=T0,
        actor="web:admin",
        action="user.added",
        object_type="user",
        object_id="mallory",
        detail={},
        prev_hash=third.row_hash,
    )
    with sm.begin() as session:
        session.add(forged)
    result = audit.verify(sm)
    assert result.first_bad_id == ids[3] + 1 and result.checked == 4


def test_appends_continue_the_chain_after_a_rolled_back_one(sm: sessionmaker[Session]) -> None:
    _fill(sm, 2)
    with sm() as session:
        audit.append(session, actor="x", action=Action.STORE_SWEPT, object_type="store")
        session.rollback()
    _fill(sm, 2)
    result = audit.verify(sm)
    assert result.ok and result.checked == 4


def test_concurrent_appends_keep_one_chain(sm: sessionmaker[Session]) -> None:
    writers, each = 6, 15
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                with sm.begin() as session:
                    audit.append(
                        session,
                        actor=f"worker:{w}",
                        action=Action.DELIVERY_DEAD,
                        object_type="delivery",
                        object_id=f"{w}-{i}",
                        detail={"w": w, "i": i},
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = audit.verify(sm)
    assert result.ok and result.checked == writers * each
    rows = audit.list_audit(sm, limit=1000)
    assert len({r.prev_hash for r in rows}) == writers * each  # no two rows share a parent


# -- a change and its audit row commit together ------------------------------------------------


def _break_audit_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events RENAME TO audit_events_gone"))


def _mend_audit_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events_gone RENAME TO audit_events"))


def test_unlock_and_its_audit_row_commit_together(
    migrated: Engine, sm: sessionmaker[Session]
) -> None:
    begin_attempt(sm, "rad", "10.0.0.1", LIMITS)
    begin_attempt(sm, "rad", "10.0.0.2", LIMITS)
    _break_audit_table(migrated)
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a lost table
        clear_failures(sm, "rad", actor="cli:ops")
    _mend_audit_table(migrated)
    with sm() as session:
        assert len(session.scalars(text("SELECT id FROM login_failures")).all()) == 2
    assert audit.list_audit(sm) == []

    assert clear_failures(sm, "rad", actor="cli:ops") == 2
    with sm() as session:
        assert session.query(LoginFailure).count() == 0
    [row] = audit.list_audit(sm)
    assert (row.action, row.actor, row.object_id) == ("user.login_unlocked", "cli:ops", "rad")
    assert row.detail == {"failures_cleared": 2}
    assert audit.verify(sm).ok


def test_login_session_and_its_audit_row_commit_together(
    migrated: Engine, sm: sessionmaker[Session]
) -> None:
    user = add_user(sm, "rad", "radiologist", "a long enough password", actor="cli:ops")
    _break_audit_table(migrated)
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises for a lost table
        create_session(sm, user, timedelta(hours=1), client="10.0.0.1")
    _mend_audit_table(migrated)
    with sm() as session:
        assert session.query(WebSession).count() == 0

    create_session(sm, user, timedelta(hours=1), client="10.0.0.1")
    with sm() as session:
        assert session.query(WebSession).count() == 1
    logins = [(r.actor, r.detail) for r in audit.list_audit(sm) if r.action == "user.logged_in"]
    assert logins == [("rad", {"client": "10.0.0.1"})]  # one: none from the failed attempt
    assert audit.verify(sm).ok


def test_every_action_is_dotted_and_unique() -> None:
    values = [a.value for a in Action]
    assert len(values) == len(set(values))
    for value in values:
        kind, _, what = value.partition(".")
        assert kind and what and "." not in what and value == value.lower(), value


# -- the commands ------------------------------------------------------------------------------


def test_xrayd_audit_verify_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from xrayd.runtime.node import open_storage

    data = tmp_path / "data"
    config = tmp_path / "xrayd.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n')
    storage = open_storage(make_settings(data), create_if_empty=True, require_current=True)
    _fill(storage.sessions, 4)

    assert main(["audit", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "4 row(s) verified" in out
    head = audit.verify(storage.sessions).head_hash
    assert f"head hash: {head}" in out

    assert main(["audit", "list", "--limit", "2", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["TIME", "(UTC)", "ACTOR", "ACTION", "OBJECT"]
    assert len(out) == 3 and all("study.viewed" in line for line in out[1:])
    assert "2026-12-08 09:30:15 web:user0" in out[1] and out[1].endswith("study 3")

    assert main(["audit", "verify", "--known-head", head, "--config", str(config)]) == 0
    capsys.readouterr()
    ids = _ids(storage.sessions)
    with storage.sessions.begin() as session:  # the newest row dropped: the chain still holds
        session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[-1]})
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert "3 row(s) verified" in capsys.readouterr().out
    assert main(["audit", "verify", "--known-head", head, "--config", str(config)]) == 1
    assert "no longer passes through the known head" in capsys.readouterr().err

    with storage.sessions.begin() as session:
        session.execute(
            text("UPDATE audit_events SET detail = '{}' WHERE id = :id"), {"id": ids[1]}
        )
    assert main(["audit", "verify", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"broken at row {ids[1]}" in err and "1 row(s) before it verified" in err
    storage.engine.dispose()


def test_cli_actor_is_the_operating_system_user() -> None:
    assert cli_actor() == f"cli:{getpass.getuser()}"
