"""The analysis job on a real node: predictions stored, objects built once, deliveries queued,
a re-run after a crash finds the committed revision and adds nothing."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.synthetic import generate_case, to_dicom
from storage import jobs
from storage.analyses import analyses_of, objects_of
from storage.jobs import ClaimedJob
from storage.outbox import list_deliveries
from xrayd.runtime.node import Node, open_storage, seed_registry
from xrayd.workers.analysis import CompletionTimer, Worker
from xrayd.workers.base import Wakeup

from helpers import make_settings
from node_helpers import run_next_job, store_and_wait_for_release
from validators import validate_every_object


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Any:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        study={"quiet_seconds": 0, "release_ends_wait": True},
        destinations=[
            {
                "name": "pacs",
                "ae_title": "PACS",
                "host": "127.0.0.1",
                "port": 9,
                "send": ["sr", "sc", "pdf", "gsps", "kos"],
            }
        ],
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    n = Node(settings, storage)  # the real StudyAnalyser; no delivery workers are started
    seed_registry(settings, storage.sessions)
    n.scp.start()
    yield n
    n.scp.stop(timeout=5)
    storage.engine.dispose()


def _colour_image(study_uid: str) -> Any:
    ds = to_dicom(generate_case(7, 128), study_uid=study_uid, patient_id="SYNTH-A")
    rgb = np.repeat(np.asarray(ds.pixel_array, dtype=np.uint8)[..., None], 3, axis=2)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = rgb.tobytes()
    return ds


def test_a_study_is_analysed_once_and_a_rerun_changes_nothing(node: Any) -> None:
    study_uid = str(generate_uid())
    views = [
        to_dicom(
            generate_case(30 + i, 384, fracture=True),
            study_uid=study_uid,
            patient_id="SYNTH-A",
            instance_number=i + 1,
        )
        for i in range(2)
    ]
    # the release queues the study: wait until the node has handled it, not only sent it
    assert store_and_wait_for_release(node, [*views, _colour_image(study_uid)]) == [0] * 3
    stop = threading.Event()
    timer = CompletionTimer(
        node.storage.sessions,
        node.settings.study,
        node.settings.jobs,
        node.sink.clock,
        stop,
        Wakeup(),
    )
    worker = Worker(
        0, node.storage.sessions, node.analyser, node.settings.jobs, node.sink.clock, stop, Wakeup()
    )
    timer.tick()
    assert worker.run_once()
    [job] = jobs.list_jobs(node.storage.sessions, "done")
    sessions = node.storage.sessions

    [analysis] = analyses_of(sessions, job.study_id)
    detail = analysis.detail
    assert len(detail["images"]) == 2 and detail["decision"] in ("present", "indeterminate")
    assert detail["model"]["name"] == "xrayd-phantom" and len(detail["model"]["sha256"]) == 64
    [skipped] = detail["not_analysed"]
    assert skipped["reason"].endswith("[modality]")  # an OT colour capture is no radiograph
    for image in detail["images"]:
        assert 0.0 <= image["fracture_probability"] <= 1.0 and image["count"] in ("0", "1", "2+")

    objects = objects_of(sessions, job.study_id)
    kinds = sorted(o.kind for o in objects)
    # The study is flagged (its decision is that of its most suspicious image): a KOS lists it.
    assert kinds == ["gsps", "gsps", "heatmap", "heatmap", "kos", "pdf", "report", "sc", "sc", "sr"]
    spool = node.storage.spool
    first = {o.sop_instance_uid: spool.read_bytes(o.file_path or "") for o in objects}
    deliveries = list_deliveries(sessions)
    assert sorted(d.kind for d in deliveries) == ["gsps", "gsps", "kos", "pdf", "sc", "sc", "sr"]
    validate_every_object(spool, objects)

    # A crash after the commit: the job runs again and finds everything in place.
    node.analyser.analyse(ClaimedJob(job.job_id, job.study_id, study_uid, "analysis", 2))
    again = objects_of(sessions, job.study_id)
    assert [(o.result_id, o.sop_instance_uid) for o in again] == [
        (o.result_id, o.sop_instance_uid) for o in objects
    ]
    assert {o.sop_instance_uid: spool.read_bytes(o.file_path or "") for o in again} == first
    assert len(analyses_of(sessions, job.study_id)) == 1
    assert len(list_deliveries(sessions)) == len(deliveries)


def _coloured_pixels(sc: Any, image_rows: int) -> int:
    """Pixels of the image part of a burned-in SC (below the banner) that are not grey."""
    rgb = np.asarray(sc.pixel_array)[-image_rows:].astype(np.int16)
    return int(np.count_nonzero((rgb[..., 0] != rgb[..., 1]) | (rgb[..., 1] != rgb[..., 2])))


def test_the_burned_in_capture_of_an_absent_result_shows_no_finding(node: Any) -> None:
    """An "absent" image's Secondary Capture carries no heatmap tint and no box (they read as a
    finding in a viewer); a "present" one keeps them."""
    import pydicom

    study_uid = str(generate_uid())
    views = [
        to_dicom(
            generate_case(seed, 384, fracture=fracture),
            study_uid=study_uid,
            patient_id="SYNTH-B",
            instance_number=n,
        )
        for n, (seed, fracture) in enumerate([(41, False), (30, True)], 1)
    ]
    assert store_and_wait_for_release(node, views) == [0, 0]
    run_next_job(node)
    [job] = jobs.list_jobs(node.storage.sessions, "done")
    [analysis] = analyses_of(node.storage.sessions, job.study_id)
    decisions = [image["decision"] for image in analysis.detail["images"]]
    assert decisions[0] == "absent" and decisions[1] in ("present", "indeterminate")
    spool = node.storage.spool
    captures = {}
    for obj in objects_of(node.storage.sessions, job.study_id):
        if obj.kind == "sc":
            ds = pydicom.dcmread(spool.absolute(obj.file_path or ""))
            captures[int(ds.InstanceNumber)] = ds
    assert _coloured_pixels(captures[1], 384) == 0
    assert _coloured_pixels(captures[2], 384) > 0


def test_a_presentation_state_or_kos_that_cannot_be_built_costs_only_itself(
    node: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A header the GSPS or KOS builder refuses (a vendor quirk highdicom rejects) must not
    cost the study its SR, captures and report: those are stored and queued, the failures are
    listed in the analysis and logged without identifiers."""
    import xrayd.pipeline.analyse as analysis

    def refuse(*_: Any, **__: Any) -> Any:
        raise ValueError("Attribute 'PixelSpacing' has an unexpected value")

    monkeypatch.setattr(analysis, "build_gsps", refuse)
    monkeypatch.setattr(analysis, "build_kos", refuse)
    study_uid = str(generate_uid())
    views = [
        to_dicom(generate_case(30 + n, 384, fracture=True), study_uid=study_uid, instance_number=n)
        for n in (1, 2)
    ]
    assert store_and_wait_for_release(node, views) == [0, 0]
    caplog.set_level("WARNING", logger="xrayd.pipeline.analyse")
    run_next_job(node)
    [job] = jobs.list_jobs(node.storage.sessions, "done")
    [record] = analyses_of(node.storage.sessions, job.study_id)
    kinds = sorted(o.kind for o in objects_of(node.storage.sessions, job.study_id))
    assert kinds == ["heatmap", "heatmap", "pdf", "report", "sc", "sc", "sr"]
    not_built = record.detail["objects_not_built"]
    assert [(n["kind"], n["image"]) for n in not_built] == [("gsps", 1), ("gsps", 2), ("kos", None)]
    assert all(n["reason"].startswith("ValueError") for n in not_built)
    assert sorted(d.kind for d in list_deliveries(node.storage.sessions)) == [
        "pdf",
        "sc",
        "sc",
        "sr",
    ]
    assert any("gsps of image 1 not built" in r.getMessage() for r in caplog.records)
    assert not any(study_uid in r.getMessage() for r in caplog.records)
