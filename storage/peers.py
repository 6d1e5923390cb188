"""Allowed callers and result destinations (their audit rows: :mod:`storage.audit`).

Callers and destinations come from two sources: the settings file (``source="config"``, synced
at start-up by :func:`seed_callers` / :func:`seed_destinations`) and the CLI
(``source="cli"``, kept across restarts). Every function takes a ``sessionmaker`` and commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config.settings import _check_ae_title
from storage import audit
from storage.errors import InvalidEntryError as InvalidEntryError
from storage.rows import from_attributes
from storage.schema import Caller, Destination, Source, utcnow

logger = logging.getLogger(__name__)

MAX_AE_TITLE = 16


@dataclass(frozen=True)
class CallerRow:
    ae_title: str
    host: str | None  # None: from any host
    source: str


@dataclass(frozen=True)
class DestinationRow:
    name: str
    ae_title: str
    host: str
    port: int
    send: tuple[str, ...]
    source: str = Source.CONFIG.value
    tls: Mapping[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class SeedResult:
    added: int
    updated: int
    removed: int


# -- validation --------------------------------------------------------------------------------


def check_ae_title(value: str) -> str:
    """The AE title without its padding spaces, by the one rule of :mod:`config.settings` (1 to
    16 characters of the DICOM default repertoire, no backslash or control characters; never
    truncated); InvalidEntryError says what is wrong."""
    try:
        return _check_ae_title(value)
    except ValueError as exc:
        raise InvalidEntryError(str(exc)) from None


def check_host(value: str | None) -> str | None:
    """A host name or address in lower case (None or blank: any host); at most 255 printable
    characters, else InvalidEntryError."""
    if value is None or not value.strip():
        return None
    host = value.strip().lower()
    if len(host) > 255 or not host.isprintable():
        raise InvalidEntryError("host must be at most 255 printable characters")
    return host


_ae, _host = check_ae_title, check_host


def _source(value: str) -> str:
    if value not in {s.value for s in Source}:
        raise InvalidEntryError(f"source must be one of {', '.join(s.value for s in Source)}")
    return value


class _TakenError(Exception):
    """The row just added collides with one added concurrently (a unique constraint)."""


def _flush_new(session: Session) -> None:
    """Insert the row just added; _TakenError if a unique constraint refuses it. (Only this
    insert: an audit row that fails afterwards is not mistaken for a duplicate.)"""
    try:
        session.flush()
    except IntegrityError:
        raise _TakenError from None


def _host_is(column: Any, host: str | None) -> ColumnElement[bool]:
    return column.is_(None) if host is None else column == host  # type: ignore[no-any-return]


def _add_new(
    sm: sessionmaker[Session],
    row: Caller | Destination,
    *same: ColumnElement[bool],
    actor: str | None,
    action: audit.Action,
    object_id: str,
    detail: Mapping[str, Any],
) -> bool:
    """Add ``row`` unless a row of its table matches ``same`` (False then, also when one is
    added concurrently); given an ``actor``, with its audit row in the same transaction."""
    try:
        with sm.begin() as session:
            if session.scalar(select(exists().where(*same))):
                return False
            session.add(row)
            _flush_new(session)
            _audit(session, actor=actor, action=action, object_id=object_id, detail=detail)
    except _TakenError:  # added concurrently
        return False
    return True


def _remove(
    sm: sessionmaker[Session],
    table: type[Caller | Destination],
    *matching: ColumnElement[bool],
    actor: str | None,
    action: audit.Action,
    object_id: str,
    detail: Mapping[str, Any] | None,
) -> int:
    """Delete the rows of ``table`` that match; how many. Given an ``actor``, a removal is
    audited in the same transaction."""
    with sm.begin() as session:
        result = session.execute(delete(table).where(*matching))
        removed = int(getattr(result, "rowcount", 0) or 0)
        if removed:
            _audit(session, actor=actor, action=action, object_id=object_id, detail=detail)
        return removed


def _audit(
    session: Session,
    *,
    actor: str | None,
    action: audit.Action,
    object_id: str,
    detail: Mapping[str, Any] | None,
) -> None:
    """The change's audit row, given an ``actor``; its object type is the action's object kind
    (``caller.added``: ``caller``)."""
    if actor is not None:
        audit.append(
            session,
            actor=actor,
            action=action,
            object_type=action.partition(".")[0],
            object_id=object_id,
            detail=detail,
        )


# -- callers -----------------------------------------------------------------------------------


def list_callers(
    sm: sessionmaker[Session], *, limit: int | None = None, offset: int = 0
) -> list[CallerRow]:
    """Callers by AE title and host; ``limit``/``offset`` select a page (in SQL)."""
    stmt = select(Caller).order_by(Caller.ae_title, Caller.host, Caller.id)
    with sm() as session:
        rows = session.scalars(stmt.limit(limit).offset(offset)).all()
        return [CallerRow(ae_title=r.ae_title, host=r.host, source=r.source) for r in rows]


def count_callers(sm: sessionmaker[Session]) -> int:
    with sm() as session:
        return int(session.scalar(select(func.count(Caller.id))) or 0)


def add_caller(
    sm: sessionmaker[Session],
    ae_title: str,
    host: str | None = None,
    source: str = "cli",
    *,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> bool:
    """Allow ``ae_title`` (from ``host``, or any host if None). False if already allowed.

    Given an ``actor``, the audit row (``caller.added``, detail ``host`` plus ``detail``) is
    appended in the same transaction: both commit or neither does."""
    title, host_ = _ae(ae_title), _host(host)
    source = _source(source)
    return _add_new(
        sm,
        Caller(ae_title=title, host=host_, source=source, created_at=utcnow()),
        Caller.ae_title == title,
        _host_is(Caller.host, host_),
        actor=actor,
        action=audit.Action.CALLER_ADDED,
        object_id=title,
        detail={"host": host_, **(detail or {})},
    )


def remove_caller(
    sm: sessionmaker[Session],
    ae_title: str,
    host: str | None = None,
    *,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Remove the exact (AE title, host) entry; returns the number of rows removed.

    A config-sourced entry comes back at the next :func:`seed_callers`. Given an ``actor``, a
    removal is audited (``caller.removed``) in the same transaction.
    """
    title, host_ = _ae(ae_title), _host(host)
    return _remove(
        sm,
        Caller,
        Caller.ae_title == title,
        _host_is(Caller.host, host_),
        actor=actor,
        action=audit.Action.CALLER_REMOVED,
        object_id=title,
        detail={"host": host_, **(detail or {})},
    )


