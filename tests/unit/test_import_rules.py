"""The package import rules of ../shared/DESIGN.md, checked on the source (AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"xrayd", "dicom_node", "models", "storage", "retrain", "config"}
ALLOWED = {
    "config": set(),
    "storage": {"config"},
    "dicom_node": {"config"},
    "models": {"config"},
    "retrain": {"models", "storage", "config"},
    "xrayd": PROJECT,
}
# Third-party libraries stay in their home package.
HOMES = {
    "pynetdicom": {"dicom_node"},
    "highdicom": {"dicom_node"},
    "sqlalchemy": {"storage", "xrayd"},  # xrayd only passes sessionmaker objects through
    "alembic": {"storage"},
    "torch": {"models", "retrain"},
    "monai": {"models", "retrain"},
    "apscheduler": {"retrain"},
    "fastapi": {"xrayd"},
    "prometheus_client": {"xrayd"},
    "boto3": {"storage"},
    "botocore": {"storage"},
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_package_imports_follow_the_rules(package: str) -> None:
    bad: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports(path):
            if name in PROJECT and name != package and name not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
            if name in HOMES and package not in HOMES[name]:
                bad.append(f"{path.relative_to(ROOT)} imports {name} outside its home")
    assert not bad, "\n".join(bad)


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from storage.jobs import claim_job\nimport pynetdicom.ae\n")
    assert imports(sample) == {"storage", "pynetdicom"}
