from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError, StatementError

from storage.errors import SchemaOutdatedError
from storage.migrate import (
    MIGRATIONS_DIR,
    current_revision,
    downgrade,
    head_revision,
    require_current_schema,
    schema_state,
    upgrade,
)
from storage.schema import Base, Study

FAKE_0002 = """
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("fake_later", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("fake_later")
"""


def test_upgrade_empty_database_to_head(engine: Engine) -> None:
    assert schema_state(engine) == "empty"
    assert current_revision(engine) is None
    with pytest.raises(SchemaOutdatedError):
        require_current_schema(engine)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert schema_state(engine) == "current"
    require_current_schema(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    upgrade(engine)  # idempotent
    assert schema_state(engine) == "current"


def test_migrated_schema_matches_metadata(migrated: Engine) -> None:
    with migrated.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_check_constraints_and_partial_index_match_metadata(migrated: Engine) -> None:
    inspector = inspect(migrated)
    for table in Base.metadata.sorted_tables:
        expected = {c.name for c in table.constraints if c.__class__.__name__ == "CheckConstraint"}
        reflected = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert reflected == expected, table.name
    indexes = {i["name"] for i in inspector.get_indexes("callers")}
    assert "uq_callers_ae_title_any_host" in indexes


def test_constraints_are_enforced(migrated: Engine) -> None:
    with migrated.connect() as conn:
        with pytest.raises(IntegrityError), conn.begin():
            conn.execute(
                text(
                    "INSERT INTO callers (ae_title, host, source, created_at) "
                    "VALUES ('CR1', NULL, 'config', CURRENT_TIMESTAMP), "
                    "('CR1', NULL, 'cli', CURRENT_TIMESTAMP)"
                )
            )
        with pytest.raises(IntegrityError), conn.begin():
            conn.execute(
                text(
                    "INSERT INTO studies (study_instance_uid, state, first_received_at, "
                    "last_received_at, instance_count, created_at, updated_at) VALUES "
                    "('1.2', 'bogus', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 0, "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        with pytest.raises(IntegrityError), conn.begin():  # foreign keys are on (SQLite too)
            conn.execute(
                text(
                    "INSERT INTO series (study_id, series_instance_uid, modality) "
                    "VALUES (999, '1.2.3', 'DX')"
                )
            )


def test_datetimes_round_trip_as_aware_utc(migrated: Engine) -> None:
    from storage.db import make_sessionmaker

    sm = make_sessionmaker(migrated)
    local = datetime(2025, 3, 1, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    with sm.begin() as session:
        session.add(
            Study(
                study_instance_uid="1.2.3",
                state="receiving",
                first_received_at=local,
                last_received_at=local,
                instance_count=0,
            )
        )
    with sm() as session:
        study = session.query(Study).one()
        assert study.first_received_at == datetime(2025, 3, 1, 8, 30, tzinfo=UTC)
        assert study.first_received_at.utcoffset() == timedelta(0)
        assert study.created_at.tzinfo is not None
    with pytest.raises(StatementError), sm.begin() as session:
        session.add(
            Study(
                study_instance_uid="1.2.4",
                state="receiving",
                first_received_at=datetime(2025, 3, 1),  # naive: refused
                last_received_at=local,
                instance_count=0,
            )
        )


def test_unknown_revision_and_missing_version_table(migrated: Engine) -> None:
    with migrated.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffff'"))
    assert schema_state(migrated) == "unknown"
    with pytest.raises(SchemaOutdatedError):
        require_current_schema(migrated)
    with migrated.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert current_revision(migrated) is None
    assert schema_state(migrated) == "unknown"


def test_downgrade_to_base_is_empty(migrated: Engine) -> None:
    downgrade(migrated, "base")
    assert set(inspect(migrated).get_table_names()) <= {"alembic_version"}
    assert schema_state(migrated) == "empty"
    upgrade(migrated)
    assert schema_state(migrated) == "current"


def test_outdated_when_newer_scripts_exist(migrated: Engine, tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0099_fake.py").write_text(FAKE_0002.replace("{head}", head_revision()))
    assert head_revision(script_location=scripts) == "0099"
    assert schema_state(migrated, script_location=scripts) == "outdated"
    with pytest.raises(SchemaOutdatedError):
        require_current_schema(migrated, script_location=scripts)
    upgrade(migrated, script_location=scripts)
    assert current_revision(migrated) == "0099"
    assert schema_state(migrated, script_location=scripts) == "current"
    # The real scripts do not know 0099 (a newer xrayd wrote this database).
    assert schema_state(migrated) == "unknown"
    downgrade(migrated, head_revision(), script_location=scripts)
    assert schema_state(migrated) == "current"
