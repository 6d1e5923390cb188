#!/usr/bin/env python3
"""CPU inference speed of the backbone: torch eager against the faster runtimes, same run.

For each runtime of ``models.runtimes`` (eager, channels_last, onnxruntime, openvino) prints
ms/image at batch 1 and batch 8 (median over interleaved rounds), the largest |Δp| of any head
against eager on the images, the achieved GFLOP/s (the backbone's FLOPs counted with
``torch.utils.flop_counter``) and that as a fraction of a large fp32 matmul measured in the same
run with the same thread count (the machine's practical peak). Then says which runtime
``models.runtime_choice.choose_runtime`` picks. Without ``--bundle`` the network is untrained
(random weights): its speed is representative, its outputs are not.

    .venv/bin/python bench/infer.py [--bundle DIR] [--arch densenet121] [--size 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.bundle import load_bundle
from models.network import ARCHS, MultiTaskNet, build_network
from models.preprocess import PreprocessParams, prepare
from models.runtime_choice import choose_runtime, head_probabilities
from models.runtimes import (
    RUNTIMES,
    BackboneRuntime,
    RuntimeUnavailable,
    build_runtime,
    export_onnx,
)
from models.synthetic import generate_case, to_dicom

ORDER = ("eager", "channels_last", "onnxruntime", "openvino")


def matmul_peak(sizes: tuple[int, ...], repeats: int = 5) -> float:
    """Best GFLOP/s of square fp32 ``torch.mm`` of each size (torch's thread count)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2.0 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def backbone_flops(network: MultiTaskNet, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network.feature_map(torch.zeros(1, 1, size, size))
    return int(counter.get_total_flops())


def images(count: int, size: int) -> np.ndarray:
    params = PreprocessParams(input_size=size)
    prepared = [
        prepare(to_dicom(generate_case(seed, max(2 * size, 128))), params) for seed in range(count)
    ]
    return np.stack([np.asarray(p.pixels) for p in prepared])[:, None].astype(np.float32)


def time_rounds(
    runtimes: dict[str, BackboneRuntime], batch: np.ndarray, rounds: int
) -> dict[str, dict[int, list[float]]]:
    """Seconds per image at batch 1 and batch len(batch), runtimes interleaved per round."""
    sizes = (1, len(batch))
    times: dict[str, dict[int, list[float]]] = {n: {s: [] for s in sizes} for n in runtimes}
    for runtime in runtimes.values():  # warm-up: first-call allocations, kernel selection
        for s in sizes:
            runtime(batch[:s])
    for r in range(rounds):
        for name, runtime in runtimes.items():
            for s in sizes:
                part = batch[r % len(batch) : r % len(batch) + 1] if s == 1 else batch
                start = time.perf_counter()
                runtime(part)
                times[name][s].append((time.perf_counter() - start) / s)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a model bundle (else an untrained network)")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="densenet121")
    parser.add_argument("--size", type=int, default=256, help="input size without --bundle")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8, help="batch size of the large batch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--matmul", type=int, nargs="+", default=[2048, 4096], help="sides of the peak matmuls"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)

    if args.bundle:
        model = load_bundle(args.bundle, "cpu")
        network, size = model.network.eval(), model.metadata.input_size
        what = f"bundle {model.metadata.name} {model.metadata.version} ({model.metadata.arch})"
    else:
        torch.manual_seed(0)
        network, size = build_network(args.arch).eval(), args.size
        what = f"UNTRAINED {args.arch} (random weights: timings representative, outputs not)"
    batch = images(args.images, size)
    flops = backbone_flops(network, size)
    print(f"model:   {what}, input {size}x{size}, {args.threads} threads")
    print(f"backbone: {flops / 1e9:.2f} GFLOP per image (torch.utils.flop_counter)")
    sides = tuple(args.matmul)
    peak_before = matmul_peak(sides)

    runtimes: dict[str, BackboneRuntime] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file: Path | None = None
        for dynamo in (True, False):
            start = time.perf_counter()
            try:
                onnx_file = export_onnx(network, Path(tmp) / "b.onnx", size, dynamo=dynamo)
            except RuntimeUnavailable as exc:
                print(f"export:  {'dynamo' if dynamo else 'torchscript'} exporter failed: {exc}")
                continue
            kind = "dynamo (torch.export)" if dynamo else "TorchScript"
            print(f"export:  ONNX via the {kind} exporter in {time.perf_counter() - start:.1f} s")
            break
        for name in ORDER:
            try:
                runtimes[name] = build_runtime(
                    name, network, threads=args.threads, input_size=size, onnx_file=onnx_file
                )
            except (RuntimeUnavailable, ValueError) as exc:
                failed[name] = str(exc)
        reference = head_probabilities(network, runtimes["eager"](batch))
        diffs = {
            name: float((head_probabilities(network, rt(batch)) - reference).abs().max())
            for name, rt in runtimes.items()
        }
        times = time_rounds(runtimes, batch, args.rounds)
        choice = choose_runtime(
            network, batch, candidates=RUNTIMES, threads=args.threads, onnx_file=onnx_file
        )

    # Measured before and after the runtimes: the best is the machine's practical peak.
    peak = max(peak_before, matmul_peak(sides))
    matmuls = " and ".join(f"{m}x{m}" for m in sides)
    print(
        f"peak:    {peak:.1f} GFLOP/s (best fp32 torch.mm of {matmuls}, {args.threads} threads, "
        f"5 runs each, before and after the runtimes: {peak_before:.1f} before)"
    )
    n = len(batch)
    print()
    header = (
        f"{'runtime':<14}{'max|dp|':>10}"
        f"{'b1 ms/img':>11}{'GFLOP/s':>9}{'%peak':>7}"
        f"{f'b{n} ms/img':>11}{'GFLOP/s':>9}{'%peak':>7}{'vs eager':>9}"
    )
    print(header)
    print("-" * len(header))
    eager8 = statistics.median(times["eager"][n])
    for name in ORDER:
        if name in failed:
            print(f"{name:<14}unavailable: {failed[name]}")
            continue
        row = f"{name:<14}{diffs[name]:>10.1e}"
        for s in (1, n):
            sec = statistics.median(times[name][s])
            gflops = flops / sec / 1e9
            row += f"{sec * 1000:>11.1f}{gflops:>9.1f}{100 * gflops / peak:>6.0f}%"
        row += f"{eager8 / statistics.median(times[name][n]):>8.2f}x"
        print(row)
    print()
    print(f"medians of {args.rounds} interleaved rounds; |dp| over all heads and {n} images;")
    print("%peak is of the matmul peak above (practical, not theoretical: it can exceed 100%)")
    print(f"choose_runtime picks: {choice.name}")
    for r in choice.records:
        ms = "-" if r.ms_per_image is None else f"{r.ms_per_image:.1f} ms/img (b{n})"
        diff = "-" if r.max_abs_diff is None else f"|dp| {r.max_abs_diff:.1e}"
        status = "ok" if r.passed else f"{'rejected' if r.available else 'unavailable'}: {r.reason}"
        print(f"  {r.name:<14}{ms:>20}  {diff:<14}{status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
