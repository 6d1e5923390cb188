"""models.metrics: rank-based AUC against hand-computed values, sensitivity/specificity."""

from __future__ import annotations

import pytest

from models.metrics import roc_auc, sensitivity_specificity


def test_auc_perfect_and_inverted() -> None:
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0


def test_auc_hand_computed() -> None:
    # Positives 0.8, 0.4; negatives 0.5, 0.3, 0.1. Pairs won: 0.8 beats 3, 0.4 beats 2 -> 5/6.
    assert roc_auc([0.8, 0.4, 0.5, 0.3, 0.1], [1, 1, 0, 0, 0]) == pytest.approx(5 / 6)


def test_auc_ties_count_one_half() -> None:
    # Positive 0.5 ties negative 0.5 (1/2) and beats 0.2 (1): (1.5) / 2.
    assert roc_auc([0.5, 0.5, 0.2], [1, 0, 0]) == pytest.approx(0.75)
    assert roc_auc([0.3] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)


def test_auc_refuses_one_class_and_bad_labels() -> None:
    with pytest.raises(ValueError, match="both"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0.1, 0.2], [1, 2])


def test_sensitivity_specificity() -> None:
    sens, spec = sensitivity_specificity([0.9, 0.6, 0.4, 0.7, 0.1], [1, 1, 1, 0, 0], 0.5)
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx(1 / 2)
    assert sensitivity_specificity([0.9], [0], 0.5) == (None, 0.0)
