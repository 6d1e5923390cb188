"""Retraining state on SQLite and PostgreSQL: runs claimed once per slot and one at a time,
interrupted runs expire, the locked validation set only grows, and the model registry's
promote / rollback / gate rules, all audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade
from storage.models_registry import (
    RegistryError,
    active_version,
    ensure_active,
    list_model_versions,
    promote,
    register_version,
    rollback,
)
from storage.registry import list_audit
from storage.training import (
    add_validation_cases,
    claim_run,
    finish_run,
    get_run,
    heartbeat,
    list_runs,
    reviews_since,
    validation_cases,
)

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)


@pytest.fixture
def sm(database_url: str, tmp_path: Path) -> sessionmaker[Session]:
    (tmp_path / "db").mkdir(exist_ok=True)
    engine = make_engine(database_url)
    upgrade(engine)
    return make_sessionmaker(engine)


def test_a_slot_is_claimed_once_and_one_run_goes_at_a_time(sm: sessionmaker[Session]) -> None:
    first = claim_run(sm, slot="scheduled:A", trigger="scheduled", worker="w1", now=T0, lease=LEASE)
    assert first is not None and first.state == "running"
    # The same firing seen by a second scheduler: refused.
    assert (
        claim_run(sm, slot="scheduled:A", trigger="scheduled", worker="w2", now=T0, lease=LEASE)
        is None
    )
    # Another slot while the first runs: refused too (one run at a time).
    assert (
        claim_run(sm, slot="manual:x", trigger="manual", worker="w2", now=T0, lease=LEASE) is None
    )
    heartbeat(sm, first.id, T0 + timedelta(minutes=10))
    done = finish_run(
        sm,
        first.id,
        state="succeeded",
        now=T0 + timedelta(minutes=12),
        new_reviews=7,
        candidate_version="1.0.0+r1",
        verdict="passed",
    )
    assert done.state == "succeeded" and done.new_reviews == 7
    second = claim_run(sm, slot="manual:x", trigger="manual", worker="w2", now=T0, lease=LEASE)
    assert second is not None
    # The finished slot stays claimed for ever.
    assert (
        claim_run(sm, slot="scheduled:A", trigger="scheduled", worker="w1", now=T0, lease=LEASE)
        is None
    )
    assert [r.slot for r in list_runs(sm)] == ["manual:x", "scheduled:A"]
    assert any(e.action == "retrain_succeeded" for e in list_audit(sm))


def test_an_interrupted_run_expires_after_its_lease(sm: sessionmaker[Session]) -> None:
    crashed = claim_run(sm, slot="s1", trigger="manual", worker="w1", now=T0, lease=LEASE)
    assert crashed is not None
    assert (
        claim_run(sm, slot="s2", trigger="manual", worker="w2", now=T0 + LEASE, lease=LEASE) is None
    )
    later = T0 + LEASE + timedelta(seconds=1)
    fresh = claim_run(sm, slot="s2", trigger="manual", worker="w2", now=later, lease=LEASE)
    assert fresh is not None
    old = get_run(sm, crashed.id)
    assert old is not None and old.state == "failed" and "interrupted" in (old.error or "")


def test_validation_set_only_grows_and_is_audited(sm: sessionmaker[Session]) -> None:
    cases = [("base", f"synthetic:1:{i}", None, f"g{i}", {"fracture": i % 2}) for i in range(3)]
    assert add_validation_cases(sm, cases, actor="admin") == 3
    assert (
        add_validation_cases(sm, [*cases, ("review", "1.2.3", None, "gx", {})], actor="admin") == 1
    )
    rows = validation_cases(sm)
    assert [r.key for r in rows] == ["synthetic:1:0", "synthetic:1:1", "synthetic:1:2", "1.2.3"]
    assert [r.key for r in validation_cases(sm, "review")] == ["1.2.3"]
    events = [e for e in list_audit(sm) if e.action == "validation_set_extended"]
    assert [e.detail["added"] for e in events] == [1, 3]
    assert reviews_since(sm, None) == 0


def _register(sm: sessionmaker[Session], version: str, state: str, verdict: str | None) -> None:
    with sm.begin() as session:
        register_version(
            session,
            name="xrayd-phantom",
            version=version,
            sha256=version.ljust(64, "0")[:64],
            path=f"/models/{version}",
            state=state,
            actor="retrain",
            gate=None if verdict is None else {"verdict": verdict},
            parent_version="1.0.0",
        )


def test_promote_rollback_and_the_gate(sm: sessionmaker[Session]) -> None:
    base = ensure_active(
        sm, name="xrayd-phantom", version="1.0.0", sha256="a" * 64, path="/b", actor="xrayd"
    )
    assert base.state == "active" and base.promoted_by == "xrayd"
    again = ensure_active(sm, name="other", version="9", sha256="b" * 64, path="/c", actor="x")
    assert again.version == "1.0.0"  # the registry decides once a version is active
    with pytest.raises(RegistryError, match="no earlier model"):
        rollback(sm, actor="admin")
    _register(sm, "1.0.0+r1", "candidate", "passed")
    _register(sm, "1.0.0+r2", "rejected", "failed")
    with pytest.raises(RegistryError, match="failed the promotion gate"):
        promote(sm, "1.0.0+r2", actor="admin")
    with pytest.raises(RegistryError, match="no model version"):
        promote(sm, "nope", actor="admin")
    promoted = promote(sm, "1.0.0+r1", actor="admin")
    assert promoted.state == "active" and promoted.promoted_by == "admin"
    states = {r.version: r.state for r in list_model_versions(sm)}
    assert states == {"1.0.0": "retired", "1.0.0+r1": "active", "1.0.0+r2": "rejected"}
    back = rollback(sm, actor="admin")
    assert back.version == "1.0.0" and back.state == "active"
    active = active_version(sm)
    assert active is not None and active.version == "1.0.0"
    actions = [e.action for e in list_audit(sm)]
    assert {"model_registered", "model_promoted", "model_rolled_back"} <= set(actions)
    with sm.begin() as session, pytest.raises(RegistryError, match="active already"):
        register_version(
            session, name="x", version="2", sha256="c" * 64, path="/d", state="active", actor="t"
        )


def test_reviewed_examples_take_each_studys_newest_review(sm: sessionmaker[Session]) -> None:
    from storage.schema import Instance, Override, Series, Study
    from storage.training import reviewed_examples

    with sm.begin() as s:
        study = Study(
            study_instance_uid="1.2.3",
            state="analysed",
            first_received_at=T0,
            last_received_at=T0,
            instance_count=2,
        )
        other = Study(
            study_instance_uid="1.2.4",
            state="analysed",
            first_received_at=T0,
            last_received_at=T0,
            instance_count=1,
        )
        s.add_all([study, other])
        s.flush()
        series = Series(study_id=study.id, series_instance_uid="1.2.3.1", modality="DX")
        s.add(series)
        s.flush()
        for n in range(2):
            s.add(
                Instance(
                    series_id=series.id,
                    study_id=study.id,
                    sop_instance_uid=f"1.2.3.1.{n}",
                    sop_class_uid="1.2",
                    transfer_syntax_uid="1.2",
                    spool_path=f"i/{n}",
                    size_bytes=1,
                    sha256="0" * 64,
                    received_at=T0,
                    calling_ae_title="M",
                )
            )
        wrong = {"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False}
        right = {"fracture": "absent", "count": "0", "body_part": "wrist", "hardware": False}
        s.add(
            Override(
                study_id=study.id, user_name="a", radiologist_label=wrong, agree=True, created_at=T0
            )
        )
        s.add(
            Override(
                study_id=study.id,
                user_name="b",
                radiologist_label=right,
                agree=False,
                created_at=T0 + timedelta(hours=1),
            )
        )
    examples = reviewed_examples(sm)
    assert [e.sop_instance_uid for e in examples] == ["1.2.3.1.0", "1.2.3.1.1"]
    assert all(e.label == right and e.agree is False and e.user_name == "b" for e in examples)
    assert reviews_since(sm, None) == 2 and reviews_since(sm, T0) == 1


def test_a_moved_bundle_with_the_same_weights_is_followed(sm: sessionmaker[Session]) -> None:
    from storage.models_registry import relocate

    ensure_active(sm, name="m", version="1.0.0", sha256="a" * 64, path="/old", actor="xrayd")
    assert not relocate(sm, "1.0.0", "b" * 64, "/new")  # other weights: refused
    assert relocate(sm, "1.0.0", "a" * 64, "/new")
    active = active_version(sm)
    assert active is not None and active.path == "/new"
    assert any(e.action == "model_relocated" for e in list_audit(sm))
