"""The whole mission: a modality (DCMTK storescu) sends a study, xrayd analyses it with the demo
model, and Orthanc (the PACS) ends up holding the SR, the Secondary Captures and the PDF."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from models.synthetic_files import write_synthetic_studies

from helpers import make_settings, need_tool
from orthanc import Orthanc, free_port, running_orthanc

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


class Deliveries:
    """Counts sent deliveries (the worker's report hook) so the test waits on an event."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.failed: list[Any] = []
        self.lock = threading.Condition()

    def __call__(self, report: Any) -> None:
        with self.lock:
            (self.sent if report.outcome.ok else self.failed).append(report)
            self.lock.notify_all()

    def wait_for_failures(self, n: int, timeout: float = 180) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.failed) >= n, timeout), self.sent

    def wait_for(self, n: int, timeout: float = 180) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.sent) >= n, timeout), (
                f"{len(self.sent)} of {n} deliveries sent; failures: "
                f"{[r.outcome for r in self.failed]}"
            )


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


def _node(
    tmp_path: Path,
    pacs: Orthanc | None,
    deliveries: Deliveries,
    *,
    port: int | None = None,
    ae_title: str | None = None,
) -> Any:
    from xrayd.runtime.node import Node, open_storage

    settings = make_settings(
        tmp_path / "data",
        node={"callers": [{"ae_title": "MODALITY"}]},
        model={"runtime": "eager"},
        delivery={"retry_base_seconds": 0.5, "retry_max_seconds": 1.0, "poll_seconds": 1.0},
        destinations=[
            {
                "name": "pacs",
                "ae_title": ae_title or (pacs.ae_title if pacs else "ORTHANC"),
                "host": "127.0.0.1",
                "port": port or (pacs.dicom_port if pacs else 0),
                "send": ["sr", "sc", "pdf"],
            }
        ],
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    node = Node(settings, storage, on_delivery=deliveries)
    node.start()
    return node


def _storescu(port: int, files: list[Path]) -> None:
    tool = need_tool("storescu")
    done = subprocess.run(
        [tool, "-aet", "MODALITY", "-aec", "XRAYD", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _dciodvfy_errors(data: bytes, tmp_path: Path, name: str) -> list[str]:
    tool = need_tool("dciodvfy")
    path = tmp_path / name
    path.write_bytes(data)
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def test_a_study_sent_by_a_modality_comes_back_to_the_pacs_as_sr_sc_and_pdf(
    tmp_path: Path, pacs: Orthanc
) -> None:
    files = write_synthetic_studies(tmp_path / "in", 1, seed=21, size=384)
    study_uid = files[0].study_uid
    sources = {f.path.name: pydicom.dcmread(f.path, stop_before_pixels=True) for f in files}
    source_uids = {str(ds.SOPInstanceUID) for ds in sources.values()}
    deliveries = Deliveries()
    node = _node(tmp_path, pacs, deliveries)
    try:
        _storescu(node.scp.port, [f.path for f in files])
        expected = 1 + len(files) + 1  # SR, one SC per view, Encapsulated PDF
        deliveries.wait_for(expected)
        stored = pacs.instances()
        classes = sorted(i["SOPClassUID"] for i in stored)
        assert classes == sorted([SR_CLASS, PDF_CLASS] + [SC_CLASS] * len(files))
        assert {i["StudyInstanceUID"] for i in stored} == {study_uid}
        assert {i["PatientID"] for i in stored} == {files[0].patient_id}
        assert not {i["SeriesInstanceUID"] for i in stored} & {
            str(ds.SeriesInstanceUID) for ds in sources.values()
        }
        ids = pacs.get("/instances")
        by_class = {pacs.get(f"/instances/{i}/simplified-tags")["SOPClassUID"]: i for i in ids}
        for cls, i in (
            (SR_CLASS, by_class[SR_CLASS]),
            (SC_CLASS, by_class[SC_CLASS]),
            (PDF_CLASS, by_class[PDF_CLASS]),
        ):
            data = pacs.get_bytes(f"/instances/{i}/file")
            assert _dciodvfy_errors(data, tmp_path, f"{cls}.dcm") == []
        # The SR: readable by DCMTK, the finding code, the source images referenced.
        dsrdump = need_tool("dsrdump")
        out = subprocess.run(
            [dsrdump, "+Pu", "+Pl", "+Pc", str(tmp_path / f"{SR_CLASS}.dcm")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "Fracture of bone" in out.stdout and "Imaging Measurement Report" in out.stdout
        assert all(uid in out.stdout for uid in source_uids)
        sr = pydicom.dcmread(tmp_path / f"{SR_CLASS}.dcm")
        assert sr.VerificationFlag == "UNVERIFIED"
        # The Secondary Capture renders (Orthanc decodes it), burned in and not blank.
        sc = pydicom.dcmread(tmp_path / f"{SC_CLASS}.dcm")
        assert sc.BurnedInAnnotation == "YES"
        png = pacs.get_bytes(f"/instances/{by_class[SC_CLASS]}/preview")
        (tmp_path / "sc.png").write_bytes(png)
        assert np.asarray(Image.open(tmp_path / "sc.png")).std() > 10
        # The PDF renders to a non-blank page.
        pdf = pydicom.dcmread(tmp_path / f"{PDF_CLASS}.dcm")
        (tmp_path / "report.pdf").write_bytes(bytes(pdf.EncapsulatedDocument).rstrip(b"\0"))
        pdftoppm = need_tool("pdftoppm")
        subprocess.run(
            [
                pdftoppm,
                "-png",
                "-r",
                "40",
                "-f",
                "1",
                "-l",
                "1",
                str(tmp_path / "report.pdf"),
                str(tmp_path / "page"),
            ],
            check=True,
            timeout=60,
        )
        page = next(tmp_path.glob("page*.png"))
        assert np.asarray(Image.open(page).convert("L")).std() > 5

        # A late view of the same study: an amended set whose SR names its predecessor.
        late = write_synthetic_studies(tmp_path / "late", 1, seed=21, size=384)
        extra = tmp_path / "late-view.dcm"
        ds = pydicom.dcmread(late[0].path)
        ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["late view"])
        ds.InstanceNumber = 99
        ds.save_as(extra)
        _storescu(node.scp.port, [extra])
        deliveries.wait_for(expected + 1 + len(files) + 1 + 1)
        srs = [pacs.get(f"/instances/{i}/simplified-tags") for i in pacs.get("/instances")]
        srs = [t for t in srs if t["SOPClassUID"] == SR_CLASS]
        assert len(srs) == 2
        newest = max(srs, key=lambda t: t["SOPInstanceUID"] != str(sr.SOPInstanceUID))
        ids = [
            i
            for i in pacs.get("/instances")
            if pacs.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"]
            == newest["SOPInstanceUID"]
        ]
        amended = tmp_path / "amended.dcm"
        amended.write_bytes(pacs.get_bytes(f"/instances/{ids[0]}/file"))
        a = pydicom.dcmread(amended)
        referenced = [
            item.ReferencedSOPInstanceUID
            for study in a.PredecessorDocumentsSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        ]
        assert referenced == [str(sr.SOPInstanceUID)]
        assert not deliveries.failed

        # `xrayd report` writes the study's latest (amended) PDF for referrers.
        cfg = tmp_path / "xrayd.toml"
        cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
        out_pdf = tmp_path / "referrer.pdf"
        xrayd = str(Path(sys.executable).parent / "xrayd")
        done = subprocess.run(
            [xrayd, "report", study_uid, "--out", str(out_pdf), "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "amended" in done.stdout and out_pdf.read_bytes().startswith(b"%PDF")
        missing = subprocess.run(
            [xrayd, "report", "1.2.3.4", "--out", str(out_pdf), "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert missing.returncode == 1 and "no study 1.2.3.4" in missing.stderr
    finally:
        node.stop(timeout=10)


def test_results_wait_while_the_pacs_is_down_and_arrive_once_when_it_is_back(
    tmp_path: Path,
) -> None:
    port = free_port()
    files = write_synthetic_studies(tmp_path / "in", 1, seed=8, size=256)
    deliveries = Deliveries()
    node = _node(tmp_path, None, deliveries, port=port)
    try:
        _storescu(node.scp.port, [f.path for f in files])
        deliveries.wait_for_failures(1)  # the PACS is down: a transient failure, retried
        assert all(r.outcome.transient for r in deliveries.failed)
        with running_orthanc(tmp_path / "orthanc", dicom_port=port) as pacs:
            deliveries.wait_for(2 + len(files))
            stored = pacs.instances()
            uids = [i["SOPInstanceUID"] for i in stored]
            assert len(uids) == len(set(uids)) == 2 + len(files)
            sent = {r.claim.sop_instance_uid for r in deliveries.sent}
            assert sent == set(uids)
            failed = {r.claim.sop_instance_uid for r in deliveries.failed}
            assert failed <= set(uids)  # the resends carried the same SOP Instance UIDs
    finally:
        node.stop(timeout=10)


def test_a_permanent_refusal_becomes_a_visible_dead_letter(tmp_path: Path, pacs: Orthanc) -> None:
    from storage.outbox import list_deliveries

    files = write_synthetic_studies(tmp_path / "in", 1, seed=9, size=256)
    deliveries = Deliveries()
    # Orthanc checks the called AE title: a wrong one is a permanent association rejection.
    node = _node(tmp_path, pacs, deliveries, ae_title="NOT-THE-PACS")
    try:
        _storescu(node.scp.port, [f.path for f in files])
        deliveries.wait_for_failures(2 + len(files))
        assert not any(r.outcome.transient for r in deliveries.failed)
        dead = list_deliveries(node.storage.sessions, "dead")
        assert len(dead) == 2 + len(files) and all(d.last_error for d in dead)
        assert pacs.instances() == []
        cfg = tmp_path / "xrayd.toml"
        cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
        xrayd = str(Path(sys.executable).parent / "xrayd")
        listed = subprocess.run(
            [xrayd, "outbox", "list", "--state", "dead", "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0 and listed.stdout.count("dead") >= 2 + len(files)
    finally:
        node.stop(timeout=10)
