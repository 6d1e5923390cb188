"""Logging set-up: only ``xrayd`` installs handlers (text for terminals, JSON for journald).

Format ``"auto"`` (the default) writes JSON lines when stderr is systemd's journal stream
(``JOURNAL_STREAM`` names stderr's device and inode, as systemd sets it for a service whose
``StandardError=journal``), and text otherwise. Each JSON line is one object with ``time``
(ISO 8601 UTC), ``level``, ``logger``, ``message``, the record's ``extra`` fields, and
``exception`` when there is one. Context goes in ``extra`` as internal ids or hashes, never
patient data.

Patient data stays out even when something fails: every record is made safe when it is created
(a log-record factory) and again by a filter on xrayd's handler, before any handler formats it.
A traceback keeps its frames but each exception's message is replaced by
:func:`storage.redact.describe_exception` (pydicom quotes the invalid value it found, a database
error carries its parameters); an exception passed as an argument is described the same way;
messages of other libraries' loggers (pydicom, pynetdicom, highdicom, SQLAlchemy, Python's
``warnings``, which are routed to the ``py.warnings`` logger) get the full
:func:`storage.redact.redact`; xrayd's own messages get :func:`storage.redact.redact_identifiers`
(UIDs hashed, DICOM person names withheld).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from storage.redact import describe_exception, format_exception, redact, redact_identifiers

LogFormat = Literal["auto", "text", "json"]

#: Top-level packages whose log messages xrayd writes itself (all others are third-party).
OWN_LOGGERS = frozenset({"xrayd", "storage", "dicom_node", "models", "retrain", "config"})

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra`` context fields are kept as keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Make ``record`` safe to write, in place (once; later calls change nothing).

    The message is formatted with its arguments (an exception argument described by
    :func:`~storage.redact.describe_exception`) and redacted; ``exc_info`` becomes a redacted
    traceback in ``exc_text`` (the exception object is dropped, so no formatter can print its
    raw message).
    """
    if getattr(record, "_xrayd_redacted", False):
        return record
    try:
        _redact_in_place(record)
    except Exception:  # never let logging raise at the call site; never write it unredacted
        record.msg, record.args = "log record withheld: it could not be made safe", ()
        record.exc_info, record.exc_text = None, None
    record._xrayd_redacted = True
    return record


def _redact_in_place(record: logging.LogRecord) -> None:
    own = record.name.partition(".")[0] in OWN_LOGGERS
    try:
        msg = record.msg  # e.g. pynetdicom's LOGGER.exception(exc): the exception itself
        message = describe_exception(msg) if isinstance(msg, BaseException) else str(msg)
        if record.args:
            message = message % _safe_args(record.args)
    except Exception:  # a broken call: keep the format, withhold the arguments
        message = f"{record.msg} (arguments withheld: they did not fit the message)"
    record.msg = redact_identifiers(message) if own else redact(message)
    record.args = ()
    if record.exc_info is not None:
        exc = record.exc_info[1]
        record.exc_text = format_exception(exc) if exc is not None else None
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)


def _safe_args(args: tuple[object, ...] | Mapping[str, object]) -> Any:
    def safe(value: object) -> object:
        return describe_exception(value) if isinstance(value, BaseException) else value

    if isinstance(args, Mapping):
        return {key: safe(value) for key, value in args.items()}
    return tuple(safe(value) for value in args)


class RedactingFilter(logging.Filter):
    """Applies :func:`redact_record` to every record a handler is given."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def _install_record_factory() -> None:
    """Wrap the log-record factory so every record, for every handler, is made safe when it is
    created (idempotent)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_xrayd_base", None) is not None:
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(current(*args, **kwargs))

    factory._xrayd_base = current  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def reset_logging() -> None:
    """Undo :func:`configure_logging`: its handler, the record factory, warnings capture."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xrayd", False):
            root.removeHandler(handler)
    base: Callable[..., logging.LogRecord] | None = getattr(
        logging.getLogRecordFactory(), "_xrayd_base", None
    )
    if base is not None:
        logging.setLogRecordFactory(base)
    logging.captureWarnings(False)


def under_journald(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is the journal stream systemd connected (``JOURNAL_STREAM`` is
    ``device:inode`` of it; a child whose stderr was redirected keeps the variable, so both
    numbers are compared)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or no file descriptor (pytest)
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def resolve_format(
    fmt: LogFormat, stream: TextIO, environ: Mapping[str, str] | None = None
) -> Literal["text", "json"]:
    """``"auto"``: JSON under journald, text otherwise (a terminal, a pipe, a file)."""
    if fmt != "auto":
        return fmt
    return "json" if under_journald(stream, environ) else "text"


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "auto", stream: TextIO | None = None
) -> None:
    """Install one handler on the root logger writing to ``stream`` (default stderr), records
    made safe (see the module's description), Python's warnings routed to logging;
    idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xrayd", False):
            root.removeHandler(handler)
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler._xrayd = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    _install_record_factory()
    # pydicom reports invalid values with warnings.warn as well as its logger.
    logging.captureWarnings(True)
    if resolve_format(fmt, out) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom (a line per PDU event), alembic (a line per plugin) and openjpeg (a line per
    # encoded tile) are chatty at INFO; highdicom names the source data sets' UIDs at INFO.
    for name in ("pynetdicom", "alembic", "openjpeg", "highdicom"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # torch's ONNX exporter warns that torchvision is absent (its ops are not used here).
    logging.getLogger("torch.onnx").setLevel(max(logging.ERROR, root.level))
