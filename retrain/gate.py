"""The promotion gate: pre-set rules a candidate must pass on the locked validation set.

Rules (each recorded with its measured value and limit):

* ``validation_positives`` / ``validation_negatives``: the locked set has at least
  ``min_positives`` fractured and ``min_negatives`` normal cases (fewer cannot judge anything);
* ``same_validation_set``: the candidate and the current model were scored on the same cases
  (same set hash), so their numbers compare;
* ``auc_non_inferior``: candidate AUC >= current AUC - ``auc_margin`` (passes, marked "not
  applicable", without a current model);
* ``min_sensitivity`` / ``min_specificity``: at the candidate's OWN operating point (its bundle
  threshold), sensitivity >= ``min_sensitivity`` and specificity >= ``min_specificity``.

Rules compare point estimates; the confidence intervals (bootstrap for AUC, Wilson for the
rates) are reported alongside so a reader sees how much the numbers could move.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from models.evaluation import EvaluationReport
from models.evaluation_stats import Interval

__all__ = ["GateConfig", "GateVerdict", "ModelScores", "RuleResult", "judge"]

_EPS = 1e-12


def _interval(value: Interval | None) -> list[float] | None:
    return None if value is None else [value.low, value.high]


@dataclass(frozen=True)
class ModelScores:
    """One model's scores on the locked validation set (``validation_sha256`` names it)."""

    name: str
    version: str
    sha256: str
    validation_sha256: str
    n: int
    n_positive: int
    auc: float
    auc_ci: Interval | None
    sensitivity: float
    sensitivity_ci: Interval
    specificity: float
    specificity_ci: Interval
    threshold: float

    @property
    def n_negative(self) -> int:
        return self.n - self.n_positive

    @classmethod
    def from_report(
        cls,
        report: EvaluationReport,
        *,
        name: str,
        version: str,
        sha256: str,
        validation_sha256: str,
    ) -> ModelScores:
        at = report.at_threshold
        return cls(
            name=name,
            version=version,
            sha256=sha256,
            validation_sha256=validation_sha256,
            n=report.n,
            n_positive=report.positives,
            auc=report.auc,
            auc_ci=report.auc_ci,
            sensitivity=at.sensitivity,
            sensitivity_ci=at.sensitivity_ci,
            specificity=at.specificity,
            specificity_ci=at.specificity_ci,
            threshold=report.point.threshold,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "validation_sha256": self.validation_sha256,
            "n": self.n,
            "n_positive": self.n_positive,
            "auc": self.auc,
            "auc_ci": _interval(self.auc_ci),
            "sensitivity": self.sensitivity,
            "sensitivity_ci": _interval(self.sensitivity_ci),
            "specificity": self.specificity,
            "specificity_ci": _interval(self.specificity_ci),
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class GateConfig:
    """The pre-set criteria (``config.settings.GateSettings`` holds the first three)."""

    auc_margin: float = 0.01
    min_sensitivity: float = 0.90
    min_specificity: float = 0.80
    min_positives: int = 10
    min_negatives: int = 10

    def __post_init__(self) -> None:
        for name in ("auc_margin", "min_sensitivity", "min_specificity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.min_positives < 1 or self.min_negatives < 1:
            raise ValueError("min_positives and min_negatives must be at least 1")

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleResult:
    """One rule: passed or not, the measured value, the limit, and a sentence saying so."""

    rule: str
    passed: bool
    measured: float | None
    limit: float | None
    message: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateVerdict:
    """``verdict`` is ``"passed"`` only when every rule passed."""

    verdict: Literal["passed", "failed"]
    rules: tuple[RuleResult, ...]
    config: GateConfig
    candidate: ModelScores
    current: ModelScores | None

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    @property
    def reasons(self) -> list[str]:
        """The failed rules' sentences (empty when the candidate passed)."""
        return [r.message for r in self.rules if not r.passed]

    def as_json(self) -> dict[str, Any]:
        """What the registry stores: configuration, measurements and verdict."""
        return {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "rules": [r.as_json() for r in self.rules],
            "config": self.config.as_json(),
            "candidate": self.candidate.as_json(),
            "current": None if self.current is None else self.current.as_json(),
        }


def _ci(value: Interval | None) -> str:
    return "" if value is None else f" (95% CI {value.low:.3f}-{value.high:.3f})"


def _at_least(
    rule: str, what: str, measured: float, limit: float, ci: str = "", why: str = ""
) -> RuleResult:
    ok = measured >= limit - _EPS
    verb = "passed" if ok else "FAILED"
    text = f"{what} {measured:.3f}{ci} >= {limit:.3f}{why}: {verb}"
    return RuleResult(rule, ok, measured, limit, text)


def judge(candidate: ModelScores, current: ModelScores | None, config: GateConfig) -> GateVerdict:
    """Apply the rules of the module docstring to the candidate's (and current's) scores."""
    rules: list[RuleResult] = []
    for rule, measured, limit in (
        ("validation_positives", candidate.n_positive, config.min_positives),
        ("validation_negatives", candidate.n_negative, config.min_negatives),
    ):
        ok = measured >= limit
        rules.append(
            RuleResult(
                rule,
                ok,
                float(measured),
                float(limit),
                f"{rule.replace('_', ' ')} {measured} >= {limit}: {'passed' if ok else 'FAILED'}",
            )
        )
    if current is None:
        rules.append(
            RuleResult(
                "auc_non_inferior",
                True,
                candidate.auc,
                None,
                f"AUC {candidate.auc:.3f}: no current model to compare with (not applicable)",
            )
        )
    else:
        same = current.validation_sha256 == candidate.validation_sha256 and current.n == candidate.n
        rules.append(
            RuleResult(
                "same_validation_set",
                same,
                None,
                None,
                "candidate and current scored on the same locked set: "
                + ("passed" if same else "FAILED (the numbers do not compare)"),
            )
        )
        auc_limit = current.auc - config.auc_margin
        rules.append(
            _at_least(
                "auc_non_inferior",
                "AUC",
                candidate.auc,
                auc_limit,
                _ci(candidate.auc_ci),
                f" (current {current.auc:.3f}{_ci(current.auc_ci)} - margin "
                f"{config.auc_margin:.3f})",
            )
        )
    rules.append(
        _at_least(
            "min_sensitivity",
            "sensitivity",
            candidate.sensitivity,
            config.min_sensitivity,
            _ci(candidate.sensitivity_ci),
        )
    )
    rules.append(
        _at_least(
            "min_specificity",
            "specificity",
            candidate.specificity,
            config.min_specificity,
            _ci(candidate.specificity_ci),
        )
    )
    verdict: Literal["passed", "failed"] = "passed" if all(r.passed for r in rules) else "failed"
    return GateVerdict(verdict, tuple(rules), config, candidate, current)
