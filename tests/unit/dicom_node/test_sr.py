"""The fracture result as a Comprehensive 3D SR (TID 1500): content, header, tools' verdicts."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node import codes
from dicom_node.findings import Algorithm, Box, ImageFinding, NotAnalysed, StudyFindings
from dicom_node.sr import SRBuildError, build_sr, sr_bytes

from dicom_factory import CR, DX, make_radiograph
from helpers import need_tool

STUDY = "1.2.826.0.1.3680043.8.498.4242"
PRESENT_UID = STUDY + ".1.1"
ABSENT_UID = STUDY + ".2.1"
SKIPPED_UID = STUDY + ".1.2"
SR_UID = STUDY + ".900.1"
SR_SERIES = STUDY + ".900"
WHEN = datetime(2021, 3, 4, 5, 6, 7)
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PAT-SECRET-42"
SKIP_REASON = "lateral view: not supported by the model"
PREDECESSOR = (STUDY, STUDY + ".899", "1.2.840.10008.5.1.4.1.1.88.34", STUDY + ".899.1")
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
#: The boxes of the present image, and the closed POLYLINE each must become (column, row pairs).
BOXES = (Box(row0=10, col0=20, row1=50, col1=60), Box(row0=100.5, col0=30, row1=150, col1=90.25))
POLYLINES = (
    [20, 10, 60, 10, 60, 50, 20, 50, 20, 10],
    [30, 100.5, 90.25, 100.5, 90.25, 150, 30, 150, 30, 100.5],
)


def header(sop_class: str, sop_uid: str, series_uid: str, rows: int, cols: int) -> Dataset:
    ds = make_radiograph(
        sop_class=sop_class,
        rows=rows,
        cols=cols,
        study_uid=STUDY,
        series_uid=series_uid,
        sop_uid=sop_uid,
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
    )
    del ds.PixelData  # the builder reads headers only
    ds.ReferringPhysicianName = "Ref^Erring"
    ds.Manufacturer = "ACME Radiography"
    return ds


@pytest.fixture
def sources() -> list[Dataset]:
    return [
        header(DX, PRESENT_UID, STUDY + ".1", 200, 160),
        header(CR, ABSENT_UID, STUDY + ".2", 256, 256),
        header(DX, SKIPPED_UID, STUDY + ".1", 200, 160),
    ]


ALGORITHM = Algorithm(
    name="xrayd-densenet121",
    version="2.1.0",
    weights_sha256="ab" * 32,
    parameters={"threshold_present": "0.62", "threshold_absent": "0.30"},
)


def make_findings(images: tuple[ImageFinding, ...] | None = None) -> StudyFindings:
    if images is None:
        images = (
            ImageFinding(
                sop_instance_uid=PRESENT_UID,
                sop_class_uid=DX,
                series_instance_uid=STUDY + ".1",
                rows=200,
                columns=160,
                decision="present",
                fracture_probability=0.91,
                count="2+",
                body_part="hand",
                body_part_probability=0.97,
                hardware=True,
                hardware_probability=0.81,
                boxes=BOXES,
            ),
            ImageFinding(
                sop_instance_uid=ABSENT_UID,
                sop_class_uid=CR,
                series_instance_uid=STUDY + ".2",
                rows=256,
                columns=256,
                decision="absent",
                fracture_probability=0.04,
                count="0",
                body_part="wrist",
                body_part_probability=0.88,
                hardware=False,
                hardware_probability=0.02,
            ),
        )
    decision = "present" if images else "indeterminate"
    return StudyFindings(
        study_instance_uid=STUDY,
        decision=decision,
        fracture_probability=0.91 if images else 0.5,
        images=images,
        not_analysed=(NotAnalysed(SKIPPED_UID, DX, SKIP_REASON),),
        algorithm=ALGORITHM,
    )


def build(sources: list[Dataset], findings: StudyFindings | None = None, **kw: Any) -> Dataset:
    args: dict[str, Any] = {
        "sop_instance_uid": SR_UID,
        "series_instance_uid": SR_SERIES,
        "series_number": 900,
        "instance_number": 1,
        "content_datetime": WHEN,
        "software_version": "0.9.1",
    }
    args.update(kw)
    return build_sr(findings or make_findings(), sources, **args)


# --- walking the content tree ----------------------------------------------------------------


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def code_value(item: Dataset) -> tuple[str, str]:
    code = item.ConceptCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def key(code: Any) -> tuple[str, str]:
    return code.scheme_designator, code.value


def children(item: Dataset, value_type: str | None = None, name: Any = None) -> list[Dataset]:
    return [
        c
        for c in item.get("ContentSequence", [])
        if (value_type is None or c.ValueType == value_type)
        and (name is None or concept(c) == key(name))
    ]


def one(item: Dataset, value_type: str, name: Any) -> Dataset:
    found = children(item, value_type, name)
    assert len(found) == 1, (value_type, name, len(found))
    return found[0]


def walk(item: Dataset) -> Iterator[Dataset]:
    for child in item.get("ContentSequence", []):
        yield child
        yield from walk(child)


def number(item: Dataset) -> float:
    return float(item.MeasuredValueSequence[0].NumericValue)


def probability_of(group: Dataset, modifier_name: Any, modifier_value: Any) -> Dataset:
    """The NUM Probability in ``group`` post-coordinated with modifier_name = modifier_value."""
    found = [
        num
        for num in children(group, "NUM", codes.PROBABILITY)
        if any(code_value(m) == key(modifier_value) for m in children(num, "CODE", modifier_name))
    ]
    assert len(found) == 1, (modifier_name, modifier_value, len(found))
    num = found[0]
    unit = num.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    assert (unit.CodingSchemeDesignator, unit.CodeValue) == key(codes.NO_UNITS)
    return num


def groups_by_image(sr: Dataset) -> dict[str, Dataset]:
    measurements = one(sr, "CONTAINER", Code("126010", "DCM", "Imaging Measurements"))
    groups = children(measurements, "CONTAINER", Code("125007", "DCM", "Measurement Group"))
    by_image: dict[str, Dataset] = {}
    for group in groups:
        (source,) = children(group, "IMAGE")
        by_image[source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID] = group
    assert len(by_image) == len(groups)
    return by_image


# --- the tools' verdicts ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["first", "amended", "nothing analysed"])
def test_dciodvfy_reports_no_errors(tmp_path: Path, sources: list[Dataset], variant: str) -> None:
    tool = need_tool("dciodvfy")
    if variant == "first":
        sr = build(sources)
    elif variant == "amended":
        sr = build(sources, predecessor=[PREDECESSOR], instance_number=2)
    else:
        sr = build(sources, make_findings(images=()))
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(sr))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert result.returncode == 0, report
    assert "Comprehensive3DSR" in report, report  # it did recognise the IOD
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert not errors, report
    # The only warnings accepted: dciodvfy does not know xrayd's (declared) private scheme.
    warnings = [line for line in report.splitlines() if line.startswith("Warning")]
    unexpected = [line for line in warnings if "<99XRAYD>" not in line]
    assert not unexpected, report


def test_dsrdump_reads_it_back(tmp_path: Path, sources: list[Dataset]) -> None:
    tool = need_tool("dsrdump")
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(build(sources)))
    result = subprocess.run(
        [tool, "+Pu", "+Pl", "+Pc", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr and "Warning" not in result.stderr, result.stderr
    out = result.stdout
    assert "Comprehensive 3D SR Document" in out
    assert "UNVERIFIED" in out and "COMPLETE" in out
    for meaning in (
        "Imaging Measurement Report",
        "Measurement Group",
        '"Fracture of bone"',
        '"Present"',
        '"Absent"',
        '"Orthopedic device"',
        '"Probability"',
        '"Two or more fractures"',
        '"No fracture"',
        '"Hand"',
        '"Wrist joint"',
        '"Approximate spatial location"',
        '"Qualitative Evaluations"',
        '"Number of images not analysed"',
        '"Algorithm Name")="xrayd-densenet121"',
        '"threshold_present=0.62"',
    ):
        assert meaning in out, meaning
    assert "POLYLINE,20/10,60/10,60/50,20/50,20/10" in out  # column/row, closed
    for uid in (PRESENT_UID, ABSENT_UID):
        assert f'"{uid}"' in out, uid
    assert f"{SKIPPED_UID}: {SKIP_REASON}" in out


# --- header ----------------------------------------------------------------------------------


def test_in_the_source_study_in_a_new_series(sources: list[Dataset]) -> None:
    sr = build(sources)
    source = sources[0]
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
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.SeriesInstanceUID == SR_SERIES
    assert sr.SeriesInstanceUID not in {ds.SeriesInstanceUID for ds in sources}
    assert (sr.SOPClassUID, sr.SOPInstanceUID, sr.Modality) == (COMPREHENSIVE_3D_SR, SR_UID, "SR")
    assert (sr.SeriesNumber, sr.InstanceNumber) == (900, 1)
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.PreliminaryFlag == "PRELIMINARY"
    assert "VerifyingObserverSequence" not in sr
    assert (str(sr.ContentDate), str(sr.ContentTime)) == ("20210304", "050607")
    assert (str(sr.InstanceCreationDate), str(sr.InstanceCreationTime)) == ("20210304", "050607")
    # Every source instance is evidence of the current procedure, grouped by series.
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence
    assert evidence.StudyInstanceUID == STUDY
    listed = {
        (series.SeriesInstanceUID, ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID)
        for series in evidence.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert listed == {(ds.SeriesInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID) for ds in sources}


def test_contributing_equipment_names_xrayd_and_the_model(sources: list[Dataset]) -> None:
    sr = build(sources)
    processing = [
        item
        for item in sr.ContributingEquipmentSequence
        if key_of(item.PurposeOfReferenceCodeSequence[0]) == key(codes.PROCESSING_EQUIPMENT)
    ]
    by_model = {item.ManufacturerModelName: item for item in processing}
    assert by_model["xrayd"].Manufacturer == "xrayd project"
    assert by_model["xrayd"].SoftwareVersions == "0.9.1"
    model = by_model["xrayd-densenet121"]
    assert model.SoftwareVersions == "2.1.0"
    assert ALGORITHM.weights_sha256 in model.ContributionDescription
    # highdicom names itself too; its wall-clock stamp is pinned to content_datetime as well.
    assert set(by_model) == {"xrayd", "xrayd-densenet121", "highdicom"}
    assert {str(item.ContributionDateTime) for item in processing} == {"20210304050607"}
    assert sr.Manufacturer == "xrayd project"
    assert list(sr.SoftwareVersions) == ["0.9.1", "xrayd-densenet121 2.1.0"]
    (scheme,) = sr.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99XRAYD"
    assert scheme.CodingSchemeName and scheme.CodingSchemeResponsibleOrganization


def key_of(code: Dataset) -> tuple[str, str]:
    return code.CodingSchemeDesignator, code.CodeValue


def test_predecessor_only_when_amending(sources: list[Dataset]) -> None:
    first = build(sources)
    assert "PredecessorDocumentsSequence" not in first
    amended = build(sources, predecessor=[PREDECESSOR], sop_instance_uid=SR_UID + ".2")
    (study,) = amended.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (ref,) = series.ReferencedSOPSequence
    assert (
        study.StudyInstanceUID,
        series.SeriesInstanceUID,
        ref.ReferencedSOPClassUID,
        ref.ReferencedSOPInstanceUID,
    ) == PREDECESSOR
    # The same image keeps its Tracking UID across the amendment.
    tracking = Code("112040", "DCM", "Tracking Unique Identifier")
    for uid, group in groups_by_image(first).items():
        again = groups_by_image(amended)[uid]
        assert one(group, "UIDREF", tracking).UID == one(again, "UIDREF", tracking).UID


# --- content tree ----------------------------------------------------------------------------


def test_root_observer_is_the_device(sources: list[Dataset]) -> None:
    sr = build(sources)
    assert concept(sr) == key(codes.MEASUREMENT_REPORT)
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    observer_type = one(sr, "CODE", Code("121005", "DCM", "Observer Type"))
    assert code_value(observer_type) == key(codes.DEVICE_OBSERVER)
    texts = {concept(t)[1]: t.TextValue for t in children(sr, "TEXT")}
    assert texts["121013"] == "xrayd"  # Device Observer Name
    assert texts["121014"] == "xrayd project"  # Manufacturer
    assert texts["121015"] == "xrayd-densenet121"  # Model Name = the algorithm
    assert one(sr, "UIDREF", Code("121012", "DCM", "Device Observer UID")).UID


def test_one_measurement_group_per_analysed_image(sources: list[Dataset]) -> None:
    groups = groups_by_image(build(sources))
    assert set(groups) == {PRESENT_UID, ABSENT_UID}  # the skipped image has no group
    expected = {
        PRESENT_UID: (codes.PRESENT, codes.COUNT_CLASSES["2+"], codes.PRESENT, "hand"),
        ABSENT_UID: (codes.ABSENT, codes.COUNT_CLASSES["0"], codes.ABSENT, "wrist"),
    }
    probabilities = {PRESENT_UID: (0.91, 0.81, 0.97), ABSENT_UID: (0.04, 0.02, 0.88)}
    for uid, group in groups.items():
        presence, count, hardware, part = expected[uid]
        body_part = codes.BODY_PARTS[part]
        assert group.ContentTemplateSequence[0].TemplateIdentifier == "1501"
        assert code_value(one(group, "CODE", codes.FINDING)) == key(codes.FRACTURE)
        assert code_value(one(group, "CODE", codes.FRACTURE)) == key(presence)
        assert code_value(one(group, "CODE", codes.NUMBER_OF_FRACTURES)) == key(count)
        assert code_value(one(group, "CODE", codes.ORTHOPEDIC_DEVICE)) == key(hardware)
        assert code_value(one(group, "CODE", codes.FINDING_SITE)) == key(body_part)
        fracture, device, region = probabilities[uid]
        assert number(probability_of(group, codes.FINDING, codes.FRACTURE)) == fracture
        assert number(probability_of(group, codes.FINDING, codes.ORTHOPEDIC_DEVICE)) == device
        assert number(probability_of(group, codes.TARGET_REGION, body_part)) == region
        algorithm = {concept(t)[1]: t.TextValue for t in children(group, "TEXT")}
        assert algorithm["111001"] == ALGORITHM.name and algorithm["111003"] == ALGORITHM.version
        parameters = [t.TextValue for t in children(group, "TEXT") if concept(t)[1] == "111002"]
        assert parameters == [
            "threshold_absent=0.30",
            "threshold_present=0.62",
            f"weights_sha256={ALGORITHM.weights_sha256}",
        ]


def test_boxes_are_closed_polylines_on_their_image(sources: list[Dataset]) -> None:
    groups = groups_by_image(build(sources))
    fracture = probability_of(groups[PRESENT_UID], codes.FINDING, codes.FRACTURE)
    scoords = children(fracture, "SCOORD")
    assert [s.RelationshipType for s in scoords] == ["INFERRED FROM"] * 2
    assert [s.GraphicType for s in scoords] == ["POLYLINE"] * 2
    assert [[float(v) for v in s.GraphicData] for s in scoords] == [
        [float(v) for v in line] for line in POLYLINES
    ]
    for scoord in scoords:
        assert concept(scoord) == key(codes.APPROXIMATE_SPATIAL_LOCATION)
        (image,) = children(scoord, "IMAGE")
        assert image.RelationshipType == "SELECTED FROM"
        ref = image.ReferencedSOPSequence[0]
        assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (DX, PRESENT_UID)
    # The absent image has no box anywhere in its group.
    assert not [i for i in walk(groups[ABSENT_UID]) if i.ValueType == "SCOORD"]


def test_study_summary(sources: list[Dataset]) -> None:
    summary = one(build(sources), "CONTAINER", codes.QUALITATIVE_EVALUATIONS)
    assert code_value(one(summary, "CODE", codes.FRACTURE)) == key(codes.PRESENT)
    assert number(probability_of(summary, codes.FINDING, codes.FRACTURE)) == 0.91
    analysed = one(summary, "NUM", codes.IMAGES_ANALYSED)
    assert analysed.MeasuredValueSequence[0].NumericValue == "2"
    assert number(one(summary, "NUM", codes.IMAGES_NOT_ANALYSED)) == 1
    (why,) = children(summary, "TEXT", codes.IMAGE_NOT_ANALYSED)
    assert why.TextValue == f"{SKIPPED_UID}: {SKIP_REASON}"


def test_nothing_analysed_still_reports_the_study(sources: list[Dataset]) -> None:
    sr = build(sources, make_findings(images=()))
    assert not children(sr, "CONTAINER", Code("126010", "DCM", "Imaging Measurements"))
    summary = one(sr, "CONTAINER", codes.QUALITATIVE_EVALUATIONS)
    assert code_value(one(summary, "CODE", codes.FRACTURE)) == key(codes.UNDETERMINED)
    assert number(one(summary, "NUM", codes.IMAGES_ANALYSED)) == 0


# --- determinism, files, privacy --------------------------------------------------------------


def test_identical_inputs_give_identical_bytes(sources: list[Dataset]) -> None:
    first = sr_bytes(build(sources, predecessor=[PREDECESSOR]))
    again = sr_bytes(build(sources, predecessor=[PREDECESSOR]))
    assert first == again
    later = sr_bytes(
        build(sources, predecessor=[PREDECESSOR], content_datetime=WHEN.replace(hour=6))
    )
    assert later != first  # the time does come from content_datetime
    assert first[128:132] == b"DICM" and first[:128] == b"\x00" * 128
    back = dcmread(BytesIO(first))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.file_meta.MediaStorageSOPInstanceUID == SR_UID
    assert back.file_meta.MediaStorageSOPClassUID == COMPREHENSIVE_3D_SR


def test_sr_bytes_leaves_the_data_set_alone(sources: list[Dataset]) -> None:
    sr = build(sources)
    meta = sr.file_meta
    sr_bytes(sr)
    assert sr.file_meta is meta


def test_non_ascii_patient_name_survives(sources: list[Dataset]) -> None:
    latin1 = sources[0]
    latin1.SpecificCharacterSet = "ISO_IR 100"
    latin1.PatientName = "Müller^Jörg"
    buffer = BytesIO()
    latin1.save_as(buffer, enforce_file_format=True)
    sources[0] = dcmread(BytesIO(buffer.getvalue()))  # as received: raw ISO 8859-1 bytes
    back = dcmread(BytesIO(sr_bytes(build(sources))))
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.PatientName == "Müller^Jörg"


def test_no_patient_identity_in_logs(
    sources: list[Dataset], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    build(sources, predecessor=[PREDECESSOR])
    assert caplog.records, "expected at least the builder's debug record"
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
            assert secret not in text, record.name


# --- refusing inconsistent inputs -------------------------------------------------------------


def test_rejects_inconsistent_inputs(sources: list[Dataset]) -> None:
    findings = make_findings()
    other_study = header(DX, "1.2.3.4.5", "1.2.3.4", 64, 64)
    other_study.StudyInstanceUID = "1.2.3"
    with pytest.raises(SRBuildError, match="not in study"):
        build([*sources, other_study])
    with pytest.raises(SRBuildError, match="no source header"):
        build(sources[1:])
    with pytest.raises(SRBuildError, match="no source headers"):
        build([])
    outside = replace(findings.images[0], boxes=(Box(0, 0, 201, 10),))
    with pytest.raises(SRBuildError, match="outside"):
        build(sources, make_findings(images=(outside, findings.images[1])))
    odd = replace(findings.images[1], hardware_probability=1.5)
    with pytest.raises(SRBuildError, match="probability"):
        build(sources, make_findings(images=(findings.images[0], odd)))
    unknown = replace(findings.images[1], body_part="skull")
    with pytest.raises(ValueError, match="unknown body part"):
        build(sources, make_findings(images=(findings.images[0], unknown)))
    with pytest.raises(SRBuildError, match="predecessor"):
        build(sources, predecessor=[(STUDY, "", "1.2", "1.2.3")])


def test_codes_module_is_self_consistent() -> None:
    assert set(codes.PRESENCE) == {"present", "absent", "indeterminate"}
    assert set(codes.COUNT_CLASSES) == {"0", "1", "2+"}
    assert codes.body_part_code("leg") == Code("30021000", "SCT", "Lower leg")
    private = [
        codes.NUMBER_OF_FRACTURES,
        *codes.COUNT_CLASSES.values(),
        codes.IMAGES_ANALYSED,
        codes.IMAGES_NOT_ANALYSED,
        codes.IMAGE_NOT_ANALYSED,
    ]
    assert all(code.scheme_designator == codes.PRIVATE_SCHEME for code in private)
    assert codes.PRIVATE_SCHEME.startswith("99") and len(codes.PRIVATE_SCHEME) <= 16
    assert all(len(code.value) <= 16 for code in private)  # SH
