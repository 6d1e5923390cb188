"""Migration 0008 (the audit chain): legacy action names (``caller_added`` from the web,
``caller.added`` from the CLI) become the one vocabulary, existing rows are chained in id order
and verify, new appends continue the chain; the downgrade drops the chain's columns. On SQLite
and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, MetaData, Table, inspect, select

from storage import audit
from storage.audit import GENESIS_HASH, Action
from storage.db import make_sessionmaker
from storage.migrate import downgrade, upgrade

T0 = datetime(2026, 12, 1, 8, 0, 0, 250001, tzinfo=UTC)

LEGACY = [
    ("web:admin", "caller_added", "caller", "CR1", {"host": "10.0.0.1"}),
    ("cli", "caller.added", "caller", "CR2", {"host": None}),
    ("rad", "login", "user", "rad", {"client": "10.0.0.9"}),
    ("rad", "study_viewed", "study", "7", {}),
    ("xrayd", "retrain_skipped", "training_run", "1", {"candidate": None, "verdict": None}),
    ("dicom:CR1", "association.rejected", "association", None, {"reason": "unknown_caller"}),
]


def _insert_legacy(engine: Engine) -> None:
    table = Table("audit_events", MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        for i, (actor, action, object_type, object_id, detail) in enumerate(LEGACY):
            conn.execute(
                table.insert().values(
                    at=T0 + timedelta(seconds=i),
                    actor=actor,
                    action=action,
                    object_type=object_type,
                    object_id=object_id,
                    detail=detail,
                )
            )


def _rows(engine: Engine) -> list[dict[str, Any]]:
    table = Table("audit_events", MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]


def test_legacy_rows_are_renamed_and_chained(engine: Engine) -> None:
    upgrade(engine, "0007")
    _insert_legacy(engine)
    upgrade(engine)

    rows = _rows(engine)
    assert [r["action"] for r in rows] == [
        "caller.added",
        "caller.added",
        "user.logged_in",
        "study.viewed",
        "retrain.skipped",
        "association.rejected",
    ]
    assert {r["action"] for r in rows} <= {a.value for a in Action}
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert all(b["prev_hash"] == a["row_hash"] for a, b in itertools.pairwise(rows))
    assert [r["detail"] for r in rows] == [d for *_, d in LEGACY]  # nothing else changed

    sm = make_sessionmaker(engine)
    result = audit.verify(sm)
    assert result.ok and result.checked == len(LEGACY)
    assert result.head_hash == rows[-1]["row_hash"]
    assert audit.list_audit(sm, limit=100)[-1].at == T0  # microseconds survive

    audit.record(sm, actor="cli:ops", action=Action.STORE_SWEPT, object_type="store")
    after = audit.verify(sm)
    assert after.ok and after.checked == len(LEGACY) + 1
    engine.dispose()


def test_empty_log_upgrades_and_downgrade_drops_the_chain(engine: Engine) -> None:
    upgrade(engine, "0007")
    upgrade(engine)
    sm = make_sessionmaker(engine)
    assert audit.verify(sm).checked == 0
    audit.record(sm, actor="cli:ops", action=Action.STORE_SWEPT, object_type="store")
    engine.dispose()

    downgrade(engine, "0007")
    columns = {c["name"] for c in inspect(engine).get_columns("audit_events")}
    assert "prev_hash" not in columns and "row_hash" not in columns
    assert [r["action"] for r in _rows(engine)] == ["store.swept"]
    upgrade(engine)  # and up again: the row is chained anew
    assert audit.verify(make_sessionmaker(engine)).checked == 1
    engine.dispose()
