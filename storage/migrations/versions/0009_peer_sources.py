"""Callers and destinations remember which door an administrator used to add them: ``source``
may also be ``web`` (the admin pages) or ``api`` (the REST API), besides ``config`` (the
settings file) and ``cli``. Rows added before keep their ``cli``. A downgrade relabels ``web``
and ``api`` rows as ``cli`` (what the older code wrote for them).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Written by hand; a frozen copy of ``storage/schema.py`` at this revision (must not import it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

OLD_SOURCES = "source IN ('config', 'cli')"
NEW_SOURCES = "source IN ('config', 'cli', 'web', 'api')"
TABLES = ("callers", "destinations")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_source"), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_source"), NEW_SOURCES)


def downgrade() -> None:
    for table in TABLES:
        t = sa.table(table, sa.column("source", sa.String(8)))
        op.get_bind().execute(t.update().where(t.c.source.in_(("web", "api"))).values(source="cli"))
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_source"), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_source"), OLD_SOURCES)
