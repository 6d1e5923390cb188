"""Logging set-up: only ``xrayd`` installs handlers (text for terminals, JSON for journald).

Format ``"auto"`` (the default) writes JSON lines when stderr is systemd's journal stream
(``JOURNAL_STREAM`` names stderr's device and inode, as systemd sets it for a service whose
``StandardError=journal``), and text otherwise. Each JSON line is one object with ``time``
(ISO 8601 UTC), ``level``, ``logger``, ``message``, the record's ``extra`` fields, and
``exception`` when there is one. Context goes in ``extra`` as internal ids or hashes, never
patient data.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal, TextIO

LogFormat = Literal["auto", "text", "json"]

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
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, ensure_ascii=False, default=str)


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
    """Install one handler on the root logger writing to ``stream`` (default stderr);
    idempotent."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xrayd", False):
            root.removeHandler(handler)
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler._xrayd = True  # type: ignore[attr-defined]
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
