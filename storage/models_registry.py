"""The ``model_versions`` table, read side: which model bundles xrayd has registered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.schema import ModelVersion

__all__ = ["ModelVersionRow", "list_model_versions"]


@dataclass(frozen=True)
class ModelVersionRow:
    id: int
    name: str
    version: str
    sha256: str
    path: str
    state: str
    metrics: dict[str, Any] | None
    created_at: datetime
    promoted_at: datetime | None


def list_model_versions(sm: sessionmaker[Session]) -> list[ModelVersionRow]:
    """Every registered model version, newest first."""
    with sm() as session:
        rows = session.scalars(
            select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
        ).all()
        return [
            ModelVersionRow(
                id=r.id,
                name=r.name,
                version=r.version,
                sha256=r.sha256,
                path=r.path,
                state=r.state,
                metrics=None if r.metrics is None else dict(r.metrics),
                created_at=r.created_at,
                promoted_at=r.promoted_at,
            )
            for r in rows
        ]
