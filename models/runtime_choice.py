"""Choosing the backbone runtime: the fastest one whose outputs match torch eager.

:func:`choose_runtime` builds each candidate (:mod:`models.runtimes`), runs it on sample
images, compares every head's probabilities (sigmoid of the fracture and hardware logits,
softmax of the count and body-part logits and, for a network with the localisation head, the
sigmoid of every feature-map cell's localisation logit, the map the boxes come from; all
computed in torch from the candidate's feature map) with eager's, times it (median of
``repeats`` runs after a warm-up, the whole sample as one batch, the candidates taking turns)
and returns the fastest candidate within ``tolerance``, with a record per candidate. A
candidate that cannot be built, fails on the sample or differs too much is logged and skipped;
eager is the fallback. A model on CUDA uses eager on the GPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from models.network import MultiTaskNet
from models.runtimes import (
    RUNTIMES,
    BackboneRuntime,
    EagerRuntime,
    OpenVinoRuntime,
    RuntimeUnavailable,
    as_batch,
    build_runtime,
    export_onnx,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RuntimeChoice",
    "RuntimeRecord",
    "choose_runtime",
    "head_probabilities",
    "time_runtimes",
]


@dataclass(frozen=True)
class RuntimeRecord:
    """What :func:`choose_runtime` found for one candidate.

    ``max_abs_diff`` is the largest |Δp| against eager over all heads and sample images
    (``None`` when it never ran); ``ms_per_image`` the median time per image of a batch of the
    sample (``None`` when not timed); ``passed`` says it ran and stayed within tolerance;
    ``reason`` says why it is unavailable or was rejected.
    """

    name: str
    available: bool
    max_abs_diff: float | None
    ms_per_image: float | None
    passed: bool
    reason: str = ""


@dataclass(frozen=True, eq=False)
class RuntimeChoice:
    """The chosen runtime and the record of every candidate, in the order tried."""

    runtime: BackboneRuntime
    records: tuple[RuntimeRecord, ...]

    @property
    def name(self) -> str:
        return self.runtime.name


def head_probabilities(network: MultiTaskNet, features: Tensor) -> Tensor:
    """All heads' probabilities on the CPU from a feature map (N, C, h, w).

    (N, 1 + 3 + P + 1): fracture, count, body part, hardware; with the localisation head
    (N, 1 + 3 + P + 1 + h * w): then every cell's localisation probability, so a runtime that
    spoils the localisation map (and with it the boxes) is noticed too.
    """
    device = next(network.parameters()).device
    with torch.no_grad():
        out = network.heads(features.to(device=device, dtype=torch.float32))
        parts = [
            torch.sigmoid(out.fracture)[:, None],
            torch.softmax(out.count, dim=1),
            torch.softmax(out.body_part, dim=1),
            torch.sigmoid(out.hardware)[:, None],
        ]
        if out.localisation is not None:
            parts.append(torch.sigmoid(out.localisation).flatten(start_dim=1))
        probs = torch.cat(parts, dim=1)
    return probs.cpu()


def time_runtimes(
    runtimes: Sequence[BackboneRuntime], pixels: npt.NDArray[np.float32], repeats: int = 5
) -> list[float]:
    """Median milliseconds per image of each runtime over ``repeats`` runs on ``pixels``.

    After one warm-up run each, the runtimes take turns, one run per round, so a change in
    the machine's load during the measurement affects them alike.
    """
    if repeats < 1:
        raise ValueError("repeats must be positive")
    batch = as_batch(pixels)
    for runtime in runtimes:
        runtime(batch)
    times: list[list[float]] = [[] for _ in runtimes]
    for _ in range(repeats):
        for runtime, spent in zip(runtimes, times, strict=True):
            start = time.perf_counter()
            runtime(batch)
            spent.append(time.perf_counter() - start)
    return [1000.0 * statistics.median(t) / int(batch.shape[0]) for t in times]


class _Builder:
    """Builds named candidates, exporting the backbone to ONNX at most once."""

    def __init__(
        self,
        network: MultiTaskNet,
        threads: int,
        input_size: int,
        onnx_file: Path | None,
        stack: contextlib.ExitStack,
    ) -> None:
        self.network = network
        self.threads = threads
        self.input_size = input_size
        self.onnx_file = onnx_file
        self.stack = stack
        self.export_error: RuntimeUnavailable | None = None

    def _export(self) -> Path:
        if self.onnx_file is None and self.export_error is None:
            tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="xrayd-")))
            try:
                self.onnx_file = export_onnx(self.network, tmp / "backbone.onnx", self.input_size)
            except RuntimeUnavailable as exc:
                self.export_error = exc
        if self.onnx_file is None:
            assert self.export_error is not None
            raise self.export_error
        return self.onnx_file

    def build(self, name: str) -> BackboneRuntime:
        if name == "openvino":
            try:
                path = self._export()
            except RuntimeUnavailable:
                return OpenVinoRuntime.from_torch(
                    self.network, self.input_size, threads=self.threads
                )
            return OpenVinoRuntime(path, threads=self.threads)
        if name == "onnxruntime":
            return build_runtime(name, self.network, threads=self.threads, onnx_file=self._export())
        return build_runtime(name, self.network, threads=self.threads)


def _check(
    runtime: BackboneRuntime,
    network: MultiTaskNet,
    batch: npt.NDArray[np.float32],
    reference: tuple[torch.Size, Tensor],
    tolerance: float,
) -> RuntimeRecord:
    """Compare ``runtime`` with eager's feature-map shape and probabilities (not timed)."""
    name = runtime.name
    shape, expected = reference
    try:
        features = runtime(batch)
        probs = head_probabilities(network, features)
    except Exception as exc:  # any failure of an optional engine means "not this one"
        return RuntimeRecord(name, True, None, None, False, f"failed on the sample: {exc}")
    if features.shape != shape:  # Grad-CAM needs eager's feature-map resolution too
        reason = f"feature map {tuple(features.shape)} != eager's {tuple(shape)}"
        return RuntimeRecord(name, True, None, None, False, reason)
    diff = float((probs - expected).abs().max())
    if not math.isfinite(diff) or diff > tolerance:
        reason = f"max |dp| {diff:.3g} > tolerance {tolerance:g}"
        return RuntimeRecord(name, True, diff, None, False, reason)
    return RuntimeRecord(name, True, diff, None, True)


