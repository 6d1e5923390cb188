"""The one rule set for what administrators type: AE titles, hosts, ports, destinations.

The CLI, the admin pages and the REST API all call these (through the services), so a value is
accepted or refused with the same message wherever it is typed. AE titles follow the rule of
the settings file (:func:`storage.peers.check_ae_title`, which is :mod:`config.settings`'s):
1 to 16 characters of the DICOM default repertoire, no backslash or control characters,
leading and trailing spaces not significant, never truncated. Invalid input raises
:class:`InvalidInputError` (an :class:`storage.peers.InvalidEntryError`), whose message names
the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from config.settings import OBJECT_KINDS, DestinationSettings
from storage.peers import DestinationRow, InvalidEntryError, check_ae_title, check_host
from xrayd.pipeline.delivery import stored_tls

__all__ = [
    "InvalidInputError",
    "ae_title",
    "destination",
    "host",
    "object_kinds",
    "port",
    "remote",
    "token_lifetime",
]


class InvalidInputError(InvalidEntryError):
    """An administrator's input breaks a rule (the message names the field and the rule)."""


def ae_title(value: str) -> str:
    """The AE title without padding spaces; InvalidInputError if it breaks the rule."""
    try:
        return check_ae_title(value)
    except InvalidEntryError as exc:
        raise InvalidInputError(str(exc)) from None


def host(value: str | None) -> str | None:
    """A host name or address in lower case; None for blank (any host)."""
    try:
        return check_host(value)
    except InvalidEntryError as exc:
        raise InvalidInputError(str(exc)) from None


def port(value: int | str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"port must be a number, not {str(value)[:20]!r}") from None
    if not 1 <= number <= 65535:
        raise InvalidInputError("port must be between 1 and 65535")
    return number


#: the longest an API token may be valid for, in days
MAX_TOKEN_DAYS = 3650


def token_lifetime(days: float | None) -> timedelta | None:
    """An API token's lifetime from a number of days (None: valid until revoked)."""
    if days is None:
        return None
    if not 0 < days <= MAX_TOKEN_DAYS:
        raise InvalidInputError(f"days must be more than 0 and at most {MAX_TOKEN_DAYS}")
    return timedelta(days=days)


def object_kinds(values: Iterable[str]) -> tuple[str, ...]:
    """The object kinds to send (at least one, each known)."""
    kinds = tuple(k.strip() for k in values if k.strip())
    bad = [k for k in kinds if k not in OBJECT_KINDS]
    if bad:
        raise InvalidInputError(
            f"send: unknown object kind(s) {', '.join(bad)}; use {', '.join(OBJECT_KINDS)}"
        )
    if not kinds:
        raise InvalidInputError(
            f"send: choose at least one object kind to send ({', '.join(OBJECT_KINDS)})"
        )
    return kinds


def remote(value: str) -> tuple[str, str, int]:
    """``AE@HOST:PORT`` as ``(AE title, host, port)``, each checked by its rule."""
    title, at, rest = value.rpartition("@")
    name, colon, number = rest.rpartition(":")
    if not at or not colon or not name:
        raise InvalidInputError(f"remote must be AE@HOST:PORT, not {value[:80]!r}")
    checked_host = host(name.strip("[]"))
    if checked_host is None:
        raise InvalidInputError("remote: the host must not be empty")
    return ae_title(title), checked_host, port(number)


def destination(values: Mapping[str, Any], *, source: str) -> DestinationRow:
    """A destination from form, JSON or command-line values, checked by the rules of the
    settings file's ``[[destinations]]`` (the AE title, host and port by the rules above
    first, so their messages are the same as everywhere else)."""
    values = dict(values)
    values["ae_title"] = ae_title(str(values.get("ae_title", "")))
    checked_host = host(str(values.get("host", "")))
    if checked_host is None:
        raise InvalidInputError("destination host must not be empty")
    values["host"] = checked_host
    values["port"] = port(values.get("port", ""))
    values["send"] = list(object_kinds(values.get("send") or ()))
    try:
        d = DestinationSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'destination'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InvalidInputError(f"invalid destination: {problems}") from None
    return DestinationRow(
        name=d.name,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        send=tuple(d.send),
        source=source,
        tls=stored_tls(d.tls),
    )
