"""The model registry (``model_versions``): every bundle xrayd knows, which one is served, and
how each got there (gate verdict, training manifest, who promoted it when).

Exactly one version is ``active``. :func:`promote` makes a candidate (or a retired version)
active and retires the previous one; :func:`rollback` re-activates the version that was active
before the current one. Every change is an audit event in the same transaction. Both take a
``check`` of the version about to become active (the caller verifies its bundle's files against
the recorded sha256; storage does not read bundles): when it raises, nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.errors import ConflictError, NotFoundError
from storage.rows import from_attributes
from storage.schema import ModelState, ModelVersion, utcnow

__all__ = [
    "ModelVersionRow",
    "RegistryError",
    "VersionCheck",
    "VersionNotFoundError",
    "active_version",
    "count_model_versions",
    "ensure_active",
    "get_version",
    "list_model_versions",
    "promote",
    "register_version",
    "relocate",
    "rollback",
]


class RegistryError(ConflictError, ValueError):
    """A registry change that is not allowed (the message says why)."""


class VersionNotFoundError(NotFoundError, RegistryError):
    """No model version of that name is registered."""


#: Called with the version about to become active; raises to refuse the change.
VersionCheck = Callable[["ModelVersionRow"], None]


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
    promoted_by: str | None = None
    gate: dict[str, Any] | None = None
    manifest_sha256: str | None = None
    parent_version: str | None = None
    run_id: int | None = None


def _row(r: ModelVersion) -> ModelVersionRow:
    return from_attributes(
        ModelVersionRow,
        r,
        metrics=None if r.metrics is None else dict(r.metrics),
        gate=None if r.gate is None else dict(r.gate),
    )


def list_model_versions(
    sm: sessionmaker[Session], *, limit: int | None = None, offset: int = 0
) -> list[ModelVersionRow]:
    """Registered model versions, newest first; ``limit``/``offset`` select a page (in SQL)."""
    stmt = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.id.desc())
    with sm() as session:
        rows = session.scalars(stmt.limit(limit).offset(offset)).all()
        return [_row(r) for r in rows]


def count_model_versions(sm: sessionmaker[Session]) -> int:
    with sm() as session:
        return int(session.scalar(select(func.count(ModelVersion.id))) or 0)


def get_version(sm: sessionmaker[Session], version: str) -> ModelVersionRow | None:
    with sm() as session:
        r = session.scalar(
            select(ModelVersion).where(ModelVersion.version == version).order_by(ModelVersion.id)
        )
        return None if r is None else _row(r)


def active_version(sm: sessionmaker[Session]) -> ModelVersionRow | None:
    with sm() as session:
        r = session.scalar(select(ModelVersion).where(ModelVersion.state == ModelState.ACTIVE))
        return None if r is None else _row(r)


def register_version(
    session: Session,
    *,
    name: str,
    version: str,
    sha256: str,
    path: str,
    state: str,
    actor: str,
    metrics: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
    manifest_sha256: str | None = None,
    parent_version: str | None = None,
    run_id: int | None = None,
) -> ModelVersionRow:
    """Add a version in the caller's transaction (``state``: candidate or rejected, or
    active for the very first model)."""
    if state == ModelState.ACTIVE and session.scalar(
        select(ModelVersion.id).where(ModelVersion.state == ModelState.ACTIVE)
    ):
        raise RegistryError("a version is active already: register as candidate and promote")
    row = ModelVersion(
        name=name,
        version=version,
        sha256=sha256,
        path=path,
        state=state,
        metrics=metrics,
        created_at=utcnow(),
        gate=gate,
        manifest_sha256=manifest_sha256,
        parent_version=parent_version,
        run_id=run_id,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise RegistryError(f"model {name} {version} is registered already") from exc
    audit.append(
        session,
        actor=actor,
        action=audit.Action.MODEL_REGISTERED,
        object_type="model_version",
        object_id=version,
        detail={
            "name": name,
            "sha256": sha256,
            "state": state,
            "gate": (gate or {}).get("verdict"),
        },
    )
    return _row(row)


def ensure_active(
    sm: sessionmaker[Session], *, name: str, version: str, sha256: str, path: str, actor: str
) -> ModelVersionRow:
    """The active version; on a registry with none, register this bundle as active (the
    configured or default bundle at first start).

    Several processes starting at once on an empty registry race to register the same bundle
    (there is no row to lock yet): the losers find the winner's row and return it."""
    try:
        return _ensure_active(sm, name=name, version=version, sha256=sha256, path=path, actor=actor)
    except RegistryError:
        with sm() as session:
            current = session.scalar(
                select(ModelVersion).where(ModelVersion.state == ModelState.ACTIVE)
            )
            if current is None:
                raise
            return _row(current)


