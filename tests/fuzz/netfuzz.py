"""A seeded network fuzzer for the DICOM listener: mutated PDUs and data sets over raw sockets.

Not coverage-guided: each case is built from valid protocol bytes (A-ASSOCIATE-RQ, P-DATA-TF
with a C-ECHO or C-STORE, A-RELEASE-RQ) with random mutations (bit flips, byte and length
field changes, truncation, splices, duplicated or dropped items, garbage), sent to a real
:class:`dicom_node.scp.StoreSCP` in this process. After each case, a good peer must still get
its C-ECHO answered; at the end, the listener must have no association left and no partial
file in its stream directory. Log records with a traceback, and exceptions that escape a
thread, are findings (the listener's refusals log warnings without one).

    .venv/bin/python tests/fuzz/fuzz_network.py --seconds 300 --seed 1
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF

from dicom_node.received import Peer, ReceivedInstance
from dicom_node.scp import ListenerConfig, StoreSCP
from dicom_node.statuses import RejectReason, StoreStatus

from fuzz_targets import CORPUS, CRASHES, ROOT, SOP_CLASS_UID, SOP_INSTANCE_UID

CALLED = b"XRAYD"
CALLING = b"MODALITY"
VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT = b"1.2.840.10008.1.2"
EXPLICIT = b"1.2.840.10008.1.2.1"
MAX_PDU = 16384
#: a case's whole exchange, and the good peer's C-ECHO, must end within these (seconds)
CASE_SECONDS = 2.0
ECHO_SECONDS = 10.0
OUR_PACKAGES = ("dicom_node", "xrayd", "models", "storage", "config")


# -- valid protocol bytes ---------------------------------------------------------------------


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _ae(title: bytes) -> bytes:
    return title.ljust(16, b" ")[:16]


def presentation_context(context_id: int, abstract: bytes, syntaxes: list[bytes]) -> bytes:
    body = struct.pack(">BBBB", context_id, 0, 0, 0) + _item(0x30, abstract)
    return _item(0x20, body + b"".join(_item(0x40, s) for s in syntaxes))


def user_information(max_pdu: int = MAX_PDU) -> bytes:
    return _item(
        0x50,
        _item(0x51, struct.pack(">I", max_pdu))
        + _item(0x52, b"1.2.826.0.1.3680043.9.3811.3.0")
        + _item(0x55, b"XRAYD_FUZZ"),
    )


def associate_rq_items(store: bool = False) -> list[bytes]:
    """The variable items of an A-ASSOCIATE-RQ: application context, contexts, user info."""
    items = [
        _item(0x10, APPLICATION_CONTEXT),
        presentation_context(1, VERIFICATION.encode(), [IMPLICIT]),
    ]
    if store:
        items.append(presentation_context(3, SOP_CLASS_UID.encode(), [EXPLICIT, IMPLICIT]))
    items.append(user_information())
    return items


def associate_rq(items: list[bytes], called: bytes = CALLED, calling: bytes = CALLING) -> bytes:
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + b"\x00" * 32 + b"".join(items)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


RELEASE_RQ = pdu(0x05, b"\x00" * 4)
ABORT = pdu(0x07, b"\x00\x00\x00\x00")


def _pdata_pdus(message: Any, context_id: int) -> list[bytes]:
    out = []
    for primitive in message.encode_msg(context_id, MAX_PDU):
        tf = P_DATA_TF()
        tf.from_primitive(primitive)
        out.append(tf.encode())
    return out


def echo_pdus(message_id: int = 1) -> list[bytes]:
    primitive = C_ECHO()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = VERIFICATION
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return _pdata_pdus(message, 1)


def store_pdus(dataset: bytes, message_id: int = 7) -> list[bytes]:
    """P-DATA-TF PDUs of a C-STORE-RQ (explicit VR little endian, context 3) of ``dataset``."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = SOP_CLASS_UID
    primitive.AffectedSOPInstanceUID = SOP_INSTANCE_UID
    primitive.Priority = 2
    primitive.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return _pdata_pdus(message, 3)