def seed_callers(
    sm: sessionmaker[Session], entries: Sequence[tuple[str, str | None]]
) -> SeedResult:
    """Make the config-sourced callers equal to ``entries``; CLI-sourced rows are kept."""
    wanted = {(_ae(ae), _host(host)) for ae, host in entries}
    added = removed = 0
    with sm.begin() as session:
        rows = session.scalars(select(Caller).with_for_update()).all()
        present = {(r.ae_title, r.host) for r in rows}
        for row in rows:
            if row.source == Source.CONFIG and (row.ae_title, row.host) not in wanted:
                session.delete(row)
                removed += 1
        now = utcnow()
        for title, host in sorted(wanted - present, key=lambda e: (e[0], e[1] or "")):
            session.add(
                Caller(ae_title=title, host=host, source=Source.CONFIG.value, created_at=now)
            )
            added += 1
    if added or removed:
        logger.info("callers synced from config", extra={"added": added, "removed": removed})
    return SeedResult(added=added, updated=0, removed=removed)


def caller_allowed(sm: sessionmaker[Session], ae_title: str, host: str | None) -> bool:
    """True if a row allows this AE title from this host (a row with no host allows any)."""
    try:
        title, host_ = _ae(ae_title), _host(host)
    except InvalidEntryError:
        return False
    condition = (
        Caller.host.is_(None) if host_ is None else or_(Caller.host.is_(None), Caller.host == host_)
    )
    with sm() as session:
        return bool(session.scalar(select(exists().where(Caller.ae_title == title, condition))))


# -- destinations ------------------------------------------------------------------------------


