"""Replay fuzz inputs through the targets in a process of bounded memory; one JSON line each.

    .venv/bin/python tests/fuzz/replay.py header|pixels|analysis FILE...

``header`` and ``pixels`` run :mod:`fuzz_targets`; ``analysis`` runs the real
``xrayd.pipeline.analyse.StudyAnalyser._read`` (read, prepare, header copy) on each file, which must
return, whatever the file holds. The memory ceiling (``FUZZ_MEMORY_MB``, 1024 by default)
turns a regressed pixel bomb into a reported failure instead of an exhausted machine. Each
line: ``{"file": ..., "ok": true}`` or ``{"file": ..., "ok": false, "error": ...}``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fuzz_targets


def _analysis() -> Callable[[bytes], None]:
    """The real ``StudyAnalyser._read`` on a file: it must return, never raise."""
    from xrayd.pipeline.analyse import StudyAnalyser

    class Spool:
        def absolute(self, relative: str) -> Path:
            return Path(relative)

    analyser: Any = StudyAnalyser(None, Spool(), lambda: None)  # type: ignore[arg-type]
    ready = SimpleNamespace(
        model=SimpleNamespace(metadata=SimpleNamespace(preprocess=fuzz_targets.PIXEL_PARAMS[0]))
    )

    def one(path: bytes) -> None:
        instance = SimpleNamespace(
            spool_path=path.decode(), sop_instance_uid=fuzz_targets.SOP_INSTANCE_UID
        )
        source = analyser._read(instance, ready)
        if source.prepared is None and not source.reason:
            raise fuzz_targets.Finding("not analysed, without a reason")

    return one


def _data_segment_bytes() -> int:
    """VmData of this process (what RLIMIT_DATA limits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str]) -> int:
    kind, files = argv[0], argv[1:]
    megabytes = int(os.environ.get("FUZZ_MEMORY_MB", "1024"))
    fuzz_targets.quiet()
    logging.disable(logging.CRITICAL)
    if kind == "analysis":
        target = _analysis()  # torch is imported before the ceiling is set
    else:
        target = {"header": fuzz_targets.header_one, "pixels": fuzz_targets.pixels_one}[kind]
    if megabytes > 0:  # on top of the data segment the imports already mapped
        limit = _data_segment_bytes() + megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    failed = 0
    for name in files:
        path = Path(name)
        try:
            target(str(path).encode() if kind == "analysis" else path.read_bytes())
            line: dict[str, object] = {"file": name, "ok": True}
        except BaseException as exc:  # everything is reported, nothing stops the replay
            failed += 1
            tb = "".join(traceback.format_exception(exc, limit=-6))
            line = {"file": name, "ok": False, "error": f"{type(exc).__name__}: {exc}", "tb": tb}
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
