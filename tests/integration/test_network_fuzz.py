"""A short network fuzz against a live listener, and the saved network reproducers replayed.

Each case (tests/fuzz/netfuzz.py) sends mutated PDUs or a mutated data set over a raw socket;
after it, a good peer's C-ECHO must be answered; tracebacks logged or escaping a thread from
the project's code are findings, and so is a partial data set left behind.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

import netfuzz

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom, on mutated values

#: Findings reported in docs/fuzzing.md and not fixed yet: the smoke reports them as an
#: expected failure, and fails on any other. Remove an entry once its fix lands (the smoke then
#: passes without it). N1-N4 were fixed in the listener; none is open.
KNOWN: tuple[str, ...] = ()


def _triage(findings: list[str]) -> None:
    unknown = [f for f in findings if not any(k in f for k in KNOWN)]
    assert not unknown, "\n\n".join(u[:3000] for u in unknown)
    if findings:
        pytest.xfail(f"{len(findings)} known findings (docs/fuzzing.md)")


def test_network_fuzz_smoke() -> None:
    report = netfuzz.run(seed=15, cases=100)
    assert report.cases == 100, report.summary()
    assert len(report.kinds) == 8, report.summary()  # every kind of case was sent
    _triage(report.findings)


@pytest.mark.parametrize("path", netfuzz.saved_cases(), ids=lambda p: p.stem)
def test_saved_network_case(path: Path) -> None:
    _triage(netfuzz.replay(netfuzz.Case.from_json(path.read_text())))
