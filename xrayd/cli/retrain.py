"""``xrayd retrain --now|runs|validation`` and ``xrayd scheduler``."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from config.settings import Settings
from xrayd.cli.parsers import Subparsers

if TYPE_CHECKING:
    from xrayd.workers.retrain import RetrainService


def _service(settings: Settings) -> RetrainService:
    from storage.opened import open_storage
    from xrayd.workers.retrain import RetrainService

    storage = open_storage(settings, create_if_empty=True, require_current=True)
    return RetrainService(settings, storage.sessions, storage.spool, store=storage.store)


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "runs":
        return cmd_runs(args, settings)
    if args.action == "validation":
        return cmd_validation(args, settings)
    if not args.now:
        print(
            "xrayd: say --now to run one retraining now (or see `xrayd retrain -h`)",
            file=sys.stderr,
        )
        return 2
    service = _service(settings)
    slot = "manual:" + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # requested as a job of the retrain queue, then claimed and run here in the foreground
    done = service.run_now(slot, "manual", progress=args.progress)
    if done.outcome == "busy":
        print("xrayd: another retraining run is going", file=sys.stderr)
        return 1
    if done.outcome == "slot_taken":
        print(f"xrayd: a retraining run for {slot} was requested already", file=sys.stderr)
        return 1
    if done.outcome == "taken":
        by = f" ({done.worker})" if done.worker else ""
        print(
            f"xrayd: a retrain worker{by} took the requested run first: it runs there, "
            "see `xrayd retrain runs`",
            file=sys.stderr,
        )
        return 1
    run = done.run
    assert run is not None
    if done.outcome == "lost":
        print(
            f"xrayd: run {run.id}: this process lost the run (its lease expired) and did not "
            "record an outcome; see `xrayd retrain runs`",
            file=sys.stderr,
        )
        return 1
    print(
        f"run {run.id}: {run.state}; candidate {run.candidate_version or '-'} "
        f"gate {run.verdict or '-'}; {run.new_reviews} new review(s)"
    )
    if run.report_path:
        print(f"  report: {run.report_path}")
    if run.error:
        print(f"  error: {run.error}", file=sys.stderr)
    return 0 if run.state == "succeeded" else 1


def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    from storage.training import list_runs

    for r in list_runs(_service(settings).sessions, limit=args.limit):
        ended = f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else r.state
        print(
            f"{r.id:>4} {r.slot:<34} {r.state:<9} {ended:<16} reviews {r.new_reviews:<4} "
            f"{r.candidate_version or '-'} {r.verdict or ''} {r.error or ''}"
        )
    return 0


def cmd_validation(args: argparse.Namespace, settings: Settings) -> int:
    from storage.training import add_validation_cases, reviewed_examples, validation_cases

    service = _service(settings)
    if args.what == "show":
        cases = validation_cases(service.sessions)
        by_source: dict[str, int] = {}
        for c in cases:
            by_source[c.source] = by_source.get(c.source, 0) + 1
        print(f"locked validation set: {len(cases)} case(s) {by_source}")
        return 0
    from retrain.manifest import trained_review_keys
    from retrain.validation import review_validation_candidates
    from storage.model_versions import active_version

    active = active_version(service.sessions)
    trained = trained_review_keys(Path(active.path)) if active is not None else frozenset()
    chosen = review_validation_candidates(
        reviewed_examples(service.sessions),
        settings.retrain.review_validation_fraction,
        service.spool.root,
        salt=service.salt(),
        locked=validation_cases(service.sessions),
        trained_keys=trained,
        store=service.store,
    )
    added = add_validation_cases(service.sessions, list(chosen), actor=args.actor)
    print(f"added {added} reviewed image(s) to the locked validation set")
    return 0


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    """Run only the retraining scheduler and a retrain worker that runs what it requests, in
    the foreground, until SIGTERM/SIGINT."""
    from xrayd.runtime.shutdown import block_stop_signals

    stop_signals = block_stop_signals()  # before torch is imported (see block_stop_signals)
    import threading

    from retrain.scheduler import RetrainScheduler
    from xrayd.workers.base import Wakeup
    from xrayd.workers.retrain import RetrainWorker

    service = _service(settings)
    wakeup = Wakeup()
    service.on_requested = wakeup.set
    worker = RetrainWorker(service, threading.Event(), wakeup)
    r = settings.retrain
    scheduler = RetrainScheduler(
        r.schedule, lambda slot: service.request(slot, "scheduled"), timezone=r.timezone
    )
    worker.start()
    scheduler.start()
    print(f"xrayd scheduler: next retraining {scheduler.next_fire_time()}", flush=True)
    signal.sigwait(stop_signals)
    scheduler.stop(wait=True)
    # a run still training is given back (failed on its last attempt): the process ends
    worker.shutdown(timeout=10)
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("retrain", parents=[common], help="retraining from reviews")
    p.add_argument("--now", action="store_true", help="run one retraining now")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("action", nargs="?", choices=("runs", "validation"), default=None)
    p.add_argument("what", nargs="?", choices=("show", "add-reviews"), default="show")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--actor", default="cli", help="who extends the validation set (audit)")
    p.set_defaults(func=cmd_retrain)
    p = sub.add_parser(
        "scheduler", parents=[common], help="run the retraining scheduler alone (not in serve)"
    )
    p.set_defaults(func=cmd_scheduler)