def _ensure_active(
    sm: sessionmaker[Session], *, name: str, version: str, sha256: str, path: str, actor: str
) -> ModelVersionRow:
    with sm.begin() as session:
        current = session.scalar(
            select(ModelVersion).where(ModelVersion.state == ModelState.ACTIVE).with_for_update()
        )
        if current is not None:
            return _row(current)
        same = session.scalar(
            select(ModelVersion).where(ModelVersion.name == name, ModelVersion.version == version)
        )
        if same is not None:
            _activate(session, same, actor=actor, action=audit.Action.MODEL_PROMOTED)
            return _row(same)
        row = register_version(
            session,
            name=name,
            version=version,
            sha256=sha256,
            path=path,
            state="active",
            actor=actor,
        )
        model = session.get(ModelVersion, row.id)
        assert model is not None
        _mark_promoted(model, actor)
        return _row(model)


def relocate(sm: sessionmaker[Session], version: str, sha256: str, path: str) -> bool:
    """Point ``version`` at a new directory holding the same weights (a reinstall moved the
    bundle); refused (False) when the sha256 differs. Audited."""
    with sm.begin() as session:
        row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
        if row is None or row.sha256 != sha256:
            return False
        if row.path != path:
            audit.append(
                session,
                actor="xrayd",
                action=audit.Action.MODEL_RELOCATED,
                object_type="model_version",
                object_id=version,
                detail={"from": row.path, "to": path},
            )
            row.path = path
        return True


def promote(
    sm: sessionmaker[Session], version: str, *, actor: str, check: VersionCheck | None = None
) -> ModelVersionRow:
    """Make ``version`` active (a candidate that passed the gate, or a retired version);
    ``check`` may refuse it (see the module docstring)."""
    with sm.begin() as session:
        rows = session.scalars(select(ModelVersion).with_for_update()).all()
        target = next((r for r in rows if r.version == version), None)
        if target is None:
            raise VersionNotFoundError(f"no model version {version!r}")
        if target.state == ModelState.ACTIVE:
            return _row(target)
        if target.state == ModelState.REJECTED:
            raise RegistryError(f"model {version} failed the promotion gate and cannot be served")
        if target.state == ModelState.CANDIDATE and (target.gate or {}).get("verdict") != "passed":
            raise RegistryError(f"model {version} has no passing gate verdict")
        previous = next((r for r in rows if r.state == ModelState.ACTIVE), None)
        _activate(
            session,
            target,
            actor=actor,
            action=audit.Action.MODEL_PROMOTED,
            retiring=previous,
            check=check,
            detail={"previous": previous.version if previous is not None else None},
        )
        return _row(target)


def rollback(
    sm: sessionmaker[Session], *, actor: str, check: VersionCheck | None = None
) -> ModelVersionRow:
    """Re-activate the version that was active before the current one; ``check`` may refuse
    it (see the module docstring)."""
    with sm.begin() as session:
        rows = session.scalars(select(ModelVersion).with_for_update()).all()
        current = next((r for r in rows if r.state == ModelState.ACTIVE), None)
        if current is None:
            raise RegistryError("no model is active")
        earlier = [
            r
            for r in rows
            if r.state == ModelState.RETIRED
            and r.promoted_at is not None
            and (current.promoted_at is None or r.promoted_at <= current.promoted_at)
        ]
        if not earlier:
            raise RegistryError("there is no earlier model to roll back to")
        target = max(earlier, key=lambda r: (r.promoted_at, r.id))
        _activate(
            session,
            target,
            actor=actor,
            action=audit.Action.MODEL_ROLLED_BACK,
            retiring=current,
            check=check,
            detail={"from": current.version},
        )
        return _row(target)


def _mark_promoted(target: ModelVersion, actor: str) -> None:
    target.promoted_at = utcnow()
    target.promoted_by = actor


def _activate(
    session: Session,
    target: ModelVersion,
    *,
    actor: str,
    action: audit.Action,
    retiring: ModelVersion | None = None,
    check: VersionCheck | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Make ``target`` the active version in the caller's transaction, retiring ``retiring``
    (the version active until now), with its audit row; ``check`` may refuse it first."""
    if check is not None:
        check(_row(target))
    if retiring is not None:
        retiring.state = ModelState.RETIRED.value
    target.state = ModelState.ACTIVE.value
    _mark_promoted(target, actor)
    audit.append(
        session,
        actor=actor,
        action=action,
        object_type="model_version",
        object_id=target.version,
        detail=detail,
    )
