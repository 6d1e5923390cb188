"""The skip policy stays applied: a test skips for something missing only through helpers.need.

``need(condition, reason)`` / ``need_tool(name)`` / ``need_module(name)`` in tests/helpers.py skip
locally and fail in CI (``CI=true``), so CI never passes by skipping what it was meant to run. A
direct ``pytest.skip`` / ``pytest.importorskip`` / ``skipif`` would skip in CI too; the only ones
allowed are listed below, each with why it is not about a missing server, tool or package.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

#: Any way of skipping that bypasses helpers.need.
DIRECT_SKIP = re.compile(
    r"pytest\s*\.\s*(skip|importorskip)\s*\("
    r"|\bskipif\s*\("
    r"|pytest\s*\.\s*mark\s*\.\s*skip\b"
    r"|\bunittest\s*\.\s*skip"
    r"|from\s+pytest\s+import\s+[^\n]*\b(skip|importorskip)\b"
)

#: (file relative to tests/, a fragment of the line) -> why the direct skip is allowed.
ALLOWED: dict[tuple[str, str], str] = {
    # The one implementation of the policy.
    ("helpers.py", "pytest.skip(reason)"): "need() itself: skips locally, fails in CI",
    # A parameter combination that cannot exist: pynetdicom refuses to send a UID over 64
    # characters; nothing is missing (read_header's unit test covers that UID).
    ("integration/node/test_listener.py", "pynetdicom refuses to send it"): "impossible case",
    # Privilege, not a missing tool: mounting a tmpfs needs root (CAP_SYS_ADMIN); an injected
    # failure covers the same path on every machine.
    ("integration/node/test_listener.py", "cannot mount a small tmpfs"): "needs root",
    ("unit/storage/test_storage_spool.py", "mounting a tmpfs needs root"): "needs root",
    ("unit/storage/test_storage_spool.py", "cannot mount a tmpfs here"): "needs root",
    # Privilege again, the other way round: root writes into a directory without write
    # permission, so "the database's directory is not writable" cannot be staged as root.
    ("integration/storage/test_sqlite_wal.py", "root may write anywhere"): "needs non-root",
    # The SQLite variant of a PostgreSQL-only behaviour (row locks, SKIP LOCKED); the
    # PostgreSQL variant runs, and fails in CI when the server is missing (pg_admin's need()).
    ("integration/storage/test_storage_jobs.py", "row locks: PostgreSQL only"): "dialect",
    ("integration/storage/test_storage_jobs.py", "SKIP LOCKED: PostgreSQL only"): "dialect",
    # atheris has wheels for x86-64 Linux, CPython < 3.14 only: elsewhere it cannot be
    # installed (platform-conditional); where it can, a missing atheris goes through need().
    ("unit/test_fuzz_corpus.py", "needs_atheris = pytest.mark.skipif("): "platform",
}


def direct_skips() -> set[tuple[str, str]]:
    """Every (file, line) under tests/ that skips directly, this file excepted."""
    found: set[tuple[str, str]] = set()
    for path in sorted(TESTS.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        rel = path.relative_to(TESTS).as_posix()
        for line in path.read_text(encoding="utf-8").splitlines():
            if DIRECT_SKIP.search(line):
                found.add((rel, line.strip()))
    return found


def _allowed(rel: str, line: str) -> bool:
    return any(rel == file and fragment in line for file, fragment in ALLOWED)


def test_no_direct_skips_outside_the_allow_list() -> None:
    offending = sorted(
        f"tests/{rel}: {line}" for rel, line in direct_skips() if not _allowed(rel, line)
    )
    assert not offending, (
        "skip for a missing server, tool or package through helpers.need / need_tool / "
        "need_module (they fail in CI), or add the line to ALLOWED with why:\n"
        + "\n".join(offending)
    )


def test_every_allow_list_entry_is_still_used() -> None:
    """A stale entry would let a new direct skip slip in under an old excuse."""
    skips = direct_skips()
    unused = [
        f"tests/{file}: {fragment}"
        for file, fragment in ALLOWED
        if not any(rel == file and fragment in line for rel, line in skips)
    ]
    assert not unused, "remove from ALLOWED:\n" + "\n".join(unused)


def test_the_pattern_catches_each_form() -> None:
    """The check is only as good as its pattern: each way of skipping directly is caught."""
    for line in (
        'pytest.skip("no server")',
        'mod = pytest.importorskip("onnx")',
        'needs = pytest.mark.skipif(True, reason="x")',
        "@pytest.mark.skip",
        "from pytest import skip",
        '@unittest.skipUnless(HAVE, "x")',
    ):
        assert DIRECT_SKIP.search(line), line
    for line in ('need(False, "no server")', "skipped = worker.run_once()", "# skips in CI"):
        assert not DIRECT_SKIP.search(line), line
