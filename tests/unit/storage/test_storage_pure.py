from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from config.errors import XraydError
from storage.db import make_engine, sqlite_url_for
from storage.errors import (
    DatabaseUnavailableError,
    SchemaOutdatedError,
    SpoolWriteError,
    StorageError,
)
from storage.instances import InstanceRecord
from storage.migrate import head_revision
from storage.schema import Base, UTCDateTime

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
PG = postgresql.dialect()  # type: ignore[no-untyped-call]
LITE = sqlite.dialect()


def record(**changes: object) -> InstanceRecord:
    base = InstanceRecord(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.1",
        sop_instance_uid="1.2.3.1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="DX",
        body_part_examined=None,
        spool_path="objects/aa/bb/x/y.dcm",
        size_bytes=10,
        sha256="0" * 64,
        calling_ae_title="CR1",
        received_at=T0,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_error_hierarchy() -> None:
    for exc in (SpoolWriteError, SchemaOutdatedError, DatabaseUnavailableError):
        assert issubclass(exc, StorageError)
    assert issubclass(StorageError, XraydError)


def test_sqlite_url_for() -> None:
    assert sqlite_url_for(Path("/var/lib/xrayd")) == "sqlite:////var/lib/xrayd/xrayd.sqlite3"


def test_make_engine_validates_schema_name() -> None:
    with pytest.raises(ValueError):
        make_engine("postgresql+psycopg://u@h/db", schema="x; DROP TABLE studies")
    with pytest.raises(ValueError):
        make_engine("sqlite:///x.db", schema="s")


def test_head_revision() -> None:
    assert (
        head_revision()
        == sorted(
            p.name
            for p in (
                Path(__file__).resolve().parents[3] / "storage" / "migrations" / "versions"
            ).glob("0*.py")
        )[-1][:4]
    )


def test_utc_datetime_binds_aware_values_as_utc() -> None:
    col = UTCDateTime()
    plus_two = datetime(2025, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    pg = col.process_bind_param(plus_two, PG)
    assert pg == T0 and pg is not None and pg.tzinfo == UTC
    lite = col.process_bind_param(plus_two, LITE)
    assert lite == T0.replace(tzinfo=None)
    assert col.process_bind_param(None, LITE) is None
    with pytest.raises(ValueError):
        col.process_bind_param(datetime(2025, 3, 1, 8, 0), LITE)


def test_utc_datetime_results_are_aware() -> None:
    col = UTCDateTime()
    naive = col.process_result_value(datetime(2025, 3, 1, 8, 0), LITE)
    assert naive == T0 and naive is not None and naive.tzinfo == UTC
    other = datetime(2025, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    aware = col.process_result_value(other, PG)
    assert aware == T0 and aware is not None and aware.tzinfo == UTC


def test_instance_record_validation() -> None:
    record()  # valid
    with pytest.raises(ValueError):
        record(sop_instance_uid="1" * 65)
    with pytest.raises(ValueError):
        record(study_instance_uid="")
    with pytest.raises(ValueError):
        record(received_at=datetime(2025, 3, 1))
    with pytest.raises(ValueError):
        record(sha256="abc")
    with pytest.raises(ValueError):
        record(size_bytes=-1)


def test_no_patient_columns() -> None:
    columns = {c.name for t in Base.metadata.tables.values() for c in t.columns}
    # "patient_group" (validation_cases) is a salted hash used to split by patient, never an ID.
    assert not {c for c in columns if "patient" in c} - {"patient_group"}


def test_storage_imports_only_config_and_libraries() -> None:
    import ast

    forbidden = {"xrayd", "dicom_node", "models", "retrain", "pydicom", "pynetdicom"}
    root = Path(__file__).resolve().parents[3] / "storage"
    files = list(root.rglob("*.py"))
    assert len(files) > 5
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
