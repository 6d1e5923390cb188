"""Index the byte-store keys of instances and result objects, which ``xrayd store sweep`` and
``xrayd store copy-to-s3`` look up 500 at a time (without an index each lookup scans the
table).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

Written by hand; a frozen copy of ``storage/schema.py`` at this revision (must not import it).
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_instances_spool_path"), "instances", ["spool_path"])
    op.create_index(op.f("ix_results_file_path"), "results", ["file_path"])


def downgrade() -> None:
    op.drop_index(op.f("ix_results_file_path"), table_name="results")
    op.drop_index(op.f("ix_instances_spool_path"), table_name="instances")
