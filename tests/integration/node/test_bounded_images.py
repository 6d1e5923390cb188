"""Bounded resources per data set on a real node (issue 15): a deflate bomb refused at the door,
pixel bombs "not analysed: image too large" as a final outcome, and a 7,000 x 17,000 long-leg
DX that is a real image and is analysed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import func, select

from dicom_node.scu import echo
from dicom_node.statuses import StoreStatus
from storage import jobs
from storage.analyses import analyses_of, objects_of
from storage.schema import Instance
from xrayd.runtime.node import Node, open_storage, seed_registry

from bombs import MIB, deflate_bomb, long_leg_dx, measure, pixel_bomb
from dicom_factory import make_radiograph, save
from helpers import make_settings
from node_helpers import remote, run_next_job, wait_for_listener


def _node(database_url: str, data: Path, **sections: Any) -> Node:
    settings = make_settings(
        data, database_url, study={"quiet_seconds": 0, "release_ends_wait": True}, **sections
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    node = Node(settings, storage)  # the real StudyAnalyser; no workers are started
    seed_registry(settings, storage.sessions)
    node.scp.start()
    return node


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[Node]:
    n = _node(database_url, tmp_path / "data", limits={"max_inflated_mb": 16})
    yield n
    n.scp.stop(timeout=5)
    n.storage.engine.dispose()


def send_files(node: Node, paths: list[Path]) -> list[int]:
    """C-STORE files as they are (pynetdicom sends a file's data set without decoding it);
    returns once the node has handled the association's release (which queues the study)."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for path in paths:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        ae.add_requested_context(meta.SOPClassUID, [meta.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="XRAYD")
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()
    wait_for_listener(node)  # the release is handled on the node's side too (study queued)
    return statuses


def run_the_job(node: Node) -> dict[str, Any]:
    """Make the study's job and run it once; returns the analysis detail."""
    sessions = node.storage.sessions
    worker = run_next_job(node)
    [job] = jobs.list_jobs(sessions, "done")  # done: not failed, not waiting for a retry
    assert not worker.run_once()  # and nothing left to run again
    [analysis] = analyses_of(sessions, job.study_id)
    detail: dict[str, Any] = analysis.detail
    return detail


def test_a_deflate_bomb_is_refused_at_the_door(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """[limits] max_inflated_mb = 16: 64 MiB of zeros (65 KiB on the wire) is answered 0xA700
    and not stored; the same data set with 8 MiB is stored."""
    bomb, fine = tmp_path / "bomb.dcm", tmp_path / "fine.dcm"
    header = deflate_bomb(bomb, 64 * MIB)
    deflate_bomb(fine, 8 * MIB)
    with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
        statuses = send_files(node, [bomb, fine])
    assert statuses == [StoreStatus.OUT_OF_RESOURCES, StoreStatus.SUCCESS]
    [line] = [r.getMessage() for r in caplog.records if "too large" in r.getMessage()]
    assert "0xA700" in line and "inflated data set too large (more than 16 MiB)" in line
    for identifier in (header.PatientID, header.StudyInstanceUID, header.SOPInstanceUID):
        assert identifier not in line
    with node.storage.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
    assert echo(remote(node), "MODALITY") == 0  # the node carries on


def test_pixel_bombs_are_not_analysed_and_the_job_completes(node: Node, tmp_path: Path) -> None:
    """A few bytes of JPEG 2000 declaring 8192 x 8192 or 65535 x 65535 are stored (their
    header is fine) but never decoded: "not analysed: image too large", a final outcome. The
    ordinary image of the same study is analysed."""
    study = str(generate_uid())
    ordinary = make_radiograph(rows=384, cols=320, study_uid=study)
    bombs = [pixel_bomb(8192, 8192, study_uid=study), pixel_bomb(65535, 65535, study_uid=study)]
    files = [save(ds, tmp_path / f"{n}.dcm") for n, ds in enumerate([ordinary, *bombs])]
    assert send_files(node, files) == [0, 0, 0]
    detail = run_the_job(node)
    assert [i["sop_instance_uid"] for i in detail["images"]] == [ordinary.SOPInstanceUID]
    reasons = {n["sop_instance_uid"]: n["reason"] for n in detail["not_analysed"]}
    assert set(reasons) == {b.SOPInstanceUID for b in bombs}
    for reason in reasons.values():
        assert reason.startswith("image too large: ") and reason.endswith("[image_too_large]")
    # its 252 bytes of JPEG 2000 (292 with the item headers) would decode to 128 MiB
    assert "decodes to 128.0 MiB from 292 stored bytes" in reasons[bombs[0].SOPInstanceUID]
    assert "4,294,836,225 pixels" in reasons[bombs[1].SOPInstanceUID]


@pytest.mark.parametrize(
    ("bomb", "kind"), [((8192, 8192), "j2k"), ((65535, 65535), "j2k"), ((65535, 65535), "rle")]
)
def test_the_analysis_path_refuses_a_pixel_bomb_without_a_large_allocation(
    tmp_path: Path, bomb: tuple[int, int], kind: str
) -> None:
    """The analyser's read-and-prepare step (StudyAnalyser._read) on a bomb: the 8192 x 8192
    JPEG 2000 cost ~1.7 GiB and 65535 x 65535 killed the process; now the peak RSS grows by
    less than 200 MiB."""
    pixel_bomb(*bomb, kind).save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    probe = measure(_ANALYSER_SETUP.format(root=str(tmp_path)), "read('bomb.dcm')")
    assert "error" not in probe, probe
    assert probe["result"].startswith("'image too large: "), probe
    assert probe["growth_mib"] < 200, probe


_ANALYSER_SETUP = """
from pathlib import Path
from types import SimpleNamespace
from models.limits import ImageLimits
from models.preprocess import PreprocessParams
from storage.spool import Spool
from xrayd.pipeline.analyse import StudyAnalyser
from dicom_factory import compress_j2k, compress_rle, make_radiograph, save
root = Path({root!r})
analyser = StudyAnalyser(None, Spool(root), lambda: None, limits=ImageLimits())
params = PreprocessParams(input_size=448, stretch_after_voi=True)  # the default bundle's
ready = SimpleNamespace(model=SimpleNamespace(metadata=SimpleNamespace(preprocess=params)))
def read(name):
    source = analyser._read(SimpleNamespace(spool_path=name, sop_instance_uid="2.25.1"), ready)
    return "analysed" if source.prepared is not None else source.reason
# the decoder plugins are loaded before the measurement
save(compress_j2k(make_radiograph()), root / "warm-j2k.dcm")
save(compress_rle(make_radiograph()), root / "warm-rle.dcm")
assert read("warm-j2k.dcm") == read("warm-rle.dcm") == "analysed"
"""


@pytest.fixture(scope="module")
def long_leg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7,000 x 17,000 x 16-bit DX (238 MB), built once for this module."""
    path = tmp_path_factory.mktemp("long-leg") / "long-leg.dcm"
    long_leg_dx(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_long_leg_dx_is_analysed(database_url: str, tmp_path: Path, long_leg: Path) -> None:
    """119 M pixels, 227 MiB decoded: within the default limits, received, analysed, and its
    Secondary Capture built at full resolution."""
    node = _node(database_url, tmp_path / "data")
    try:
        assert send_files(node, [long_leg]) == [0]
        detail = run_the_job(node)
        assert len(detail["images"]) == 1 and detail["not_analysed"] == []
        [job] = jobs.list_jobs(node.storage.sessions, "done")
        kinds = sorted(o.kind for o in objects_of(node.storage.sessions, job.study_id))
        flagged = detail["images"][0]["decision"] != "absent"  # then a KOS lists it
        expected = ["gsps", "heatmap", "pdf", "report", "sc", "sr", *(["kos"] if flagged else [])]
        assert kinds == sorted(expected)
    finally:
        node.scp.stop(timeout=5)
        node.storage.engine.dispose()


@pytest.mark.slow
def test_preparing_a_long_leg_dx_makes_no_full_size_float64_copies(long_leg: Path) -> None:
    """Reading and preparing it (StudyAnalyser._read) once peaked at +3.2 GiB (float64 copies of
    119 M pixels, 952 MB each); now the file (238 MB), its decoded pixels (238 MB), one float32
    image (476 MB) and the uint8 display (119 MB) stay under 1.5 GiB."""
    probe = measure(_ANALYSER_SETUP.format(root=str(long_leg.parent)), f"read({long_leg.name!r})")
    assert probe.get("result") == "'analysed'", probe
    assert probe["growth_mib"] < 1536, probe
