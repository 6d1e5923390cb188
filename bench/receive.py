#!/usr/bin/env python3
"""Receive throughput: xrayd against DCMTK's storescp, same images, same run.

Sends N (default 200) ~10 MB DX images with DCMTK ``storescu`` — over 1 association, then over 4
concurrent associations — to ``storescp`` and to ``xrayd serve`` (SQLite, fsync of every file
and directory, a committed row per instance before each acknowledgement; storescp does not
fsync). DCMTK tools run with TCP_NODELAY=1 (see ../shared/FACTS.md). Prints images/s and the
ratio xrayd / storescp for each mode. Needs DCMTK (apt-get install dcmtk).

    .venv/bin/python bench/receive.py [--count 200] [--megabytes 10] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_images(count: int, megabytes: float) -> list[Path]:
    folder = OUT / f"images-{count}-{megabytes:g}"
    files = sorted(folder.glob("*.dcm"))
    if len(files) == count:
        return files
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    side = int((megabytes * 1024 * 1024 / 2) ** 0.5)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(side, side), dtype=np.uint16).tobytes()
    study, series = generate_uid(), generate_uid()
    for i in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = DX
        ds.SOPClassUID = DX
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.Modality = "DX"
        ds.PatientID = "BENCH"
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.InstanceNumber = i + 1
        ds.PixelData = pixels
        ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
    return sorted(folder.glob("*.dcm"))


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_listener_processes(proc: subprocess.Popen[bytes], extra: int) -> None:
    """Wait until the ``extra`` listener processes have started and gone idle.

    They share the main process's listening socket, so nothing outside tells when each one
    listens; a process whose start-up (imports, database) is over uses no more CPU. Starting
    the timing early would only make xrayd look slower (the main process would take more).
    """
    deadline = time.monotonic() + 120
    quiet_since: float | None = None
    last: list[int] = []
    while time.monotonic() < deadline:
        kids = _children(proc.pid)
        try:
            ticks = [_cpu_ticks(k) for k in kids]
        except OSError:
            ticks = []
        if len(kids) >= extra and ticks == last:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                return
        else:
            quiet_since = None
        last = ticks
        time.sleep(0.1)
    raise SystemExit("the listener processes did not start")


def wait_ready(port: int, aec: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"receiver exited early with {proc.returncode}")
        ok = subprocess.run(
            ["echoscu", "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port)],
            capture_output=True, env=ENV,
        )
        if ok.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("receiver did not answer C-ECHO")


def send(files: list[Path], port: int, aec: str, associations: int) -> float:
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port), *map(str, chunk)],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


def run_storescp(files: list[Path], associations: int) -> float:
    port = free_port()
    target = OUT / "storescp"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    proc = subprocess.Popen(
        ["storescp", "--fork", "-aet", "STORESCP", "-od", str(target), str(port)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, "STORESCP", proc)
        os.sync()
        elapsed = send(files, port, "STORESCP", associations)
        received = len(list(target.iterdir()))
        assert received == len(files), f"storescp stored {received} of {len(files)}"
        return elapsed
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(target, ignore_errors=True)


def disk_ceiling(megabytes: float, count: int) -> float:
    """Images/s of write + fdatasync of ``count`` files this size, one after another.

    As many files as the bench sends: this VM's disk takes the first ~20 at about 1.5x its
    sustained rate (a host-side cache), so a short measurement overstates what lasts.
    """
    folder = OUT / "disk"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    payload = os.urandom(int(megabytes * 1024 * 1024))
    os.sync()
    start = time.perf_counter()
    for i in range(count):
        fd = os.open(folder / f"{i}.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.write(fd, payload)
        os.fdatasync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - start
    shutil.rmtree(folder, ignore_errors=True)
    return count / elapsed


def wait_model_loaded(web_port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``/ready`` (model loaded: its runtime choice keeps the CPU busy at start)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"xrayd exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit("xrayd did not become ready")


def run_xrayd(files: list[Path], associations: int, processes: int = 1) -> float:
    port = free_port()
    web_port = free_port()
    data = OUT / "xrayd"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    config = data / "xrayd.toml"
    config.write_text(
        f'[node]\nae_title = "XRAYD"\nhost = "127.0.0.1"\nport = {port}\n'
        f'max_associations = 8\nmin_free_mb = 64\nlistener_processes = {processes}\n'
        f'[[node.callers]]\nae_title = "BENCH"\n'
        f'[storage]\ndata_dir = "{data}"\n[logging]\nlevel = "WARNING"\n'
        f'[web]\nhost = "127.0.0.1"\nport = {web_port}\n[retrain]\nenabled = false\n'
    )
    xrayd = Path(sys.executable).parent / "xrayd"
    proc = subprocess.Popen(
        [str(xrayd), "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_ready(port, "XRAYD", proc)
        # steady state: the model loaded (a node receives for days; its start-up is not timed)
        wait_model_loaded(web_port, proc)
        if processes > 1:
            wait_listener_processes(proc, processes - 1)
        os.sync()
        elapsed = send(files, port, "XRAYD", associations)
        with sqlite3.connect(data / "xrayd.sqlite3") as db:
            (indexed,) = db.execute("select count(*) from instances").fetchone()
        assert indexed == len(files), f"xrayd indexed {indexed} of {len(files)}"
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install dcmtk")
    files = make_images(args.count, args.megabytes)
    size = sum(f.stat().st_size for f in files) / len(files) / 1e6
    cores = os.cpu_count() or 1
    ceiling = disk_ceiling(size / 1.048576, len(files))
    print(f"{len(files)} DX images of {size:.1f} MB each; {cores} CPUs")
    print(
        f"this disk, write + fdatasync of {len(files)} such files one after another:"
        f" {ceiling:.1f} images/s"
    )
    print(
        f"{'associations':>12} {'storescp img/s':>15} {'xrayd x1 img/s':>15} {'ratio':>6}"
        f" {f'xrayd x{cores} img/s':>15} {'ratio':>6}"
    )
    for associations in (1, 4):
        ref, one, many = [], [], []
        for _ in range(args.rounds):
            ref.append(len(files) / run_storescp(files, associations))
            one.append(len(files) / run_xrayd(files, associations, 1))
            many.append(len(files) / run_xrayd(files, associations, cores))
        r, o, m = (statistics.median(x) for x in (ref, one, many))
        print(f"{associations:>12} {r:>15.1f} {o:>15.1f} {o / r:>6.2f} {m:>15.1f} {m / r:>6.2f}")
    print("xrayd xN: node.listener_processes = N (processes sharing the port)")


if __name__ == "__main__":
    main()
