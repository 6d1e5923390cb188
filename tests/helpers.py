"""Helpers shared by tests: skip-or-fail for missing peers, settings for a test node."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get("XRAYD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI") == "true"
#: The phantom bundle (kept in step with models.bundle.phantom_bundle_path without importing
#: torch here).
PHANTOM = Path(__file__).resolve().parents[1] / "models" / "bundles" / "xrayd-phantom"


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when a real peer, server, tool or package is missing; in CI
    (``CI=true``) that is a failure.

    The one way a test may skip for something missing (CONTRIBUTING.md, "Skip policy";
    tests/unit/test_skip_policy.py keeps direct ``pytest.skip`` out of the tests)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def need_tool(name: str, install: str = "apt-get install dcmtk dicom3tools") -> str:
    """The path of command-line tool ``name``; :func:`need` when it is not on ``PATH``."""
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed ({install})")
    assert path is not None
    return path


def need_module(name: str, install: str = "pip install -e '.[dev]'") -> ModuleType:
    """Import ``name``; :func:`need` when it is not installed (in place of
    ``pytest.importorskip``, which skips in CI too)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        need(False, f"{name} is not installed ({install}): {exc}")
        raise  # unreachable: need() skipped or failed


def _pg_reachable() -> str | None:
    try:
        import psycopg

        dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: not usable here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


def make_settings(data_dir: Path, database_url: str = "", **sections: Any) -> Any:
    """Settings for a test node: free port, the given overrides per section."""
    from config.settings import Settings

    (data_dir).mkdir(parents=True, exist_ok=True)
    node: dict[str, Any] = {
        "ae_title": "XRAYD",
        "host": "127.0.0.1",
        "port": 0,
        "callers": [{"ae_title": "MODALITY"}],
        "min_free_mb": 0,
        "idle_timeout_seconds": 20,
    }
    node.update(sections.pop("node", {}))
    data: dict[str, Any] = {
        "node": node,
        "storage": {"data_dir": str(data_dir), "database_url": database_url},
        "study": {"quiet_seconds": 3600, "max_wait_seconds": 7200},
        # eager: no ONNX export / OpenVINO compile at every node start (runtimes have own tests);
        # the phantom bundle: pipeline tests need a small model whose answers on phantoms are
        # known (the default bundle has tests of its own)
        "model": {"runtime": "eager", "bundle": str(PHANTOM)},
        # retention by age only: no purge because the test machine's disk is nearly full
        "retention": {"min_free_mb": 0},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.update(
            {key: value}
        )
    return Settings.model_validate(data)


def fracatlas_root() -> Path:
    """The FracAtlas share beside the checkout (``../shared/datasets/fracatlas``, or
    ``$XRAYD_FRACATLAS``); skips where it is absent, fails in CI."""
    default = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fracatlas"
    root = Path(os.environ.get("XRAYD_FRACATLAS", str(default)))
    need((root / "dataset.csv").is_file(), f"the FracAtlas share is not at {root}")
    return root
