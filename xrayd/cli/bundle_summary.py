"""What ``xrayd train`` prints about the bundle it saved (both training paths)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.train_bundle import FinishedBundle

__all__ = ["print_saved_bundle"]


def print_saved_bundle(
    done: FinishedBundle, out: str, best_epoch: int, epochs: int, extra: Sequence[str] = ()
) -> None:
    """Name, weights hash, best epoch, ``extra`` lines, validation figures at the threshold."""
    m = done.metrics
    point = done.metadata.thresholds.default
    print(f"saved bundle {done.info.name} {done.info.version} to {out}")
    print(f"  weights sha256 {done.info.sha256}")
    print(f"  best epoch {best_epoch} of {epochs}")
    for line in extra:
        print(f"  {line}")
    print(
        f"  validation AUC {m.fracture_auc}, sensitivity {m.sensitivity}, "
        f"specificity {m.specificity} at threshold {point.threshold:.4f} "
        f"(indeterminate {point.indeterminate_low:.4f}-{point.indeterminate_high:.4f})"
    )
