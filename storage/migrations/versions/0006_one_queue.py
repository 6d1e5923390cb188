"""One work queue: the ``jobs`` table carries analysis jobs, deliveries and retraining runs
(``storage.queue``); deliveries lose their own schedule (``next_attempt_at``), training runs
their own heartbeat (the run's queue job holds the lease).

Nothing in flight is lost:

* every analysis job becomes an ``analysis``-queue job of task ``analyse`` on its study
  (``ref_id``, ``lock`` ``study:<id>``; the oldest queued one of a study gets the queueing
  lock);
* every ``pending`` delivery gets a queued ``deliver`` job due when the delivery was due
  (a claimed one: when its lease ends), keeping its attempts and at least one more;
* a training run still ``running`` cannot be resumed by the new code (its process is gone
  during an upgrade): it becomes ``failed`` with a reason, and the next slot runs again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05

Written by hand; a frozen copy of ``storage/schema.py`` at this revision (must not import it).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

OLD_JOB_STATES = "state IN ('queued', 'running', 'done', 'dead')"
NEW_JOB_STATES = "state IN ('queued', 'running', 'done', 'dead', 'cancelled')"
DELIVERY_MAX_ATTEMPTS = 8  # storage.outbox's default at this revision
OLD_RUN_STATES = "state IN ('running', 'succeeded', 'skipped', 'failed')"
NEW_RUN_STATES = "state IN ('queued', 'running', 'succeeded', 'skipped', 'failed')"
INTERRUPTED = "interrupted: xrayd was upgraded while this run was in progress"

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer()),
    sa.column("queue", sa.String()),
    sa.column("kind", sa.String()),
    sa.column("ref_id", sa.Integer()),
    sa.column("study_id", sa.Integer()),
    sa.column("lock", sa.String()),
    sa.column("queueing_lock", sa.String()),
    sa.column("priority", sa.Integer()),
    sa.column("state", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("max_attempts", sa.Integer()),
    sa.column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
_deliveries = sa.table(
    "deliveries",
    sa.column("id", sa.Integer()),
    sa.column("result_id", sa.Integer()),
    sa.column("state", sa.String()),
    sa.column("attempts", sa.Integer()),
    sa.column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_results = sa.table("results", sa.column("id", sa.Integer()), sa.column("study_id", sa.Integer()))
_runs = sa.table(
    "training_runs",
    sa.column("id", sa.Integer()),
    sa.column("state", sa.String()),
    sa.column("started_at", sa.DateTime(timezone=True)),
    sa.column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.column("finished_at", sa.DateTime(timezone=True)),
    sa.column("error", sa.Text()),
)


def _now() -> datetime:
    return datetime.now(UTC)


def upgrade() -> None:
    conn = op.get_bind()
    now = _now()
    op.drop_index(op.f("ix_jobs_state_next_attempt_at"), table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("queue", sa.String(16), nullable=False, server_default="analysis")
        )
        batch.add_column(sa.Column("ref_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("lock", sa.String(64), nullable=True))
        batch.add_column(sa.Column("queueing_lock", sa.String(64), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.alter_column("study_id", existing_type=sa.Integer(), nullable=True)
        batch.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), NEW_JOB_STATES)

    # analysis jobs: their study is what they work on and their lock
    study_lock = sa.literal("study:") + sa.cast(_jobs.c.study_id, sa.String())
    conn.execute(_jobs.update().values(queue="analysis", ref_id=_jobs.c.study_id, lock=study_lock))
    first_queued = (
        sa.select(sa.func.min(_jobs.c.id))
        .where(_jobs.c.state == "queued")
        .group_by(_jobs.c.study_id, _jobs.c.kind)
    )
    conn.execute(
        _jobs.update()
        .where(_jobs.c.id.in_(first_queued))
        .values(
            queueing_lock=sa.cast(_jobs.c.kind, sa.String())
            + sa.literal(":")
            + sa.cast(_jobs.c.study_id, sa.String())
        )
    )

    # pending deliveries: one queued deliver job each
    pending = conn.execute(
        sa.select(
            _deliveries.c.id,
            _deliveries.c.attempts,
            _deliveries.c.next_attempt_at,
            _deliveries.c.created_at,
            _results.c.study_id,
        )
        .join(_results, _results.c.id == _deliveries.c.result_id)
        .where(_deliveries.c.state == "pending")
        .order_by(_deliveries.c.id)
    ).all()
    if pending:
        conn.execute(
            _jobs.insert(),
            [
                {
                    "queue": "delivery",
                    "kind": "deliver",
                    "ref_id": row.id,
                    "study_id": row.study_id,
                    "lock": f"delivery:{row.id}",
                    "queueing_lock": f"deliver:{row.id}",
                    "priority": 0,
                    "state": "queued",
                    "attempts": row.attempts,
                    "max_attempts": max(DELIVERY_MAX_ATTEMPTS, row.attempts + 1),
                    "next_attempt_at": row.next_attempt_at,
                    "created_at": row.created_at,
                    "updated_at": now,
                }
                for row in pending
            ],
        )

    op.create_index(
        "ix_jobs_queue_state_next_attempt_at", "jobs", ["queue", "state", "next_attempt_at"]
    )
    op.create_index("ix_jobs_lock_state", "jobs", ["lock", "state"])
    op.create_index("ix_jobs_kind_ref_id", "jobs", ["kind", "ref_id"])
    op.create_index(
        "uq_jobs_queueing_lock",
        "jobs",
        ["queueing_lock"],
        unique=True,
        sqlite_where=sa.text("state = 'queued'"),
        postgresql_where=sa.text("state = 'queued'"),
    )

    op.drop_index(op.f("ix_deliveries_state_next_attempt_at"), table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("next_attempt_at")
    op.create_index("ix_deliveries_state", "deliveries", ["state"])

    conn.execute(
        _runs.update()
        .where(_runs.c.state == "running")
        .values(state="failed", finished_at=now, error=INTERRUPTED)
    )
    with op.batch_alter_table("training_runs") as batch:
        batch.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_training_runs_job_id_jobs"), "jobs", ["job_id"], ["id"], ondelete="SET NULL"
        )
        batch.drop_column("heartbeat_at")
        batch.drop_constraint(op.f("ck_training_runs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_training_runs_state"), NEW_RUN_STATES)


def downgrade() -> None:
    conn = op.get_bind()
    conn.execute(
        _runs.update()
        .where(_runs.c.state == "queued")
        .values(state="failed", finished_at=_now(), error="never started: xrayd was downgraded")
    )
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_constraint(op.f("ck_training_runs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_training_runs_state"), OLD_RUN_STATES)
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint(op.f("fk_training_runs_job_id_jobs"), type_="foreignkey")
        batch.drop_column("job_id")
    conn.execute(_runs.update().values(heartbeat_at=_runs.c.started_at))
    with op.batch_alter_table("training_runs") as batch:
        batch.alter_column("heartbeat_at", existing_type=sa.DateTime(timezone=True), nullable=False)

    op.drop_index("ix_deliveries_state", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
    # a pending delivery is due when its queued job was due (or now)
    due = (
        sa.select(sa.func.min(_jobs.c.next_attempt_at))
        .where(
            _jobs.c.kind == "deliver",
            _jobs.c.ref_id == _deliveries.c.id,
            _jobs.c.state.in_(["queued", "running"]),
        )
        .scalar_subquery()
    )
    conn.execute(_deliveries.update().values(next_attempt_at=sa.func.coalesce(due, _now())))
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column(
            "next_attempt_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
    op.create_index(
        op.f("ix_deliveries_state_next_attempt_at"), "deliveries", ["state", "next_attempt_at"]
    )

    op.drop_index("uq_jobs_queueing_lock", table_name="jobs")
    op.drop_index("ix_jobs_kind_ref_id", table_name="jobs")
    op.drop_index("ix_jobs_lock_state", table_name="jobs")
    op.drop_index("ix_jobs_queue_state_next_attempt_at", table_name="jobs")
    conn.execute(_jobs.delete().where(_jobs.c.queue != "analysis"))
    conn.execute(_jobs.update().where(_jobs.c.state == "cancelled").values(state="dead"))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), OLD_JOB_STATES)
        batch.alter_column("study_id", existing_type=sa.Integer(), nullable=False)
        batch.drop_column("priority")
        batch.drop_column("queueing_lock")
        batch.drop_column("lock")
        batch.drop_column("ref_id")
        batch.drop_column("queue")
    op.create_index(op.f("ix_jobs_state_next_attempt_at"), "jobs", ["state", "next_attempt_at"])