def pdv_items(pdata: bytes) -> list[bytes]:
    """The PDV items (length, context, control header, fragment) of one P-DATA-TF PDU."""
    items, at = [], 6
    while at + 4 <= len(pdata):
        (length,) = struct.unpack(">I", pdata[at : at + 4])
        items.append(pdata[at : at + 4 + length])
        at += 4 + length
    return items


def dataset_seeds() -> list[bytes]:
    """The data sets (explicit VR little endian, after the file meta) of the header seeds."""
    seeds = []
    for path in sorted((CORPUS / "header").glob("*.dcm")):
        raw = path.read_bytes()
        with contextlib.suppress(Exception):
            ds = dcmread(BytesIO(raw))
            if ds.file_meta.TransferSyntaxUID == EXPLICIT.decode():
                meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
                seeds.append(raw[meta_end:])
    return seeds


# -- mutations --------------------------------------------------------------------------------


def mutate(rng: random.Random, data: bytes, rounds: int | None = None) -> bytes:
    """Bit flips, byte sets, 16/32-bit length fields changed, inserts, deletes, truncation."""
    out = bytearray(data)
    for _ in range(rounds or rng.randint(1, 4)):
        if not out:
            out += rng.randbytes(rng.randint(1, 8))
            continue
        at = rng.randrange(len(out))
        choice = rng.randrange(8)
        if choice == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif choice == 1:
            out[at] = rng.choice((0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif choice in (2, 3):
            width, fmt = (2, ">H") if choice == 2 else (4, ">I")
            if at + width <= len(out):
                (old,) = struct.unpack(fmt, out[at : at + width])
                top = 0xFFFF if width == 2 else 0xFFFFFFFF
                new = rng.choice(
                    (0, 1, top, top // 2, old + 1, old - 1, old * 2, rng.randrange(top))
                )
                out[at : at + width] = struct.pack(fmt, new & top)
        elif choice == 4:
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif choice == 5:
            del out[at : at + rng.randint(1, 32)]
        elif choice == 6:
            del out[at:]
        else:  # splice: a copy of another stretch of the same bytes
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 64)]
    return bytes(out)


def mutate_items(rng: random.Random, items: list[bytes]) -> list[bytes]:
    """Structure-aware: drop, duplicate, reorder, or mutate one item (lengths included)."""
    items = list(items)
    choice = rng.randrange(5)
    if choice == 0 and items:
        del items[rng.randrange(len(items))]
    elif choice == 1 and items:
        items.insert(rng.randrange(len(items) + 1), rng.choice(items) * rng.randint(1, 40))
    elif choice == 2:
        rng.shuffle(items)
    elif choice == 3:
        items.insert(
            rng.randrange(len(items) + 1),
            _item(rng.randrange(256), rng.randbytes(rng.randint(0, 70))),
        )
    elif items:
        at = rng.randrange(len(items))
        items[at] = mutate(rng, items[at])
    return items


@dataclass
class Case:
    """One fuzz case: what is sent, in order (each entry one ``sendall``)."""

    kind: str
    sends: list[bytes]

    def to_json(self, seed: int, number: int, problem: str) -> str:
        return json.dumps(
            {
                "seed": seed,
                "case": number,
                "kind": self.kind,
                "problem": problem,
                "sends": [s.hex() for s in self.sends],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Case:
        data = json.loads(text)
        return cls(data["kind"], [bytes.fromhex(s) for s in data["sends"]])


def make_case(rng: random.Random, datasets: list[bytes]) -> Case:
    kind = rng.choice(
        (
            "assoc_rq",
            "assoc_items",
            "pdata_echo",
            "pdv_items",
            "store_dataset",
            "truncated",
            "out_of_order",
            "garbage",
        )
    )
    good_rq = associate_rq(associate_rq_items())
    store_rq = associate_rq(associate_rq_items(store=True))
    if kind == "assoc_rq":
        return Case(kind, [mutate(rng, good_rq), RELEASE_RQ])
    if kind == "assoc_items":
        called = rng.choice((CALLED, CALLED, b"", b"\x00" * 16, rng.randbytes(16)))
        calling = rng.choice((CALLING, CALLING, b"", b"\\\\..", rng.randbytes(16)))
        return Case(
            kind,
            [
                associate_rq(mutate_items(rng, associate_rq_items(store=True)), called, calling),
                RELEASE_RQ,
            ],
        )
    if kind == "pdata_echo":
        pdus = [mutate(rng, p) for p in echo_pdus(rng.randrange(1 << 16))]
        return Case(kind, [good_rq, *pdus, RELEASE_RQ])
    if kind == "pdv_items":
        items = [i for p in echo_pdus() for i in pdv_items(p)]
        items = mutate_items(rng, items)
        return Case(kind, [good_rq, pdu(0x04, b"".join(items)), RELEASE_RQ])
    if kind == "store_dataset":
        dataset = mutate(rng, rng.choice(datasets), rng.randint(1, 8))
        pdus = store_pdus(dataset)
        if rng.random() < 0.3:  # and the framing too
            at = rng.randrange(len(pdus))
            pdus[at] = mutate(rng, pdus[at])
        return Case(kind, [store_rq, *pdus, RELEASE_RQ])
    if kind == "truncated":
        stream = b"".join([store_rq, *store_pdus(rng.choice(datasets)), RELEASE_RQ])
        return Case(kind, [stream[: rng.randrange(1, len(stream))]])
    if kind == "out_of_order":
        parts = [
            good_rq,
            *echo_pdus(),
            RELEASE_RQ,
            ABORT,
            pdu(0x02, good_rq[6:]),
            pdu(0x06, b"\x00" * 4),
        ]
        return Case(kind, [rng.choice(parts) for _ in range(rng.randint(1, 5))])
    return Case(kind, [rng.randbytes(rng.randint(1, 600))])


# -- the listener, its log, and the good peer ----------------------------------------------------


class MemorySink:
    """Accepts MODALITY, acknowledges every header-checked instance, keeps no file."""

    def __init__(self) -> None:
        self.stored = 0

    def store(self, instance: ReceivedInstance) -> StoreStatus:
        self.stored += 1
        return StoreStatus.SUCCESS  # the listener removes the file, still in its stream dir

    def is_caller_allowed(self, calling_ae_title: str, host: str) -> bool:
        return calling_ae_title == CALLING.decode()

    def association_rejected(self, peer: Peer, reason: RejectReason) -> None:
        pass

    def association_released(self, peer: Peer, study_instance_uids: frozenset[str]) -> None:
        pass


@dataclass
class Problems:
    """Log records with a traceback and exceptions that escaped a thread, while watched."""

    records: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, text: str) -> None:
        with self.lock:
            self.records.append(text)

    def take(self) -> list[str]:
        with self.lock:
            taken, self.records = self.records, []
        return taken


class _Watch(logging.Handler):
    def __init__(self, problems: Problems) -> None:
        super().__init__(logging.WARNING)
        self.problems = problems

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            self.problems.add(f"{record.name} {record.levelname}: {record.getMessage()}\n{text}")


@contextlib.contextmanager
def watched(problems: Problems) -> Iterator[None]:
    handler = _Watch(problems)
    root = logging.getLogger()
    old_level, old_hook = root.level, threading.excepthook
    root.addHandler(handler)
    root.setLevel(min(old_level or logging.WARNING, logging.WARNING))

    def hook(args: threading.ExceptHookArgs) -> None:
        text = "".join(
            traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        )
        name = args.thread.name if args.thread else "?"
        problems.add(f"uncaught in thread {name}:\n{text}")

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = old_hook
        root.removeHandler(handler)
        root.setLevel(old_level)


def ours(problem: str) -> bool:
    """Whether a traceback passes through the project's code."""
    return any(f"{ROOT}/{package}/" in problem for package in OUR_PACKAGES)


@contextlib.contextmanager
def listener(idle_seconds: float = 1.5) -> Iterator[tuple[StoreSCP, Path]]:
    with tempfile.TemporaryDirectory(prefix="xrayd-netfuzz-") as tmp:
        streams = Path(tmp)
        counter = iter(range(1 << 62))
        scp = StoreSCP(
            ListenerConfig(
                ae_title=CALLED.decode(),
                host="127.0.0.1",
                port=0,
                new_stream_path=lambda: streams / f"{next(counter)}.part",
                max_associations=16,
                max_pdu_bytes=MAX_PDU,
                idle_timeout_seconds=idle_seconds,
                artim_timeout_seconds=idle_seconds,
                max_instance_bytes=4 * 1024 * 1024,
            ),
            MemorySink(),
        )
        scp.start()
        try:
            yield scp, streams
        finally:
            scp.stop(timeout=2)


# -- talking to it --------------------------------------------------------------------------------


def _drain(sock: socket.socket, wait: float, deadline: float) -> bool:
    """Read what the listener answers until ``wait`` s of silence; False once it closed."""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.005, min(wait, deadline - time.monotonic())))
        try:
            if not sock.recv(65536):
                return False
        except TimeoutError:
            return True
        except OSError:
            return False
    return True


