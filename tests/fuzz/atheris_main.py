"""What the atheris harnesses share: a memory ceiling, instrumentation, libFuzzer's loop."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable
from types import ModuleType

import atheris

#: modules whose Python code atheris instruments for coverage (pydicom's parsers and our code);
#: numpy and Pillow are imported before, uninstrumented; nothing here may import pydicom first
INSTRUMENTED = ["pydicom", "dicom_node", "models", "fuzz_targets"]


def limit_memory() -> None:
    """Make an allocation over ``FUZZ_MEMORY_MB`` (default 2048) a ``MemoryError`` - which the
    targets report - instead of the kernel's OOM killer or a stalled shared machine."""
    megabytes = int(os.environ.get("FUZZ_MEMORY_MB", "2048"))
    if megabytes > 0:
        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def load_targets() -> ModuleType:
    import numpy  # noqa: F401 - first, so that it is not instrumented
    import PIL.Image  # noqa: F401

    with atheris.instrument_imports(include=INSTRUMENTED):
        import fuzz_targets
    return fuzz_targets


def run(one: Callable[[bytes], None]) -> None:
    """libFuzzer's loop over ``one`` (its arguments: corpus dirs, -max_total_time=...)."""
    limit_memory()
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
