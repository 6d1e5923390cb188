#!/usr/bin/env python3
"""CPU inference speed of the backbone: torch eager against the faster runtimes, same run.

For each runtime of ``models.runtimes`` (eager, channels_last, onnxruntime, openvino) prints
ms/image at batch 1 and batch 8 (median over interleaved rounds), the largest |Δp| of any head
against eager on the images, the achieved GFLOP/s (the backbone's FLOPs counted with
``torch.utils.flop_counter``) and that as a fraction of a large fp32 matmul measured in the same
run with the same thread count (the machine's practical peak). Then the whole per-image path
at batch 1, one image at a time as a study arrives, for each runtime: reading a DICOM file from
disk (``pydicom.dcmread``), ``models.preprocess.prepare`` with the bundle's preprocessing, the
backbone runtime, and the heads with the localisation map (or Grad-CAM) and boxes
(``models.inference.Classifier.predict``), each stage's median ms and the total's, and what
fraction of the total each stage takes for the fastest runtime. The files are synthetic phantoms
of ``--source-size`` pixels written to a temporary directory. Then says which runtime
``models.runtime_choice.choose_runtime`` picks. ``--bundle`` defaults to the default bundle
(``models.bundle.default_bundle_path``); ``--untrained ARCH`` measures an untrained network of
that arch at ``--size`` instead (random weights: its speed is representative, its outputs are
not).

    .venv/bin/python bench/infer.py [--bundle DIR | --untrained ARCH [--size 256]]
        [--threads 2] [--images 8] [--rounds 7] [--source-size 1024] [--matmul 2048 4096]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from models.bundle import BundleInfo, LoadedModel, default_bundle_path, load_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds
from models.errors import BundleError
from models.inference import Classifier
from models.labels import BODY_PARTS
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
STAGES = ("read", "prepare", "backbone", "heads+boxes")
#: Every image is "present" at this operating point, so boxes are always drawn and timed.
ALWAYS_BOXES = Thresholds(OperatingPoint(0.0, 0.0, 0.0))
#: Archs built with the localisation head by ``--untrained`` (as their bundles are trained).
LOCALISING_ARCHS = frozenset({"efficientnet_lite0"})


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


def images(count: int, params: PreprocessParams) -> np.ndarray:
    size = params.input_size
    prepared = [
        prepare(to_dicom(generate_case(seed, max(2 * size, 128))), params) for seed in range(count)
    ]
    return np.stack([np.asarray(p.pixels) for p in prepared])[:, None].astype(np.float32)


def untrained_model(arch: str, size: int) -> LoadedModel:
    """An untrained ``arch`` network at input ``size`` with metadata to run it."""
    torch.manual_seed(0)
    localise = arch in LOCALISING_ARCHS
    network = build_network(arch, input_size=size, localise=localise).eval()
    metadata = BundleMetadata(
        name="untrained",
        version="0",
        arch=arch,
        body_parts=BODY_PARTS,
        preprocess=PreprocessParams(input_size=size),
        thresholds=ALWAYS_BOXES,
        localisation_head=localise,
    )
    info = BundleInfo("untrained", "0", "", Path())
    return LoadedModel(network, metadata, info, torch.device("cpu"))


def write_dicoms(directory: Path, count: int, size: int) -> list[Path]:
    """``count`` synthetic radiographs of ``size`` x ``size`` pixels as DICOM files."""
    paths = []
    for seed in range(count):
        path = directory / f"image{seed}.dcm"
        to_dicom(generate_case(seed, size)).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


class TimedRuntime:
    """A runtime that records the seconds of its last call (the backbone inside ``predict``)."""

    def __init__(self, runtime: BackboneRuntime) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.last = 0.0

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        start = time.perf_counter()
        out = self.runtime(pixels)
        self.last = time.perf_counter() - start
        return out


def time_whole_path(
    model: LoadedModel, runtimes: dict[str, BackboneRuntime], files: list[Path], rounds: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per stage and in total of each file's whole path at batch 1.

    Every round each runtime takes every file in turn (runtimes interleaved per round, after
    a warm-up on the first file). Boxes are always drawn (:data:`ALWAYS_BOXES`), the slowest
    case of the last stage.
    """
    params = model.metadata.preprocess
    boxed = dataclasses.replace(
        model, metadata=dataclasses.replace(model.metadata, thresholds=ALWAYS_BOXES)
    )
    timed = {name: TimedRuntime(rt) for name, rt in runtimes.items()}
    classifiers = {name: Classifier(boxed, runtime=rt, batch_size=1) for name, rt in timed.items()}
    times: dict[str, dict[str, list[float]]] = {
        name: {stage: [] for stage in (*STAGES, "total")} for name in runtimes
    }

    def one(name: str, path: Path) -> None:
        start = time.perf_counter()
        ds = pydicom.dcmread(path)
        read = time.perf_counter()
        prepared = prepare(ds, params)
        ready = time.perf_counter()
        classifiers[name].predict([prepared])
        done = time.perf_counter()
        backbone = timed[name].last
        spent = (read - start, ready - read, backbone, done - ready - backbone)
        for stage, sec in zip(STAGES, spent, strict=True):
            times[name][stage].append(sec)
        times[name]["total"].append(done - start)

    for name in runtimes:  # warm-up
        one(name, files[0])
    for name in runtimes:
        for stage in times[name]:
            times[name][stage].clear()
    for _ in range(rounds):
        for name in runtimes:
            for path in files:
                one(name, path)
    return times


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


