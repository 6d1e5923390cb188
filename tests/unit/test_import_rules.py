"""The package import rules (CONTRIBUTING.md, "Import rules"), checked on the source (AST); and no
test doubles in the product."""

from __future__ import annotations

import ast
import re
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
    "sqlalchemy": {"storage"},  # others hold storage.db.Sessions and call storage functions
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


#: names that say a class or function is a test double; they belong in tests/
DOUBLE = re.compile(r"^(Fake|Mock|Stub|Dummy|Spy|SeenOnly)[A-Z_]|^(fake|mock|stub|dummy)_")


def doubles(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.name}:{node.lineno} defines {node.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and DOUBLE.match(node.name)
    ]


@pytest.mark.parametrize("package", sorted(PROJECT))
def test_no_test_doubles_in_the_product(package: str) -> None:
    found = [
        f"{path.parent.relative_to(ROOT)}/{d}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for d in doubles(path)
    ]
    assert not found, "test doubles belong in tests/:\n" + "\n".join(found)


def test_the_double_checker_catches_one(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("class SeenOnlyAnalyser:\n    pass\n\ndef fake_sender():\n    pass\n")
    assert [d.split(" defines ")[1] for d in doubles(sample)] == ["SeenOnlyAnalyser", "fake_sender"]