def send_case(port: int, case: Case, seconds: float = CASE_SECONDS) -> None:
    """Send the case's bytes, reading answers between them; always within ``seconds``."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(OSError):
        sock = socket.create_connection(("127.0.0.1", port), timeout=seconds)
        with sock:
            for n, chunk in enumerate(case.sends, 1):
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                sock.sendall(chunk)
                if not _drain(sock, 0.02 if n < len(case.sends) else 0.1, deadline):
                    break


def _read_pdu(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    head = _read_exact(sock, 6, deadline)
    kind, _, length = struct.unpack(">BBI", head)
    return kind, _read_exact(sock, length, deadline)


def _read_exact(sock: socket.socket, count: int, deadline: float) -> bytes:
    got = bytearray()
    while len(got) < count:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(count - len(got))
        if not chunk:
            raise ConnectionError(f"closed after {len(got)} of {count} bytes")
        got += chunk
    return bytes(got)


#: A-ASSOCIATE-RJ transient, service provider (presentation), local limit exceeded
BUSY = "PDU type 0x03 00020302"
_ECHO_OK = bytes.fromhex("00000009020000000000")  # (0000,0900): 2 bytes, 0x0000


def good_echo(port: int, seconds: float = ECHO_SECONDS) -> str | None:
    """A well-behaved peer's C-ECHO over a raw socket; ``None`` when answered with success."""
    deadline = time.monotonic() + seconds
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
            sock.sendall(associate_rq(associate_rq_items()))
            kind, body = _read_pdu(sock, deadline)
            if kind != 0x02:
                return f"association answered with PDU type 0x{kind:02X} {body[:16].hex()}"
            for p in echo_pdus():
                sock.sendall(p)
            kind, body = _read_pdu(sock, deadline)
            if kind != 0x04 or _ECHO_OK not in body:
                return f"C-ECHO answered with PDU type 0x{kind:02X} {body[:64].hex()}"
            sock.sendall(RELEASE_RQ)
            kind, _ = _read_pdu(sock, deadline)
            return None if kind == 0x06 else f"release answered with PDU type 0x{kind:02X}"
    except (OSError, ConnectionError, struct.error) as exc:
        return f"no C-ECHO answer: {type(exc).__name__}: {exc}"


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Report:
    cases: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    third_party: list[str] = field(default_factory=list)
    reproducers: list[Path] = field(default_factory=list)
    #: good C-ECHOs refused as "too many associations" (slots held by closed connections)
    busy: int = 0

    def summary(self) -> str:
        rate = self.cases / self.seconds if self.seconds else 0.0
        return (
            f"{self.cases} cases in {self.seconds:.1f} s ({rate:.0f}/s), "
            f"{len(self.findings)} findings, {len(self.third_party)} third-party tracebacks, "
            f"{self.busy} echoes refused as busy; "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
        )


