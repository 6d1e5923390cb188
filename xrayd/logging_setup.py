"""Logging set-up: only ``xrayd`` installs handlers (text for terminals, JSON for journald)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal

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
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: Literal["text", "json"] = "text") -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xrayd", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._xrayd = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom (a line per PDU event), alembic (a line per plugin) and openjpeg (a line per
    # encoded tile) are chatty at INFO.
    for name in ("pynetdicom", "alembic", "openjpeg"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    # torch's ONNX exporter warns that torchvision is absent (its ops are not used here).
    logging.getLogger("torch.onnx").setLevel(max(logging.ERROR, root.level))
