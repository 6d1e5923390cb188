"""Test modules are imported by their base name (tests/ has no packages), so two test files
with one name break collection of the whole suite ("import file mismatch"). Caught here, with
both paths, before a CI run finds it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if "__pycache__" not in path.parts:
            seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {
        name: paths
        for name, paths in seen.items()
        if len(paths) > 1 and name not in ("__init__.py", "conftest.py")
    }
    assert not clashes, clashes
