"""The runtime ``[model] runtime = "auto"`` chose, remembered per bundle and host.

Choosing measures every candidate runtime on a few phantoms (seconds to a minute at start-up,
per process). Each worker process of a site would repeat it at every start; the answer depends
only on the weights and on the machine (CPU model and count, thread count, the runtime
libraries' versions), so it is kept in a small JSON file beside the host's data (the caller
names the file, e.g. ``<data_dir>/cache/runtime-choice.json``) and reused while both match.

The file is a cache: unreadable or damaged, it is ignored (and rewritten); a runtime it names
that can no longer be built is chosen again. Writes are atomic (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["MAX_ENTRIES", "RuntimeChoiceCache", "host_fingerprint"]

#: entries kept (the newest): one per bundle and host configuration
MAX_ENTRIES = 32
_FORMAT = 1
_RUNTIME_LIBRARIES = ("onnxruntime", "openvino")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def host_fingerprint(threads: int) -> str:
    """What the choice depends on besides the weights: host name, CPU, thread count and the
    versions of torch and the runtime libraries (a SHA-256 of them)."""
    parts = [
        socket.gethostname(),
        platform.machine(),
        _cpu_model(),
        str(os.cpu_count()),
        f"threads={threads}",
        f"torch={torch.__version__}",
        *(f"{name}={_version(name)}" for name in _RUNTIME_LIBRARIES),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class RuntimeChoiceCache:
    """The chosen runtime per (weights SHA-256, host fingerprint), in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, weights_sha256: str, fingerprint: str) -> str | None:
        """The runtime chosen before for these weights on this host, or None."""
        entry = self._entries().get(_key(weights_sha256, fingerprint))
        runtime = entry.get("runtime") if isinstance(entry, dict) else None
        return runtime if isinstance(runtime, str) and runtime else None

    def put(self, weights_sha256: str, fingerprint: str, runtime: str) -> None:
        """Remember ``runtime``; a file that cannot be written is logged, not raised."""
        entries = self._entries()
        entries[_key(weights_sha256, fingerprint)] = {
            "runtime": runtime,
            "chosen_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        newest = sorted(entries.items(), key=lambda kv: str(kv[1].get("chosen_at", "")))
        kept = dict(newest[-MAX_ENTRIES:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".runtime-choice-", dir=self.path.parent)
            with os.fdopen(fd, "w") as out:
                json.dump({"format": _FORMAT, "entries": kept}, out, indent=1, sort_keys=True)
            Path(tmp).replace(self.path)
        except OSError as exc:
            logger.warning("cannot write the runtime choice cache: %s", type(exc).__name__)

    def _entries(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.warning("ignoring an unreadable runtime choice cache")
            return {}
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            return {}
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict)}


def _key(weights_sha256: str, fingerprint: str) -> str:
    return f"{weights_sha256}:{fingerprint}"