def print_whole_path(
    times: dict[str, dict[str, list[float]]], failed: dict[str, str], args: argparse.Namespace
) -> None:
    print()
    print(
        f"whole per-image path, batch 1: {args.images} DICOM files of "
        f"{args.source_size}x{args.source_size} pixels, median ms per image"
    )
    header = f"{'runtime':<14}" + "".join(f"{s:>13}" for s in STAGES) + f"{'total':>10}"
    print(header)
    print("-" * len(header))
    medians = {
        name: {stage: 1000.0 * statistics.median(t) for stage, t in stages.items()}
        for name, stages in times.items()
    }
    for name in ORDER:
        if name in failed:
            print(f"{name:<14}unavailable: {failed[name]}")
            continue
        ms = medians[name]
        print(f"{name:<14}" + "".join(f"{ms[s]:>13.1f}" for s in STAGES) + f"{ms['total']:>10.1f}")
    print()
    print(f"medians of {args.rounds} interleaved rounds over every file, boxes always drawn;")
    print("read is pydicom.dcmread (the pixels are decoded in prepare); heads+boxes is")
    print("Classifier.predict less the backbone (heads, localisation map or Grad-CAM, boxes);")
    print("the total is the median of the per-image totals, not the sum of the medians")
    fastest = min(medians, key=lambda name: medians[name]["total"])
    ms = medians[fastest]
    shares = ", ".join(f"{s} {100 * ms[s] / ms['total']:.0f}%" for s in STAGES)
    print(f"share of the total for the fastest, {fastest} ({ms['total']:.1f} ms/image): {shares}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle",
        type=Path,
        default=default_bundle_path(),
        help="a model bundle (default: %(default)s)",
    )
    parser.add_argument(
        "--untrained",
        metavar="ARCH",
        choices=sorted(ARCHS),
        help=f"an untrained network instead of a bundle, one of {sorted(ARCHS)}",
    )
    parser.add_argument("--size", type=int, default=256, help="input size with --untrained")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8, help="batch size of the large batch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--source-size",
        type=int,
        default=1024,
        help="side in pixels of the DICOM files of the whole-path table",
    )
    parser.add_argument(
        "--matmul", type=int, nargs="+", default=[2048, 4096], help="sides of the peak matmuls"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)

    if args.untrained:
        model = untrained_model(args.untrained, args.size)
        what = f"UNTRAINED {args.untrained} (random weights: timings representative, outputs not)"
    else:
        try:
            model = load_bundle(args.bundle, "cpu")
        except BundleError as exc:
            parser.error(f"{exc} (give --bundle DIR, or --untrained ARCH for an untrained network)")
        what = f"bundle {model.metadata.name} {model.metadata.version} ({model.metadata.arch})"
    network, size = model.network.eval(), model.metadata.input_size
    if network.localisation_head is not None:
        what += ", localisation head"
    batch = images(args.images, model.metadata.preprocess)
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
        files = write_dicoms(Path(tmp), args.images, args.source_size)
        path_times = time_whole_path(model, runtimes, files, args.rounds)
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
    print_whole_path(path_times, failed, args)
    print(f"choose_runtime picks: {choice.name}")
    for r in choice.records:
        ms = "-" if r.ms_per_image is None else f"{r.ms_per_image:.1f} ms/img (b{n})"
        diff = "-" if r.max_abs_diff is None else f"|dp| {r.max_abs_diff:.1e}"
        status = "ok" if r.passed else f"{'rejected' if r.available else 'unavailable'}: {r.reason}"
        print(f"  {r.name:<14}{ms:>20}  {diff:<14}{status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
