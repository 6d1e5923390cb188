"""Spool retention: an instance row records when retention deleted its file (the row stays for
statistics); studies are looked up oldest first by their last received instance.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Written by hand; a frozen copy of ``storage/schema.py`` at this revision (must not import it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_studies_last_received_at", "studies", ["last_received_at"])


def downgrade() -> None:
    op.drop_index("ix_studies_last_received_at", table_name="studies")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("purged_at")