def choose_runtime(
    network: MultiTaskNet,
    sample: npt.ArrayLike,
    *,
    candidates: Sequence[str | BackboneRuntime] = RUNTIMES,
    threads: int = 2,
    tolerance: float = 1e-3,
    repeats: int = 5,
    onnx_file: Path | None = None,
) -> RuntimeChoice:
    """The fastest candidate whose probabilities stay within ``tolerance`` of eager's.

    ``network`` must be in eval mode; ``sample`` is a float32 batch (N, 1, S, S) of prepared
    images, timed as one batch. Candidates are names from :data:`models.runtimes.RUNTIMES` or
    runtime objects. ``onnx_file`` is an existing export to reuse (otherwise the backbone is
    exported once into a temporary directory). torch runtimes are timed with torch's
    process-wide thread count; set it to ``threads`` first for a fair comparison.
    Raises ``ValueError`` for an unknown candidate name or bad arguments.
    """
    if network.training:
        raise ValueError("the network must be in eval mode (BatchNorm running statistics)")
    if tolerance < 0 or repeats < 1 or threads < 1:
        raise ValueError("tolerance must be >= 0, repeats and threads positive")
    batch = as_batch(sample)
    eager = EagerRuntime(network)
    if eager.device.type != "cpu":
        skipped = tuple(
            RuntimeRecord(_name(c), False, None, None, False, f"the model is on {eager.device}")
            for c in candidates
            if _name(c) != "eager"
        )
        record = RuntimeRecord("eager", True, 0.0, None, True)
        logger.info("model on %s: eager runtime", eager.device)
        return RuntimeChoice(eager, (record, *skipped))
    if torch.get_num_threads() != threads:
        logger.warning(
            "torch uses %d threads, the other runtimes %d: timings are not comparable",
            torch.get_num_threads(),
            threads,
        )
    eager_features = eager(batch)
    reference = (eager_features.shape, head_probabilities(network, eager_features))
    records: list[RuntimeRecord] = []
    ran: dict[int, BackboneRuntime] = {}  # index in records -> runtime, for those that ran
    with contextlib.ExitStack() as stack:
        builder = _Builder(network, threads, batch.shape[-1], onnx_file, stack)
        for candidate in candidates:
            if isinstance(candidate, str):
                if candidate not in RUNTIMES:
                    raise ValueError(f"unknown runtime {candidate!r}; expected one of {RUNTIMES}")
                try:
                    runtime = eager if candidate == "eager" else builder.build(candidate)
                except RuntimeUnavailable as exc:
                    logger.warning("runtime %s is unavailable: %s", candidate, exc)
                    records.append(RuntimeRecord(candidate, False, None, None, False, str(exc)))
                    continue
            else:
                runtime = candidate
            record = _check(runtime, network, batch, reference, tolerance)
            if record.max_abs_diff is not None:
                ran[len(records)] = runtime
            if not record.passed:
                logger.warning("runtime %s rejected: %s", record.name, record.reason)
            records.append(record)
        timings = time_runtimes(list(ran.values()), batch, repeats) if ran else []
    for index, ms in zip(ran, timings, strict=True):
        records[index] = replace(records[index], ms_per_image=ms)
    passing = [(records[i].ms_per_image or 0.0, rt) for i, rt in ran.items() if records[i].passed]
    if passing:
        chosen = min(passing, key=lambda item: item[0])[1]
    else:
        logger.warning("no candidate runtime passed; using torch eager")
        chosen = eager
    logger.info(
        "backbone runtime: %s (%s)",
        chosen.name,
        ", ".join(f"{r.name} {r.ms_per_image or float('nan'):.1f} ms" for r in records),
    )
    return RuntimeChoice(chosen, tuple(records))


def _name(candidate: str | BackboneRuntime) -> str:
    return candidate if isinstance(candidate, str) else candidate.name
