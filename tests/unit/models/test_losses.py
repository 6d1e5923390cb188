"""models.losses: missing labels are masked out, present ones drive the gradients."""

from __future__ import annotations

import math

import pytest
import torch

from models.losses import Targets, head_losses, multitask_loss
from models.network import NetworkOutput

torch.set_num_threads(1)


def _outputs(n: int = 4, parts: int = 5) -> NetworkOutput:
    g = torch.Generator().manual_seed(0)
    return NetworkOutput(
        fracture=torch.randn(n, generator=g, requires_grad=True),
        count=torch.randn(n, 3, generator=g, requires_grad=True),
        body_part=torch.randn(n, parts, generator=g, requires_grad=True),
        hardware=torch.randn(n, generator=g, requires_grad=True),
    )


def _targets(fracture: list[float], count: list[int], part: list[int], hw: list[float]) -> Targets:
    return Targets(
        torch.tensor(fracture),
        torch.tensor(count),
        torch.tensor(part),
        torch.tensor(hw),
    )


def test_all_missing_heads_contribute_zero() -> None:
    out = _outputs()
    targets = _targets([1, 0, 1, 0], [-1] * 4, [-1] * 4, [math.nan] * 4)
    parts = head_losses(out, targets)
    assert float(parts["count"].detach()) == 0.0
    assert float(parts["body_part"].detach()) == 0.0
    assert float(parts["hardware"].detach()) == 0.0
    assert float(parts["fracture"].detach()) > 0.0
    loss = multitask_loss(out, targets)
    loss.backward()  # type: ignore[no-untyped-call]
    assert out.count.grad is not None and float(out.count.grad.abs().sum()) == 0.0
    assert out.body_part.grad is not None and float(out.body_part.grad.abs().sum()) == 0.0
    assert out.hardware.grad is not None and float(out.hardware.grad.abs().sum()) == 0.0
    assert out.fracture.grad is not None and bool((out.fracture.grad != 0).all())


def test_gradients_flow_only_from_present_labels() -> None:
    out = _outputs()
    targets = _targets([1, -1, math.nan, 0], [2, -1, 0, -1], [-1, 3, -1, 1], [-1, 1, 0, -1])
    multitask_loss(out, targets).backward()  # type: ignore[no-untyped-call]
    assert out.fracture.grad is not None
    assert (out.fracture.grad != 0).tolist() == [True, False, False, True]
    assert out.count.grad is not None
    assert (out.count.grad.abs().sum(1) != 0).tolist() == [True, False, True, False]
    assert out.body_part.grad is not None
    assert (out.body_part.grad.abs().sum(1) != 0).tolist() == [False, True, False, True]
    assert out.hardware.grad is not None
    assert (out.hardware.grad != 0).tolist() == [False, True, True, False]


def test_masked_loss_equals_the_loss_on_the_present_subset() -> None:
    out = _outputs()
    masked = head_losses(out, _targets([1, -1, 0, -1], [-1] * 4, [-1] * 4, [-1] * 4))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        out.fracture[[0, 2]], torch.tensor([1.0, 0.0])
    )
    assert float(masked["fracture"].detach()) == pytest.approx(float(expected.detach()))


def test_weights_and_bad_labels() -> None:
    out = _outputs()
    targets = _targets([1, 0, 1, 0], [0, 1, 2, 0], [0, 1, 2, 3], [0, 1, 0, 1])
    parts = head_losses(out, targets)
    only_count = multitask_loss(out, targets, {"count": 2.0})
    assert float(only_count.detach()) == pytest.approx(2.0 * float(parts["count"].detach()))
    with pytest.raises(ValueError, match="outside"):
        head_losses(out, _targets([1, 0, 1, 0], [0, 1, 3, 0], [0] * 4, [0] * 4))
    with pytest.raises(ValueError, match="one length"):
        _targets([1, 0], [0], [0], [0])