def run(
    *,
    seed: int,
    cases: int | None = None,
    seconds: float | None = None,
    save_to: Path | None = None,
    echo_every: int = 1,
    on_case: Callable[[int, Case], None] | None = None,
) -> Report:
    """Fuzz a fresh listener with ``cases`` cases or for ``seconds``; reproducers of findings
    are written to ``save_to`` (e.g. tests/fuzz/crashes/network) when given."""
    rng = random.Random(seed)
    datasets = dataset_seeds()
    report = Report()
    problems = Problems()
    started = time.monotonic()
    seen = {_signature(json.loads(p.read_text())["problem"]) for p in saved_cases()}
    with watched(problems), listener() as (scp, streams):
        port = scp.port
        number = 0
        while (cases is None or number < cases) and (
            seconds is None or time.monotonic() - started < seconds
        ):
            case = make_case(rng, datasets)
            number += 1
            report.kinds[case.kind] = report.kinds.get(case.kind, 0) + 1
            if on_case is not None:
                on_case(number, case)
            send_case(port, case)
            dead = good_echo(port) if number % echo_every == 0 else None
            if dead is not None and BUSY in dead:
                # every slot held by connections the peers already closed (they live until
                # the ARTIM timer): a limit working, not a dead listener, once they are gone
                report.busy += 1
                _wait_idle(scp)
                dead = good_echo(port)
            if not scp.active_associations() and any(streams.iterdir()):
                left = sorted(p.name for p in streams.iterdir())
                problems.add(f"uncaught-state: partial data sets left with no association: {left}")
                for stale in streams.iterdir():
                    stale.unlink()
            found = problems.take()
            mine = [p for p in found if ours(p) or p.startswith("uncaught")]  # and "-state"
            report.third_party += [p for p in found if p not in mine]
            if dead is not None:
                mine.append(f"listener did not answer a good C-ECHO after the case: {dead}")
            if mine:
                report.findings += [f"case {number} ({case.kind}): {p}" for p in mine]
                signature = _signature(mine[0])
                if save_to is not None and signature not in seen:
                    seen.add(signature)
                    save_to.mkdir(parents=True, exist_ok=True)
                    path = save_to / f"seed{seed}-case{number}-{case.kind}.json"
                    path.write_text(case.to_json(seed, number, mine[0][:2000]))
                    report.reproducers.append(path)
                if dead is not None:
                    break  # a dead listener makes every later case a finding too
        report.cases = number
        final = good_echo(port)
        if final is not None:
            report.findings.append(f"listener did not answer a good C-ECHO at the end: {final}")
        leftover = _settle(scp, streams)
        if leftover:
            report.findings.append(leftover)
    report.seconds = time.monotonic() - started
    return report


