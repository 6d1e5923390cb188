"""Retraining: training runs, the locked validation set, and the model registry's promotion
record (who promoted, the gate's verdict, the training manifest, the parent version, the run);
a model version may be "rejected" by the gate.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Written by hand; a frozen copy of ``storage/schema.py`` at this revision (must not import it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

OLD_STATES = "state IN ('candidate', 'active', 'retired')"
NEW_STATES = "state IN ('candidate', 'active', 'retired', 'rejected')"


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("slot", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("new_reviews", sa.Integer(), nullable=False),
        sa.Column("candidate_version", sa.String(64), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=True),
        sa.Column("report_path", sa.String(1024), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
        sa.UniqueConstraint("slot", name=op.f("uq_training_runs_slot")),
        sa.CheckConstraint(
            "state IN ('running', 'succeeded', 'skipped', 'failed')",
            name=op.f("ck_training_runs_state"),
        ),
    )
    op.create_index(
        "uq_training_runs_one_running",
        "training_runs",
        ["state"],
        unique=True,
        sqlite_where=sa.text("state = 'running'"),
        postgresql_where=sa.text("state = 'running'"),
    )
    op.create_table(
        "validation_cases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("patient_group", sa.String(64), nullable=False),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_cases")),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_validation_cases_study_id_studies"),
            ondelete="SET NULL",
        ),
        sa.UniqueConstraint("source", "key", name=op.f("uq_validation_cases_source_key")),
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("promoted_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("gate", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("manifest_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("parent_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("run_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_model_versions_run_id_training_runs"),
            "training_runs",
            ["run_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.drop_constraint(op.f("ck_model_versions_state"), type_="check")
        batch.create_check_constraint(op.f("ck_model_versions_state"), NEW_STATES)


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_constraint(op.f("ck_model_versions_state"), type_="check")
        batch.create_check_constraint(op.f("ck_model_versions_state"), OLD_STATES)
        batch.drop_constraint(op.f("fk_model_versions_run_id_training_runs"), type_="foreignkey")
        batch.drop_column("run_id")
        batch.drop_column("parent_version")
        batch.drop_column("manifest_sha256")
        batch.drop_column("gate")
        batch.drop_column("promoted_by")
    op.drop_table("validation_cases")
    op.drop_index("uq_training_runs_one_running", table_name="training_runs")
    op.drop_table("training_runs")
