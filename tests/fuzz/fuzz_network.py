#!/usr/bin/env python3
"""Run the network fuzzer (:mod:`netfuzz`) against an in-process listener.

    .venv/bin/python tests/fuzz/fuzz_network.py --seconds 300 --seed 1

Reproducers of findings go to tests/fuzz/crashes/network/ (replayed by the test suite).
Exit status 1 when there were findings.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from fuzz_targets import CRASHES
from netfuzz import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--out", default=str(CRASHES / "network"))
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger().addHandler(logging.NullHandler())  # the watch sees them; none printed
    report = run(
        seed=args.seed,
        cases=args.cases,
        seconds=args.seconds,
        save_to=args.out and __import__("pathlib").Path(args.out),
    )
    print(report.summary())
    for finding in report.findings:
        print("FINDING", finding[:3000])
    for text in report.third_party[:10]:
        print("THIRD-PARTY", text[:2000])
    for path in report.reproducers:
        print("reproducer:", path)
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