def _checked_destination(row: DestinationRow, source: str) -> dict[str, Any]:
    name = row.name.strip()
    if not name or len(name) > 64:
        raise InvalidEntryError("destination name must be 1 to 64 characters")
    host = _host(row.host)
    if host is None:
        raise InvalidEntryError("destination host must not be empty")
    if not 1 <= row.port <= 65535:
        raise InvalidEntryError("destination port must be between 1 and 65535")
    if any(not isinstance(s, str) or not s for s in row.send):
        raise InvalidEntryError("destination 'send' must be a list of non-empty strings")
    return {
        "name": name,
        "ae_title": _ae(row.ae_title),
        "host": host,
        "port": row.port,
        "send": list(row.send),
        "tls": dict(row.tls) if row.tls is not None else None,
        "source": _source(source),
    }


def _destination_row(d: Destination) -> DestinationRow:
    return from_attributes(DestinationRow, d, send=tuple(d.send))


def list_destinations(
    sm: sessionmaker[Session], *, limit: int | None = None, offset: int = 0
) -> list[DestinationRow]:
    """Destinations by name; ``limit``/``offset`` select a page (in SQL)."""
    stmt = select(Destination).order_by(Destination.name)
    with sm() as session:
        rows = session.scalars(stmt.limit(limit).offset(offset)).all()
        return [_destination_row(r) for r in rows]


def count_destinations(sm: sessionmaker[Session]) -> int:
    with sm() as session:
        return int(session.scalar(select(func.count(Destination.id))) or 0)


def get_destination(sm: sessionmaker[Session], name: str) -> DestinationRow | None:
    with sm() as session:
        row = session.scalar(select(Destination).where(Destination.name == name.strip()))
        return None if row is None else _destination_row(row)


def add_destination(
    sm: sessionmaker[Session],
    row: DestinationRow,
    *,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> bool:
    """Add a destination with ``row.source``; False if the name is already taken.

    Given an ``actor``, the audit row (``destination.added``: remote, object kinds, TLS or not,
    plus ``detail``) is appended in the same transaction."""
    values = _checked_destination(row, row.source)
    return _add_new(
        sm,
        Destination(**values, created_at=utcnow()),
        Destination.name == values["name"],
        actor=actor,
        action=audit.Action.DESTINATION_ADDED,
        object_id=values["name"],
        detail={
            "remote": f"{values['ae_title']}@{values['host']}:{values['port']}",
            "send": list(values["send"]),
            "tls": values["tls"] is not None,
            **(detail or {}),
        },
    )


def remove_destination(
    sm: sessionmaker[Session],
    name: str,
    *,
    actor: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> int:
    """Remove the destination named ``name``; returns the number of rows removed. Given an
    ``actor``, a removal is audited (``destination.removed``) in the same transaction."""
    return _remove(
        sm,
        Destination,
        Destination.name == name.strip(),
        actor=actor,
        action=audit.Action.DESTINATION_REMOVED,
        object_id=name.strip(),
        detail=detail,
    )


def seed_destinations(sm: sessionmaker[Session], entries: Sequence[DestinationRow]) -> SeedResult:
    """Make the config-sourced destinations equal to ``entries`` (matched by name).

    Missing ones are added, changed ones updated, config-sourced ones no longer listed removed.
    CLI-sourced rows are kept; if the settings name one, the settings win and it becomes
    config-sourced (the settings file is the operator's declared truth).
    """
    wanted = {v["name"]: v for v in (_checked_destination(e, Source.CONFIG) for e in entries)}
    added = updated = removed = 0
    with sm.begin() as session:
        rows = {r.name: r for r in session.scalars(select(Destination).with_for_update()).all()}
        for name, row in rows.items():
            if row.source == Source.CONFIG and name not in wanted:
                session.delete(row)
                removed += 1
        for name, values in wanted.items():
            existing = rows.get(name)
            if existing is None:
                session.add(Destination(**values, created_at=utcnow()))
                added += 1
                continue
            changed = False
            for key, value in values.items():
                if getattr(existing, key) != value:
                    setattr(existing, key, value)
                    changed = True
            updated += int(changed)
    if added or updated or removed:
        logger.info(
            "destinations synced from config",
            extra={"added": added, "updated": updated, "removed": removed},
        )
    return SeedResult(added=added, updated=updated, removed=removed)
