"""Web hardening: API tokens may expire; failed logins are counted in their own table (the
lock-out of ``storage.logins``), not by reading audit events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Written by hand; a frozen copy of ``storage/schema.py`` at this revision (must not import it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_failures")),
    )
    op.create_index(op.f("ix_login_failures_at"), "login_failures", ["at"])
    op.create_index("ix_login_failures_user_name_at", "login_failures", ["user_name", "at"])
    op.create_index("ix_login_failures_client_at", "login_failures", ["client", "at"])


def downgrade() -> None:
    op.drop_index("ix_login_failures_client_at", table_name="login_failures")
    op.drop_index("ix_login_failures_user_name_at", table_name="login_failures")
    op.drop_index(op.f("ix_login_failures_at"), table_name="login_failures")
    op.drop_table("login_failures")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