def _signature(problem: str) -> str:
    """A finding's kind, for one reproducer each: its first line, without thread numbers."""
    first = problem.splitlines()[0] if problem else ""
    return " ".join(w for w in first.split() if not w.startswith("Thread-"))


def _wait_idle(scp: StoreSCP, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while scp.active_associations() and time.monotonic() < deadline:
        time.sleep(0.05)


def _settle(scp: StoreSCP, streams: Path, seconds: float = 15.0) -> str | None:
    """Wait for the listener to drop every association; then no stream file may be left."""
    deadline = time.monotonic() + seconds
    while scp.active_associations() and time.monotonic() < deadline:
        time.sleep(0.1)
    live = len(scp.active_associations())
    if live:
        return f"{live} association(s) still open {seconds:g} s after the last case"
    left = sorted(p.name for p in streams.iterdir())
    return f"partial data sets left in the stream directory: {left[:5]}" if left else None


def replay(case: Case) -> list[str]:
    """Send one saved case to a fresh listener; the findings it causes (empty: fixed)."""
    problems = Problems()
    findings: list[str] = []
    with watched(problems), listener() as (scp, streams):
        send_case(scp.port, case)
        dead = good_echo(scp.port)
        if dead is not None:
            findings.append(dead)
        leftover = _settle(scp, streams)
        if leftover:
            findings.append(leftover)
        findings += [p for p in problems.take() if ours(p) or p.startswith("uncaught")]
    return findings


def saved_cases() -> list[Path]:
    folder = CRASHES / "network"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
