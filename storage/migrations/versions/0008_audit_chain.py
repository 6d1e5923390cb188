"""The audit trail becomes one vocabulary and a hash chain: ``audit_events`` gains ``prev_hash``
and ``row_hash``; the action names the web and the storage layer wrote (``caller_added``,
``login``, ...) are renamed to the dotted names the CLI used (``caller.added``,
``user.logged_in``, ...); the chain is computed over the existing rows in id order.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08

Written by hand; a frozen copy of ``storage/schema.py`` and of ``storage.audit``'s hash at this
revision (must not import them).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

GENESIS_HASH = "0" * 64
_CHUNK = 1000

# legacy action name -> the one vocabulary (names already dotted keep their name)
RENAMED = {
    "caller_added": "caller.added",
    "caller_removed": "caller.removed",
    "destination_added": "destination.added",
    "destination_removed": "destination.removed",
    "user_added": "user.added",
    "user_disabled": "user.disabled",
    "user_enabled": "user.enabled",
    "password_changed": "user.password_changed",
    "login": "user.logged_in",
    "logout": "user.logged_out",
    "login_failed": "user.login_failed",
    "login_locked": "user.login_locked",
    "login_unlocked": "user.login_unlocked",
    "token_created": "token.created",
    "token_revoked": "token.revoked",
    "study_viewed": "study.viewed",
    "review_assigned": "review.assigned",
    "override_created": "override.created",
    "model_registered": "model.registered",
    "model_promoted": "model.promoted",
    "model_rolled_back": "model.rolled_back",
    "model_relocated": "model.relocated",
    "retrain_succeeded": "retrain.succeeded",
    "retrain_skipped": "retrain.skipped",
    "retrain_failed": "retrain.failed",
    "validation_set_extended": "validation_set.extended",
    "job_retried": "job.retried",
    "delivery_retried": "delivery.retried",
    "audit_exported": "audit.exported",
}

_audit = sa.table(
    "audit_events",
    sa.column("id", sa.Integer()),
    sa.column("at", sa.DateTime(timezone=True)),
    sa.column("actor", sa.String()),
    sa.column("action", sa.String()),
    sa.column("object_type", sa.String()),
    sa.column("object_id", sa.String()),
    sa.column("detail", sa.JSON()),
    sa.column("prev_hash", sa.String()),
    sa.column("row_hash", sa.String()),
)


def _iso(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=UTC)  # SQLite keeps naive UTC
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _chain_hash(row: sa.RowMapping, prev_hash: str) -> str:
    canonical = json.dumps(
        {
            "id": row["id"],
            "at": _iso(row["at"]),
            "actor": row["actor"],
            "action": row["action"],
            "object_type": row["object_type"],
            "object_id": row["object_id"],
            "detail": row["detail"] if row["detail"] is not None else {},
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256((canonical + prev_hash).encode("ascii")).hexdigest()


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("prev_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(64), nullable=True))
    for old, new in RENAMED.items():
        conn.execute(_audit.update().where(_audit.c.action == old).values(action=new))
    # NULL details (none should exist) read back as {} from the ORM's default: store {} too
    conn.execute(_audit.update().where(_audit.c.detail.is_(None)).values(detail={}))

    prev = GENESIS_HASH
    last_id = 0
    while True:
        rows = (
            conn.execute(
                sa.select(
                    _audit.c.id,
                    _audit.c.at,
                    _audit.c.actor,
                    _audit.c.action,
                    _audit.c.object_type,
                    _audit.c.object_id,
                    _audit.c.detail,
                )
                .where(_audit.c.id > last_id)
                .order_by(_audit.c.id)
                .limit(_CHUNK)
            )
            .mappings()
            .all()
        )
        if not rows:
            break
        for row in rows:
            own = _chain_hash(row, prev)
            conn.execute(
                _audit.update().where(_audit.c.id == row["id"]).values(prev_hash=prev, row_hash=own)
            )
            prev = own
            last_id = row["id"]

    with op.batch_alter_table("audit_events") as batch:
        batch.alter_column("prev_hash", existing_type=sa.String(64), nullable=False)
        batch.alter_column("row_hash", existing_type=sa.String(64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
