"""xrayd.service caps its memory and its tasks (threads), so that a flood of associations or a
runaway analysis ends in a restart of xrayd, not in a host out of memory or PIDs. The unit
itself is verified by systemd-analyze in test_systemd_units."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import NodeSettings

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "xrayd.service"
GIB = 1024**3
UNITS = {"K": 1024, "M": 1024**2, "G": GIB, "T": 1024 * GIB}
#: the web server's worker threads (anyio's default thread pool)
WEB_THREADS = 40


def _service() -> dict[str, str]:
    text = UNIT.read_text().split("[Service]", 1)[1].split("\n[", 1)[0]
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Z]\w+=", line))


def _bytes(value: str) -> int:
    m = re.fullmatch(r"(\d+)([KMGT]?)", value)
    assert m, f"not an absolute size: {value}"
    return int(m.group(1)) * UNITS.get(m.group(2), 1)


def test_memory_is_capped_with_room_for_the_model_and_retraining() -> None:
    service = _service()
    high, cap = _bytes(service["MemoryHigh"]), _bytes(service["MemoryMax"])
    assert 4 * GIB <= high < cap <= 16 * GIB


def test_tasks_are_capped_above_what_the_defaults_need() -> None:
    tasks = int(_service()["TasksMax"])
    node = NodeSettings()
    # ~4 threads per association and listener process, the web pool, and as much again for
    # the model runtimes' pools and xrayd's own workers.
    needed = 4 * node.max_associations * node.listener_processes + WEB_THREADS
    assert 2 * needed <= tasks <= 4096
