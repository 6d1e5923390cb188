"""Orthanc (Debian's ``orthanc``) as a real PACS for end-to-end tests: own ports, own storage."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import need

STARTED = "Orthanc has started"
#: Debian's ``orthanc-dicomweb`` (a symlink to /usr/lib/orthanc/libOrthancDicomWeb.so.<version>)
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Where the DICOMweb plugin answers when ``running_orthanc(..., dicomweb=True)``.
DICOMWEB_ROOT = "/dicom-web/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    ae_title: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen[str]
    storage: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            return json.loads(r.read().decode())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            data: bytes = r.read()
            return data

    def upload(self, data: bytes) -> dict[str, Any]:
        """Store one Part 10 file over REST (``POST /instances``); Orthanc's answer (ID, Status)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/instances",
            data=data,
            method="POST",
            headers={"Content-Type": "application/dicom"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            answer: dict[str, Any] = json.loads(r.read().decode())
        return answer

    def instances(self) -> list[dict[str, Any]]:
        """Every stored instance's main DICOM tags (simplified)."""
        return [self.get(f"/instances/{i}/simplified-tags") for i in self.get("/instances")]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Log(threading.Thread):
    """Drains Orthanc's log (so it never blocks on a full pipe) and notes when it started."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.lines: list[str] = []
        self.started = threading.Event()
        self.ended = threading.Event()

    def run(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            if STARTED in line:
                self.started.set()
        self.ended.set()
        self.started.set()  # wake the waiter: it checks which event fired

    def wait_started(self, timeout: float) -> None:
        if not self.started.wait(timeout) or self.ended.is_set():
            self.process.kill()
            raise RuntimeError("Orthanc did not start:\n" + "".join(self.lines[-20:]))


@contextmanager
def running_orthanc(
    directory: Path,
    *,
    ae_title: str = "ORTHANC",
    dicom_port: int | None = None,
    dicomweb: bool = False,
) -> Iterator[Orthanc]:
    """Start Orthanc on loopback (any caller may store), stop it afterwards. ``dicomweb`` loads
    Debian's DICOMweb plugin, answering under :data:`DICOMWEB_ROOT` on the HTTP port."""
    binary = shutil.which("Orthanc")
    need(binary is not None, "Orthanc is not installed (apt-get install orthanc)")
    assert binary is not None
    if dicomweb:
        need(
            DICOMWEB_PLUGIN.is_file(),
            f"Orthanc's DICOMweb plugin is not at {DICOMWEB_PLUGIN}"
            " (apt-get install orthanc-dicomweb)",
        )
    directory.mkdir(parents=True, exist_ok=True)
    port = dicom_port or free_port()
    http = free_port()
    config = {
        "Name": "xrayd-test-pacs",
        "StorageDirectory": str(directory / "db"),
        "IndexDirectory": str(directory / "db"),
        "HttpPort": http,
        "DicomPort": port,
        "DicomAet": ae_title,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "StorageCompression": False,
        "Plugins": [str(DICOMWEB_PLUGIN)] if dicomweb else [],
    }
    if dicomweb:
        config["DicomWeb"] = {"Enable": True, "Root": DICOMWEB_ROOT}
    (directory / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [binary, "--verbose", str(directory / "orthanc.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = Orthanc(ae_title, port, http, process, directory / "db")
    log = _Log(process)
    log.start()
    try:
        log.wait_started(60)
        yield server
    finally:
        server.stop()
        log.join(timeout=10)
