"""The pynetdicom code dicom_node relies on is the code it was written against.

dicom_node bounds and speeds up pynetdicom from the inside (see dicom_node/hardening.py,
reactor.py, streaming.py, dimse_limits.py, scu.py, scp.py): it uses about twenty private names,
wraps private methods, and carries adapted copies of two reactor loops and a socket's ``send``.
pyproject.toml pins the exact release; this test fails when the installed release differs from
the pin, when a private name is gone, or when the source of an upstream function or method
that dicom_node copies, overrides, wraps or calls changed. The message names the upstream piece
and our module to re-read.

After a deliberate upgrade of pynetdicom: re-read each named module against the new upstream
code, change the pin in pyproject.toml, then record the new hashes with::

    .venv/bin/python tests/unit/dicom_node/test_pynetdicom_upstream.py --write

(it rewrites ``pynetdicom_upstream.json`` beside this file) and commit both.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
RECORD = HERE / "pynetdicom_upstream.json"
PYPROJECT = HERE.parents[2] / "pyproject.toml"


@dataclass(frozen=True)
class Watched:
    """An upstream function or method, how dicom_node depends on it, and where."""

    target: str  # "module:Qualified.name"
    how: str  # copied | overridden | wrapped | called | reads instance attributes of
    ours: tuple[str, ...]


WATCHED = (
    Watched(
        "pynetdicom.dul:DULServiceProvider.run_reactor",
        "copied (adapted) as dicom_node.reactor.run_reactor",
        ("dicom_node/reactor.py",),
    ),
    Watched(
        "pynetdicom.dul:DULServiceProvider._read_pdu_data",
        "replaced per association by dicom_node.hardening.bounded_read_pdu",
        ("dicom_node/hardening.py", "dicom_node/scu.py"),
    ),
    Watched(
        "pynetdicom.dul:DULServiceProvider._decode_pdu",
        "called by the bounded PDU reader",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.dul:DULServiceProvider._process_recv_primitive",
        "called by the select reactor",
        ("dicom_node/reactor.py",),
    ),
    Watched(
        "pynetdicom.dul:DULServiceProvider._is_transport_event",
        "called by the select reactor",
        ("dicom_node/reactor.py",),
    ),
    Watched(
        "pynetdicom.dul:DULServiceProvider.__init__",
        "its instance attributes (_recv_pdu, _idle_timer, _kill_thread, queues) are used",
        ("dicom_node/hardening.py", "dicom_node/reactor.py", "dicom_node/scu.py"),
    ),
    Watched(
        "pynetdicom.association:Association._run_reactor",
        "copied (adapted) as dicom_node.reactor.run_association_reactor",
        ("dicom_node/reactor.py",),
    ),
    Watched(
        "pynetdicom.association:Association._serve_request",
        "called by the association reactor",
        ("dicom_node/reactor.py",),
    ),
    Watched(
        "pynetdicom.association:Association._abort_blocking",
        "wrapped (cut the connection when data is still queued)",
        ("dicom_node/scu.py",),
    ),
    Watched(
        "pynetdicom.association:Association.__init__",
        "its instance attributes (_dul_ready, _kill, _is_paused, _reactor_checkpoint) are used",
        ("dicom_node/reactor.py",),
    ),
    Watched(
        "pynetdicom.acse:ACSE._negotiate_as_acceptor",
        "wrapped by the listener's accept hook",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.dimse:DIMSEServiceProvider.receive_primitive",
        "wrapped by the DIMSE size caps",
        ("dicom_node/dimse_limits.py",),
    ),
    Watched(
        "pynetdicom.dimse_messages:DIMSEMessage.decode_msg",
        "its NamedTemporaryFile is replaced by StreamingFile; _data_set_file is read",
        ("dicom_node/streaming.py", "dicom_node/hardening.py", "dicom_node/dimse_limits.py"),
    ),
    Watched(
        "pynetdicom.dimse_messages:DIMSEMessage.message_to_primitive",
        "hands _data_set_file to the C-STORE primitive's _dataset_file, read by the SCP",
        ("dicom_node/scp.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationSocket.send",
        "copied (adapted, bounded) as dicom_node.scu._BoundedSocket.send",
        ("dicom_node/scu.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationSocket.connect",
        "extended (a timeout after pynetdicom's settimeout(None))",
        ("dicom_node/scu.py",),
    ),
    Watched(
        "pynetdicom.transport:RequestHandler._create_association",
        "extended by BoundedRequestHandler",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationServer.__init__",
        "subclassed by BoundedAssociationServer",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationServer.process_request",
        "overridden (no thread per accept, connection caps)",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationServer.get_request",
        "overridden (TLS handshake later, bounded)",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationServer.server_bind",
        "overridden (shared listening socket)",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationServer.server_close",
        "overridden (shared listening socket)",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.transport:AssociationServer.service_actions",
        "overridden (no forced gc.collect)",
        ("dicom_node/hardening.py",),
    ),
    Watched(
        "pynetdicom.ae:ApplicationEntity._create_socket",
        "overridden by scu._BoundedAE",
        ("dicom_node/scu.py",),
    ),
    Watched(
        "pynetdicom.ae:ApplicationEntity.make_server",
        "called with server_class; the SCP appends to ae._servers",
        ("dicom_node/scp.py",),
    ),
    Watched(
        "pynetdicom.utils:make_target",
        "called to give the DUL thread our reactor",
        ("dicom_node/reactor.py",),
    ),
)

#: (owner, name, kind, our modules): "attr" must be an attribute of the owner (module or
#: class); "instance" must be assigned as ``self.<name>`` in the owner class's source.
PRIVATE_NAMES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("pynetdicom._config", "LOG_REQUEST_IDENTIFIERS", "attr", ("dicom_node/hardening.py",)),
    ("pynetdicom._config", "LOG_RESPONSE_IDENTIFIERS", "attr", ("dicom_node/hardening.py",)),
    ("pynetdicom._config", "LOG_HANDLER_LEVEL", "attr", ("dicom_node/hardening.py",)),
    ("pynetdicom._config", "STORE_RECV_CHUNKED_DATASET", "attr", ("dicom_node/streaming.py",)),
    ("pynetdicom._config", "STORE_SEND_CHUNKED_DATASET", "attr", ("dicom_node/scu.py",)),
    ("pynetdicom.dimse_messages", "NamedTemporaryFile", "attr", ("dicom_node/streaming.py",)),
    ("pynetdicom.dul:DULServiceProvider", "_read_pdu_data", "attr", ("dicom_node/hardening.py",)),
    ("pynetdicom.dul:DULServiceProvider", "_decode_pdu", "attr", ("dicom_node/hardening.py",)),
    (
        "pynetdicom.dul:DULServiceProvider",
        "_process_recv_primitive",
        "attr",
        ("dicom_node/reactor.py",),
    ),
    (
        "pynetdicom.dul:DULServiceProvider",
        "_is_transport_event",
        "attr",
        ("dicom_node/reactor.py",),
    ),
    ("pynetdicom.dul:DULServiceProvider", "_recv_pdu", "instance", ("dicom_node/hardening.py",)),
    ("pynetdicom.dul:DULServiceProvider", "_idle_timer", "instance", ("dicom_node/reactor.py",)),
    ("pynetdicom.dul:DULServiceProvider", "_kill_thread", "instance", ("dicom_node/reactor.py",)),
    ("threading:Thread", "_target", "instance", ("dicom_node/reactor.py",)),
    ("pynetdicom.association:Association", "_run_reactor", "attr", ("dicom_node/reactor.py",)),
    ("pynetdicom.association:Association", "_serve_request", "attr", ("dicom_node/reactor.py",)),
    ("pynetdicom.association:Association", "_abort_blocking", "attr", ("dicom_node/scu.py",)),
    ("pynetdicom.association:Association", "_dul_ready", "instance", ("dicom_node/reactor.py",)),
    ("pynetdicom.association:Association", "_kill", "instance", ("dicom_node/reactor.py",)),
    ("pynetdicom.association:Association", "_is_paused", "instance", ("dicom_node/reactor.py",)),
    (
        "pynetdicom.association:Association",
        "_reactor_checkpoint",
        "instance",
        ("dicom_node/reactor.py",),
    ),
    ("pynetdicom.acse:ACSE", "_negotiate_as_acceptor", "attr", ("dicom_node/hardening.py",)),
    (
        "pynetdicom.dimse_messages:DIMSEMessage",
        "_data_set_file",
        "instance",
        ("dicom_node/hardening.py", "dicom_node/dimse_limits.py"),
    ),
    ("pynetdicom.dimse_primitives:C_STORE", "_dataset_file", "attr", ("dicom_node/scp.py",)),
    (
        "pynetdicom.transport:AssociationSocket",
        "_is_connected",
        "instance",
        ("dicom_node/reactor.py",),
    ),
    (
        "pynetdicom.transport:RequestHandler",
        "_create_association",
        "attr",
        ("dicom_node/hardening.py",),
    ),
    ("pynetdicom.ae:ApplicationEntity", "_create_socket", "attr", ("dicom_node/scu.py",)),
    ("pynetdicom.ae:ApplicationEntity", "_servers", "instance", ("dicom_node/scp.py",)),
)


def resolve(target: str) -> Any:
    module_name, _, qualified = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualified.split(".") if qualified else ():
        obj = inspect.getattr_static(obj, part)
    return obj.__func__ if isinstance(obj, classmethod | staticmethod) else obj


def source_hash(target: str) -> str:
    return hashlib.sha256(inspect.getsource(resolve(target)).encode("utf-8")).hexdigest()


def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORD.read_text())
    return data


def pinned_version() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.replace(" ", "").startswith("pynetdicom")]
    name, sep, version = spec.replace(" ", "").partition("==")
    assert sep and name == "pynetdicom", f"pyproject.toml must pin pynetdicom==X.Y.Z, has {spec!r}"
    return version


def test_installed_release_is_the_pinned_and_recorded_one() -> None:
    installed = metadata.version("pynetdicom")
    pin = pinned_version()
    assert installed == pin, (
        f"pynetdicom {installed} is installed but pyproject.toml pins {pin}: install the pin, "
        "or upgrade deliberately (see this test's docstring)"
    )
    assert recorded()["pynetdicom"] == pin, (
        f"{RECORD.name} records pynetdicom {recorded()['pynetdicom']}, the pin is {pin}: "
        "regenerate it after re-reading the modules it names (see this test's docstring)"
    )


@pytest.mark.parametrize(
    ("owner", "name", "kind", "ours"),
    PRIVATE_NAMES,
    ids=[f"{o}.{n}" for o, n, _, _ in PRIVATE_NAMES],
)
def test_private_name_still_exists(owner: str, name: str, kind: str, ours: tuple[str, ...]) -> None:
    obj = resolve(owner)
    if kind == "attr":
        present = hasattr(obj, name)
    else:  # assigned in the class's own code (an instance attribute)
        present = re.search(rf"self\.{name}\s*[:=]", inspect.getsource(obj)) is not None
    assert present, f"upstream {owner} no longer has {name} ({kind}); re-read {', '.join(ours)}"


@pytest.mark.parametrize("watched", WATCHED, ids=[w.target for w in WATCHED])
def test_upstream_source_unchanged(watched: Watched) -> None:
    hashes = recorded()["sources"]
    assert watched.target in hashes, (
        f"{watched.target} has no recorded hash: regenerate {RECORD.name} (see the docstring)"
    )
    assert source_hash(watched.target) == hashes[watched.target], (
        f"upstream {watched.target} changed since pynetdicom {recorded()['pynetdicom']} "
        f"(dicom_node: {watched.how}); re-read {', '.join(watched.ours)} against it, then "
        "regenerate the hashes (see this test's docstring)"
    )


def test_record_lists_exactly_the_watched_pieces() -> None:
    assert set(recorded()["sources"]) == {w.target for w in WATCHED}


def write_record() -> None:
    """Record the installed pynetdicom's version and the source hashes of :data:`WATCHED`."""
    data = {
        "pynetdicom": metadata.version("pynetdicom"),
        "sources": {w.target: source_hash(w.target) for w in WATCHED},
    }
    RECORD.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {RECORD} for pynetdicom {data['pynetdicom']}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: {sys.argv[0]} --write   (after a deliberate pynetdicom upgrade)")
    write_record()
