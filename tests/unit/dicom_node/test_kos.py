"""The images the AI flags as a Key Object Selection document (TID 2010)."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node import codes
from dicom_node.findings import Algorithm, ImageFinding, NotAnalysed, StudyFindings
from dicom_node.kos import (
    KEY_OBJECT_SELECTION_DOCUMENT,
    SERIES_DESCRIPTION,
    KOSBuildError,
    build_kos,
)
from dicom_node.secondary_capture import dataset_bytes
from dicom_node.sr import device_observer_uid
from dicom_node.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

from dicom_factory import CR, DX, make_radiograph
from helpers import need, need_tool

STUDY = "1.2.826.0.1.3680043.8.498.4444"
PRESENT_UID = STUDY + ".1.1"
ABSENT_UID = STUDY + ".2.1"
UNSURE_UID = STUDY + ".3.1"
SKIPPED_UID = STUDY + ".1.2"
KOS_UID = STUDY + ".902.1"
KOS_SERIES = STUDY + ".902"
WHEN = datetime(2021, 3, 4, 5, 6, 7)
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PAT-SECRET-42"
ALGORITHM = Algorithm(
    name="xrayd-densenet121",
    version="2.1.0",
    weights_sha256="ab" * 32,
    parameters={"threshold_present": "0.62"},
)
DESCRIPTION = (
    "AI fracture triage (xrayd-densenet121 2.1.0) flagged 2 of 3 analysed image(s): "
    "fracture present in 1, indeterminate in 1. Research software, not for clinical use."
)
PIXELMED = Path("/usr/share/java/pixelmed.jar")


def header(sop_class: str, sop_uid: str, series_uid: str) -> Dataset:
    ds = make_radiograph(
        sop_class=sop_class,
        rows=64,
        cols=64,
        study_uid=STUDY,
        series_uid=series_uid,
        sop_uid=sop_uid,
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
    )
    del ds.PixelData  # the builder reads headers only
    ds.ReferringPhysicianName = "Ref^Erring"
    return ds


@pytest.fixture
def sources() -> list[Dataset]:
    return make_sources()


def make_sources() -> list[Dataset]:
    return [
        header(DX, PRESENT_UID, STUDY + ".1"),
        header(CR, ABSENT_UID, STUDY + ".2"),
        header(DX, UNSURE_UID, STUDY + ".3"),
        header(DX, SKIPPED_UID, STUDY + ".1"),
    ]


def image(uid: str, sop_class: str, series: str, decision: str) -> ImageFinding:
    return ImageFinding(
        sop_instance_uid=uid,
        sop_class_uid=sop_class,
        series_instance_uid=series,
        rows=64,
        columns=64,
        decision=decision,  # type: ignore[arg-type]
        fracture_probability={"present": 0.91, "absent": 0.04, "indeterminate": 0.5}[decision],
        count="0" if decision == "absent" else "1",
        body_part="hand",
        body_part_probability=0.9,
        hardware=False,
        hardware_probability=0.1,
    )


def make_findings(
    decisions: tuple[str, str, str] = ("present", "absent", "indeterminate"),
) -> StudyFindings:
    present, absent, unsure = decisions
    return StudyFindings(
        study_instance_uid=STUDY,
        decision="present",
        fracture_probability=0.91,
        images=(
            image(PRESENT_UID, DX, STUDY + ".1", present),
            image(ABSENT_UID, CR, STUDY + ".2", absent),
            image(UNSURE_UID, DX, STUDY + ".3", unsure),
        ),
        not_analysed=(NotAnalysed(SKIPPED_UID, DX, "lateral view"),),
        algorithm=ALGORITHM,
    )


def build(
    sources: list[Dataset], findings: StudyFindings | None = None, **kw: Any
) -> Dataset | None:
    args: dict[str, Any] = {
        "sop_instance_uid": KOS_UID,
        "series_instance_uid": KOS_SERIES,
        "series_number": 902,
        "instance_number": 1,
        "content_datetime": WHEN,
        "algorithm": ALGORITHM,
        "software_version": "0.9.1",
    }
    args.update(kw)
    return build_kos(findings or make_findings(), sources, **args)


def built(sources: list[Dataset], **kw: Any) -> Dataset:
    kos = build(sources, **kw)
    assert kos is not None
    return kos


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def key(code: Any) -> tuple[str, str]:
    return code.scheme_designator, code.value


def items(kos: Dataset, value_type: str) -> list[Dataset]:
    return [item for item in kos.ContentSequence if item.ValueType == value_type]


# --- content ---------------------------------------------------------------------------------


def test_lists_the_flagged_images_in_analysis_order(sources: list[Dataset]) -> None:
    kos = built(sources)
    assert (kos.SOPClassUID, kos.SOPInstanceUID, kos.Modality) == (
        KEY_OBJECT_SELECTION_DOCUMENT,
        KOS_UID,
        "KO",
    )
    assert kos.ValueType == "CONTAINER"
    assert concept(kos) == key(codes.KEY_OBJECT_TITLE) == ("DCM", "113000")
    assert kos.ContentTemplateSequence[0].TemplateIdentifier == "2010"
    selected = items(kos, "IMAGE")
    assert [i.RelationshipType for i in selected] == ["CONTAINS"] * 2
    assert [
        (
            i.ReferencedSOPSequence[0].ReferencedSOPClassUID,
            i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
        )
        for i in selected
    ] == [(DX, PRESENT_UID), (DX, UNSURE_UID)]
    assert not [i for i in selected if "ConceptNameCodeSequence" in i]  # TID 2010 row 8


def test_evidence_is_exactly_the_flagged_images(sources: list[Dataset]) -> None:
    (study,) = built(sources).CurrentRequestedProcedureEvidenceSequence
    assert study.StudyInstanceUID == STUDY
    listed = {
        (series.SeriesInstanceUID, ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID)
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert listed == {(STUDY + ".1", DX, PRESENT_UID), (STUDY + ".3", DX, UNSURE_UID)}


def test_observer_is_the_srs_device(sources: list[Dataset]) -> None:
    kos = built(sources)
    context = [i for i in kos.ContentSequence if i.RelationshipType == "HAS OBS CONTEXT"]
    by_concept = {concept(i)[1]: i for i in context}
    observer_type = by_concept["121005"].ConceptCodeSequence[0]
    assert (observer_type.CodingSchemeDesignator, observer_type.CodeValue) == key(
        codes.DEVICE_OBSERVER
    )
    assert device_observer_uid("xrayd", "xrayd project", ALGORITHM) == by_concept["121012"].UID
    assert by_concept["121013"].TextValue == "xrayd"
    assert by_concept["121014"].TextValue == "xrayd project"
    assert by_concept["121015"].TextValue == ALGORITHM.name


def test_key_object_description(sources: list[Dataset]) -> None:
    (text,) = items(built(sources), "TEXT")[-1:]
    assert concept(text) == key(codes.KEY_OBJECT_DESCRIPTION) == ("DCM", "113012")
    assert text.RelationshipType == "CONTAINS"
    assert text.TextValue == DESCRIPTION


def test_only_indeterminate_is_flagged_too(sources: list[Dataset]) -> None:
    kos = built(sources, findings=make_findings(("absent", "absent", "indeterminate")))
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items(kos, "IMAGE")] == [
        UNSURE_UID
    ]
    assert "flagged 1 of 3 analysed image(s): fracture present in 0, indeterminate in 1." in (
        items(kos, "TEXT")[-1].TextValue
    )


def test_no_kos_when_nothing_is_flagged(sources: list[Dataset]) -> None:
    assert build(sources, make_findings(("absent", "absent", "absent"))) is None
    nothing = StudyFindings(STUDY, "indeterminate", 0.5, (), (), ALGORITHM)
    assert build(sources, nothing) is None


def test_header_in_the_source_study_in_a_new_series(sources: list[Dataset]) -> None:
    kos = built(sources)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        assert str(kos[keyword].value) == str(sources[0][keyword].value), keyword
    assert (kos.SeriesInstanceUID, kos.SeriesNumber, kos.InstanceNumber) == (KOS_SERIES, 902, 1)
    assert kos.SeriesDescription == SERIES_DESCRIPTION
    assert kos.SpecificCharacterSet == "ISO_IR 192"
    for keyword in ("ContentDate", "InstanceCreationDate", "SeriesDate"):
        assert str(kos[keyword].value) == "20210304", keyword
    for keyword in ("ContentTime", "InstanceCreationTime", "SeriesTime"):
        assert str(kos[keyword].value) == "050607", keyword
    by_model = {item.ManufacturerModelName: item for item in kos.ContributingEquipmentSequence}
    assert set(by_model) == {"xrayd", "xrayd-densenet121", "highdicom"}
    assert {str(item.ContributionDateTime) for item in by_model.values()} == {"20210304050607"}
    assert list(kos.SoftwareVersions) == ["0.9.1", "xrayd-densenet121 2.1.0"]
    assert (kos.Manufacturer, kos.ManufacturerModelName) == ("xrayd project", "xrayd")


# --- determinism, privacy, bad input -----------------------------------------------------------


def test_identical_inputs_give_identical_bytes(sources: list[Dataset]) -> None:
    first = dataset_bytes(built(sources))
    assert dataset_bytes(built(make_sources())) == first
    assert dataset_bytes(built(sources, content_datetime=WHEN.replace(hour=6))) != first
    back = dcmread(BytesIO(first))
    assert back.file_meta.MediaStorageSOPClassUID == KEY_OBJECT_SELECTION_DOCUMENT
    assert back.file_meta.MediaStorageSOPInstanceUID == KOS_UID
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.file_meta.ImplementationVersionName == implementation_version_name()


def test_sources_are_not_modified(sources: list[Dataset]) -> None:
    del sources[0].AccessionNumber  # type 2 missing in the source: empty in the KOS
    before = [dict(ds) for ds in sources]
    kos = built(sources)
    assert kos.AccessionNumber in ("", None)
    assert [dict(ds) for ds in sources] == before
    assert "AccessionNumber" not in sources[0]


def test_non_ascii_patient_name_survives(sources: list[Dataset]) -> None:
    latin1 = sources[0]
    latin1.SpecificCharacterSet = "ISO_IR 100"
    latin1.PatientName = "Müller^Jörg"
    buffer = BytesIO()
    latin1.save_as(buffer, enforce_file_format=True)
    sources[0] = dcmread(BytesIO(buffer.getvalue()))  # as received: raw ISO 8859-1 bytes
    back = dcmread(BytesIO(dataset_bytes(built(sources))))
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.PatientName == "Müller^Jörg"


def test_no_patient_identity_in_logs(
    sources: list[Dataset], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    built(sources)
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
            assert secret not in text, record.name


def test_rejects_inconsistent_inputs(sources: list[Dataset]) -> None:
    other = header(DX, "1.2.3.4.5", "1.2.3.4")
    other.StudyInstanceUID = "1.2.3"
    with pytest.raises(KOSBuildError, match="not in study"):
        build([*sources, other])
    with pytest.raises(KOSBuildError, match="no source header"):
        build(sources[1:])
    wrong_class = [header(CR, PRESENT_UID, STUDY + ".1"), *sources[1:]]
    with pytest.raises(KOSBuildError, match="SOP class"):
        build(wrong_class)


# --- the tools' verdicts ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def kos_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kos") / "kos.dcm"
    path.write_bytes(dataset_bytes(built(make_sources())))
    return path


@pytest.fixture(scope="module")
def pixelmed_report(kos_file: Path) -> Iterator[str]:
    """PixelMed's SR validator on the KOS, run once (it takes seconds)."""
    need(PIXELMED.is_file(), f"{PIXELMED} is missing (apt-get install pixelmed-apps)")
    need(shutil.which("java") is not None, "java is missing (apt-get install default-jre-headless)")
    result = subprocess.run(
        [
            "java",
            "-Djdk.xml.xpathExprOpLimit=0",
            "-Djdk.xml.xpathExprGrpLimit=0",
            "-Djdk.xml.xpathTotalOpLimit=0",
            "-cp",
            str(PIXELMED),
            "com.pixelmed.validate.DicomSRValidator",
            str(kos_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    yield result.stdout + result.stderr


def test_dciodvfy_reports_no_errors_and_no_warnings(kos_file: Path) -> None:
    tool = need_tool("dciodvfy")
    result = subprocess.run([tool, str(kos_file)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert result.returncode == 0, report
    assert "KeyObjectSelectionDocument" in report, report  # it did recognise the IOD
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    assert not [line for line in report.splitlines() if line.startswith("Warning")], report


def test_pixelmed_validates_the_template(pixelmed_report: str) -> None:
    report = pixelmed_report
    assert "Found KeyObjectSelectionDocument IOD" in report, report
    assert "Found Root Template TID_2010 (KeyObjectSelection)" in report, report
    assert "Root Template Validation Complete" in report, report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    assert not [line for line in report.splitlines() if line.startswith("Warning")], report


def test_dsrdump_reads_it_back(kos_file: Path) -> None:
    tool = need_tool("dsrdump")
    result = subprocess.run(
        [tool, "+Pl", "+Pc", str(kos_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("E:")]
    out = result.stdout
    assert "Key Object Selection Document" in out
    assert '<CONTAINER:(113000,DCM,"Of Interest")=CONTINUOUS>' in out
    assert '(113012,DCM,"Key Object Description")' in out
    assert out.count("<contains IMAGE:") == 2
