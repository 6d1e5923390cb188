"""The radiologist-verified SR on a real node: a study is received and analysed with the demo
model, a review is saved (an ``overrides`` row), and ``VerifiedSRWriter`` writes an SR that
supersedes the AI SR and queues it to every destination taking "sr", once."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from models.synthetic import generate_case, to_dicom
from storage import jobs
from storage.analyses import ObjectRow, analyses_of, objects_of, study_id_of
from storage.outbox import list_deliveries
from storage.schema import Override, Result
from xrayd.pipeline.verified_sr import VerifiedSRError, VerifiedSRWriter
from xrayd.runtime.node import Node, open_storage, seed_registry

from helpers import make_settings, need_tool
from node_helpers import run_next_job, store_and_wait_for_release

PATIENT_ID = "SYNTH-REVIEW-17"
LABEL = {"fracture": "absent", "count": "0", "body_part": "wrist", "hardware": False}
REVIEWED_AT = datetime(2026, 1, 2, 8, 30, 5, tzinfo=UTC)


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Any:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        study={"quiet_seconds": 0, "release_ends_wait": True},
        destinations=[
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9, "send": ["sr"]},
            {
                "name": "viewer",
                "ae_title": "VIEWER",
                "host": "127.0.0.1",
                "port": 9,
                "send": ["sr", "sc"],
            },
            {
                "name": "images",
                "ae_title": "IMAGES",
                "host": "127.0.0.1",
                "port": 9,
                "send": ["sc"],
            },
        ],
        review={"send_verified_sr": True, "organization": "Synthetic General Radiology"},
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    n = Node(settings, storage)  # the real StudyAnalyser; no delivery workers are started
    seed_registry(settings, storage.sessions)
    n.scp.start()
    yield n
    n.scp.stop(timeout=5)
    storage.engine.dispose()


def _analyse(node: Any, datasets: list[Dataset]) -> int:
    """Send ``datasets`` (one study) to the node and run its analysis job; the study id."""
    # the release queues the study: wait until the node has handled it, not only sent it
    assert store_and_wait_for_release(node, datasets) == [0] * len(datasets)
    sessions = node.storage.sessions
    run_next_job(node)
    study_id = study_id_of(sessions, str(datasets[0].StudyInstanceUID))
    assert study_id is not None
    assert any(j.study_id == study_id for j in jobs.list_jobs(sessions, "done"))
    return study_id


def _radiographs(study_uid: str) -> list[Dataset]:
    return [
        to_dicom(
            generate_case(40 + i, 256, fracture=True),
            study_uid=study_uid,
            patient_id=PATIENT_ID,
            instance_number=i + 1,
        )
        for i in range(2)
    ]


def _colour_capture(study_uid: str) -> Dataset:
    """An OT colour capture: stored, but not analysable (no radiograph)."""
    ds = to_dicom(generate_case(7, 128), study_uid=study_uid, patient_id=PATIENT_ID)
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


def _override(node: Any, study_id: int, analysis_id: int | None, **changes: Any) -> int:
    values: dict[str, Any] = {
        "study_id": study_id,
        "user_name": "jdoe",
        "ai_label": {"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False},
        "radiologist_label": LABEL,
        "comment": "Nutrient canal, no fracture.",
        "created_at": REVIEWED_AT,
        "result_id": analysis_id,
        "agree": False,
    }
    values.update(changes)
    with node.storage.sessions.begin() as session:
        row = Override(**values)
        session.add(row)
        session.flush()
        return int(row.id)


def _sr_rows(node: Any, study_id: int) -> list[ObjectRow]:
    return [o for o in objects_of(node.storage.sessions, study_id) if o.kind == "sr"]


def _dataset(node: Any, row: ObjectRow) -> Dataset:
    return dcmread(BytesIO(node.storage.spool.read_bytes(row.file_path or "")))


def _deliveries(node: Any, result_id: int) -> list[str]:
    return sorted(
        d.destination_name
        for d in list_deliveries(node.storage.sessions)
        if d.result_id == result_id
    )


@pytest.fixture
def analysed(node: Any) -> tuple[int, int, ObjectRow]:
    """(study id, analysis id, AI SR row) of an analysed two-image study plus a capture."""
    study_uid = str(generate_uid())
    study_id = _analyse(node, [*_radiographs(study_uid), _colour_capture(study_uid)])
    [analysis] = analyses_of(node.storage.sessions, study_id)
    [ai] = _sr_rows(node, study_id)
    return study_id, analysis.result_id, ai


def test_a_review_gives_a_verified_sr_that_supersedes_the_ai_sr(
    node: Any, analysed: tuple[int, int, ObjectRow], tmp_path: Path
) -> None:
    study_id, analysis_id, ai = analysed
    woken: list[int] = []
    writer = VerifiedSRWriter(
        node.storage.sessions,
        node.storage.spool,
        node.settings,
        on_queued=lambda: woken.append(1),
    )
    override_id = _override(node, study_id, analysis_id)

    result_id = writer.write(override_id)

    assert result_id is not None and woken == [1]
    [_, verified] = _sr_rows(node, study_id)
    assert verified.result_id == result_id
    assert verified.predecessor_result_id == ai.result_id
    assert verified.detail["verified_by"] == "jdoe"
    assert verified.detail["override_id"] == override_id
    assert verified.job_id == ai.job_id
    assert (verified.file_path or "").startswith("results/")
    # One delivery per destination whose `send` has "sr"; none to the images-only one.
    assert _deliveries(node, result_id) == ["pacs", "viewer"]

    ds, ai_ds = _dataset(node, verified), _dataset(node, ai)
    assert ds.SOPInstanceUID == verified.sop_instance_uid
    assert (ds.VerificationFlag, ds.CompletionFlag) == ("VERIFIED", "COMPLETE")
    (observer,) = ds.VerifyingObserverSequence
    assert observer.VerifyingObserverName == "jdoe^"
    assert observer.VerifyingOrganization == "Synthetic General Radiology"
    assert str(observer.VerificationDateTime) == "20260102083005+0000"
    (predecessor,) = ds.PredecessorDocumentsSequence
    ref = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == ai.sop_instance_uid
    assert predecessor.ReferencedSeriesSequence[0].SeriesInstanceUID == ai_ds.SeriesInstanceUID
    # The AI content is rebuilt as it was; the radiologist's container comes last.
    assert list(ds.ContentSequence)[:-1] == list(ai_ds.ContentSequence)
    assert ds.CurrentRequestedProcedureEvidenceSequence == (
        ai_ds.CurrentRequestedProcedureEvidenceSequence
    )
    assert (ds.PatientID, ds.StudyInstanceUID) == (ai_ds.PatientID, ai_ds.StudyInstanceUID)
    review = ds.ContentSequence[-1]
    assert review.ConceptNameCodeSequence[0].CodeValue == "121070"  # Findings
    coded = {
        item.ConceptNameCodeSequence[0].CodeMeaning: item.ConceptCodeSequence[0].CodeMeaning
        for item in review.ContentSequence
        if item.ValueType == "CODE"
    }
    assert coded == {
        "Observer Type": "Person",
        "Fracture of bone": "Absent",
        "Number of fractures": "No fracture",
        "Finding Site": "Wrist joint",
        "Orthopedic device": "Absent",
        "Agreement with prior findings": "No",
    }
    texts = {
        item.ConceptNameCodeSequence[0].CodeValue: item.TextValue
        for item in review.ContentSequence
        if item.ValueType == "TEXT"
    }
    assert texts["121106"] == "Nutrient canal, no fracture."  # Comment
    assert texts["128774"] == "jdoe"  # Person Observer's Login Name

    tool = need_tool("dciodvfy")
    path = tmp_path / "verified.dcm"
    path.write_bytes(node.storage.spool.read_bytes(verified.file_path or ""))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert result.returncode == 0 and "Comprehensive3DSR" in report, report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report


def test_writing_twice_changes_nothing(node: Any, analysed: tuple[int, int, ObjectRow]) -> None:
    study_id, analysis_id, _ = analysed
    woken: list[int] = []
    writer = VerifiedSRWriter(
        node.storage.sessions,
        node.storage.spool,
        node.settings,
        on_queued=lambda: woken.append(1),
    )
    override_id = _override(node, study_id, analysis_id)
    first = writer.write(override_id)
    rows = _sr_rows(node, study_id)
    deliveries = list_deliveries(node.storage.sessions)
    data = node.storage.spool.read_bytes(rows[-1].file_path or "")

    assert writer.write(override_id) == first
    assert _sr_rows(node, study_id) == rows
    assert list_deliveries(node.storage.sessions) == deliveries
    assert node.storage.spool.read_bytes(rows[-1].file_path or "") == data
    assert woken == [1]


def test_a_second_review_also_supersedes_the_ai_sr(
    node: Any, analysed: tuple[int, int, ObjectRow]
) -> None:
    study_id, analysis_id, ai = analysed
    writer = VerifiedSRWriter(node.storage.sessions, node.storage.spool, node.settings)
    first = writer.write(_override(node, study_id, analysis_id))
    second = writer.write(
        _override(
            node,
            study_id,
            analysis_id,
            user_name="asmith",
            agree=True,
            comment=None,
            radiologist_label={**LABEL, "fracture": "present", "count": "1"},
        )
    )
    assert first is not None and second is not None and first != second
    [_, one, two] = _sr_rows(node, study_id)
    assert (one.result_id, two.result_id) == (first, second)
    assert two.predecessor_result_id == ai.result_id  # the AI SR, not the first review's SR
    ds = _dataset(node, two)
    assert ds.VerifyingObserverSequence[0].VerifyingObserverName == "asmith^"
    names = [i.ConceptNameCodeSequence[0].CodeValue for i in ds.ContentSequence[-1].ContentSequence]
    assert "121106" not in names  # no comment, no Comment item
    assert _deliveries(node, second) == ["pacs", "viewer"]


def test_no_ai_sr_no_verified_sr(node: Any, caplog: pytest.LogCaptureFixture) -> None:
    study_uid = str(generate_uid())
    study_id = _analyse(node, [_colour_capture(study_uid)])  # nothing analysable: no objects
    [analysis] = analyses_of(node.storage.sessions, study_id)
    deliveries = list_deliveries(node.storage.sessions)
    writer = VerifiedSRWriter(node.storage.sessions, node.storage.spool, node.settings)
    caplog.set_level("INFO", logger="xrayd.pipeline.verified_sr")

    assert writer.write(_override(node, study_id, analysis.result_id)) is None
    assert writer.write(_override(node, study_id, None)) is None

    assert _sr_rows(node, study_id) == []
    assert list_deliveries(node.storage.sessions) == deliveries
    messages = [r.getMessage() for r in caplog.records if r.name == "xrayd.pipeline.verified_sr"]
    assert messages and all("no AI SR" in m for m in messages)
    for record in caplog.records:
        assert PATIENT_ID not in record.getMessage() + repr(record.__dict__)


def test_an_unknown_override_is_an_error(node: Any) -> None:
    writer = VerifiedSRWriter(node.storage.sessions, node.storage.spool, node.settings)
    with pytest.raises(VerifiedSRError, match="does not exist"):
        writer.write(987654)


def test_an_unusable_review_is_an_error_and_records_nothing(
    node: Any, analysed: tuple[int, int, ObjectRow]
) -> None:
    study_id, analysis_id, _ = analysed
    writer = VerifiedSRWriter(node.storage.sessions, node.storage.spool, node.settings)
    rows, deliveries = _sr_rows(node, study_id), list_deliveries(node.storage.sessions)
    bad: list[dict[str, Any]] = [
        {"user_name": "j\\doe"},  # not a PN component
        {"user_name": "Doe^John"},
        {"radiologist_label": {**LABEL, "body_part": "skull"}},  # no code for it
        {"radiologist_label": {**LABEL, "fracture": "maybe"}},
        {"radiologist_label": {**LABEL, "hardware": "no"}},
        {"radiologist_label": {"fracture": "absent"}},
    ]
    for changes in bad:
        with pytest.raises(VerifiedSRError, match="override"):
            writer.write(_override(node, study_id, analysis_id, **changes))
    assert _sr_rows(node, study_id) == rows
    assert list_deliveries(node.storage.sessions) == deliveries


def test_the_verified_sr_is_built_from_stored_data_not_from_the_ai_sr(
    node: Any, analysed: tuple[int, int, ObjectRow]
) -> None:
    """Data flows one way: with the AI SR's file gone, the verified SR is the same."""
    study_id, analysis_id, ai = analysed
    ai_ds = _dataset(node, ai)
    node.storage.spool.absolute(ai.file_path or "").unlink()
    writer = VerifiedSRWriter(node.storage.sessions, node.storage.spool, node.settings)

    result_id = writer.write(_override(node, study_id, analysis_id))

    [_, verified] = _sr_rows(node, study_id)
    assert verified.result_id == result_id and verified.predecessor_result_id == ai.result_id
    ds = _dataset(node, verified)
    assert list(ds.ContentSequence)[:-1] == list(ai_ds.ContentSequence)
    (predecessor,) = ds.PredecessorDocumentsSequence
    assert predecessor.ReferencedSeriesSequence[0].SeriesInstanceUID == ai_ds.SeriesInstanceUID
    ref = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (
        ai_ds.SOPClassUID,
        ai.sop_instance_uid,
    )


def test_a_legacy_analysis_takes_the_model_from_its_ai_sr(
    node: Any, analysed: tuple[int, int, ObjectRow]
) -> None:
    """An analysis stored before the model's parameters were (issue 16): the legacy path reads
    them from the AI SR file, and only there; without that file no verified SR is made."""
    study_id, analysis_id, ai = analysed
    with node.storage.sessions.begin() as session:
        row = session.get(Result, analysis_id)
        assert row is not None
        model = {k: v for k, v in row.detail["model"].items() if k != "parameters"}
        row.detail = {**row.detail, "model": model}
    writer = VerifiedSRWriter(node.storage.sessions, node.storage.spool, node.settings)

    assert writer.write(_override(node, study_id, analysis_id)) is not None

    [_, verified] = _sr_rows(node, study_id)
    ai_ds = _dataset(node, ai)
    assert list(_dataset(node, verified).ContentSequence)[:-1] == list(ai_ds.ContentSequence)
    node.storage.spool.absolute(ai.file_path or "").unlink()
    with pytest.raises(VerifiedSRError, match="cannot read the AI SR"):
        writer.write(_override(node, study_id, analysis_id, user_name="asmith"))
    assert len(_sr_rows(node, study_id)) == 2
