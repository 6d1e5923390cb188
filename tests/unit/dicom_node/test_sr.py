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
from dicom_node.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

from dicom_factory import CR, DX, make_radiograph
from helpers import need_tool
from validators import pixelmed_sr_report

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


def region_groups(sr: Dataset) -> list[Dataset]:
    """The measurement groups of Imaging Measurements (none if the container is absent)."""
    found = children(sr, "CONTAINER", Code("126010", "DCM", "Imaging Measurements"))
    if not found:
        return []
    (measurements,) = found
    return children(measurements, "CONTAINER", Code("125007", "DCM", "Measurement Group"))


def region_image(group: Dataset) -> str:
    """The SOP Instance UID the group's Image Region is SELECTED FROM."""
    (scoord,) = children(group, "SCOORD", codes.IMAGE_REGION)
    (image,) = children(scoord, "IMAGE")
    assert image.RelationshipType == "SELECTED FROM"
    return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)


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


#: PixelMed's template tables (2022) lack two kinds of content item that TID 1410 groups carry:
#: the qualitative evaluation (Fracture of bone = Present | Undetermined) and the TEXT Comment
#: viewers use as the label. TID 1410 is extensible; these are the only warnings accepted.
ACCEPTED_PIXELMED_WARNINGS = (
    '/CONTAINER (125007,DCM,"Measurement Group")/CODE (125605004,SCT,"Fracture of bone"): '
    "Content Item not in template",
    '/CONTAINER (125007,DCM,"Measurement Group")/TEXT (121106,DCM,"Comment"): '
    "Content Item not in template",
)


@pytest.mark.parametrize("variant", ["boxes", "no box", "nothing analysed"])
def test_pixelmed_template_validator_reports_no_errors(
    tmp_path: Path, sources: list[Dataset], variant: str
) -> None:
    findings = make_findings()
    if variant == "no box":
        findings = make_findings(images=(findings.images[1],))
    elif variant == "nothing analysed":
        findings = make_findings(images=())
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(build(sources, findings, predecessor=[PREDECESSOR])))
    report = pixelmed_sr_report(path)
    assert "Found Root Template TID_1500 (MeasurementReport)" in report.output, report.output
    assert not report.errors, report.output
    unexpected = [w for w in report.warnings if not w.endswith(ACCEPTED_PIXELMED_WARNINGS)]
    assert not unexpected, report.output
    if variant == "boxes":
        assert len(report.warnings) == 4, report.output  # two per box


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
        '"Probability"',
        '"Hand"',
        '"Image Region"',
        '"Comment")="AI: Fracture of bone PRESENT (p=0.91), region 1 of 2"',
        '"Qualitative Evaluations"',
        '"AI result of image"',
        '"Algorithm Name")="xrayd-densenet121"',
        '"threshold_present=0.62"',
    ):
        assert meaning in out, meaning
    assert "POLYLINE,20/10,60/10,60/50,20/50,20/10" in out  # column/row, closed
    assert f'"{PRESENT_UID}"' in out  # the image the boxes are selected from
    assert f"{ABSENT_UID}: fracture ABSENT" in out  # the absent image: in the summary only
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
    # Each region keeps its Tracking UID across the amendment.
    tracking = Code("112040", "DCM", "Tracking Unique Identifier")
    before = [one(g, "UIDREF", tracking).UID for g in region_groups(first)]
    after = [one(g, "UIDREF", tracking).UID for g in region_groups(amended)]
    assert len(before) == 2 and before == after


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


def test_one_measurement_group_per_box(sources: list[Dataset]) -> None:
    groups = region_groups(build(sources))
    # Two boxes on the present image; the absent image and the skipped one have no group.
    assert [region_image(g) for g in groups] == [PRESENT_UID, PRESENT_UID]
    tracking = [
        one(g, "UIDREF", Code("112040", "DCM", "Tracking Unique Identifier")) for g in groups
    ]
    assert len({t.UID for t in tracking}) == 2  # viewers merge groups sharing a Tracking UID
    identifiers = [one(g, "TEXT", Code("112039", "DCM", "Tracking Identifier")) for g in groups]
    assert [t.TextValue for t in identifiers] == [
        "AI fracture region 1 of 2",
        "AI fracture region 2 of 2",
    ]
    for n, group in enumerate(groups, 1):
        assert group.ContentTemplateSequence[0].TemplateIdentifier == "1410"
        assert code_value(one(group, "CODE", codes.FINDING)) == key(codes.FRACTURE)
        assert code_value(one(group, "CODE", codes.FRACTURE)) == key(codes.PRESENT)
        assert code_value(one(group, "CODE", codes.FINDING_SITE)) == key(codes.BODY_PARTS["hand"])
        assert number(probability_of(group, codes.FINDING, codes.FRACTURE)) == 0.91
        comment = one(group, "TEXT", codes.COMMENT)
        assert comment.TextValue == f"AI: Fracture of bone PRESENT (p=0.91), region {n} of 2"
        texts = {concept(t)[1]: t.TextValue for t in children(group, "TEXT")}
        assert texts["111001"] == ALGORITHM.name and texts["111003"] == ALGORITHM.version
        assert "122405" not in texts  # no Algorithm Manufacturer: not in the checked template
        parameters = [t.TextValue for t in children(group, "TEXT") if concept(t)[1] == "111002"]
        assert parameters == [
            "threshold_absent=0.30",
            "threshold_present=0.62",
            f"weights_sha256={ALGORITHM.weights_sha256}",
        ]


def test_boxes_are_closed_polylines_on_their_image(sources: list[Dataset]) -> None:
    for group, line in zip(region_groups(build(sources)), POLYLINES, strict=True):
        (scoord,) = children(group, "SCOORD")
        assert concept(scoord) == key(codes.IMAGE_REGION)
        assert scoord.RelationshipType == "CONTAINS"  # top level of the group (TID 1410)
        assert scoord.GraphicType == "POLYLINE"
        assert [float(v) for v in scoord.GraphicData] == [float(v) for v in line]
        (image,) = children(scoord, "IMAGE")
        ref = image.ReferencedSOPSequence[0]
        assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (DX, PRESENT_UID)
        # The probability is INFERRED FROM the same region (OHIF reads a group's coordinates
        # under its NUM when it has one); no other coordinates anywhere in the group.
        num = probability_of(group, codes.FINDING, codes.FRACTURE)
        (inferred,) = children(num, "SCOORD", codes.IMAGE_REGION)
        assert inferred.RelationshipType == "INFERRED FROM"
        assert list(inferred.GraphicData) == list(scoord.GraphicData)
        assert children(inferred, "IMAGE")[0].ReferencedSOPSequence == image.ReferencedSOPSequence
        assert [i for i in walk(group) if i.ValueType == "SCOORD"] == [inferred, scoord]


def test_absent_boxes_are_not_shown_indeterminate_ones_are(sources: list[Dataset]) -> None:
    present, absent = make_findings().images
    box = Box(row0=5, col0=5, row1=40, col1=40)
    absent_with_box = replace(absent, boxes=(box,))
    (whole,) = region_groups(build(sources, make_findings(images=(absent_with_box,))))
    (scoord,) = children(whole, "SCOORD", codes.IMAGE_REGION)
    assert [float(v) for v in scoord.GraphicData] == [0, 0, 256, 0, 256, 256, 0, 256, 0, 0]
    unsure = replace(present, decision="indeterminate", boxes=(box,), fracture_probability=0.8)
    (group,) = region_groups(build(sources, make_findings(images=(unsure, absent_with_box))))
    assert region_image(group) == PRESENT_UID
    assert code_value(one(group, "CODE", codes.FRACTURE)) == key(codes.UNDETERMINED)
    assert one(group, "TEXT", codes.COMMENT).TextValue == (
        "AI: Fracture of bone INDETERMINATE (p=0.80)"
    )


def test_study_summary(sources: list[Dataset]) -> None:
    summary = one(build(sources), "CONTAINER", codes.QUALITATIVE_EVALUATIONS)
    # TID 1500 row 12 allows CODE and TEXT items only.
    assert {item.ValueType for item in children(summary)} == {"CODE", "TEXT"}
    assert code_value(one(summary, "CODE", codes.FRACTURE)) == key(codes.PRESENT)
    assert one(summary, "TEXT", codes.COMMENT).TextValue == (
        "AI: Fracture of bone PRESENT in the study (p=0.91); 2 image(s) analysed, 1 not "
        "analysed. Research software, not for clinical use."
    )
    results = [t.TextValue for t in children(summary, "TEXT", codes.IMAGE_RESULT)]
    assert results == [
        f"{PRESENT_UID}: fracture PRESENT (p=0.91), count 2+, hand (p=0.97), "
        "orthopedic device present (p=0.81), 2 region(s) marked",
        f"{ABSENT_UID}: fracture ABSENT (p=0.04), count 0, wrist (p=0.88), "
        "orthopedic device absent (p=0.02), 0 region(s) marked",
    ]
    (why,) = children(summary, "TEXT", codes.IMAGE_NOT_ANALYSED)
    assert why.TextValue == f"{SKIPPED_UID}: {SKIP_REASON}"


def test_no_box_anywhere_each_image_on_its_whole_area(sources: list[Dataset]) -> None:
    """With nothing to mark, each image's result has the whole image as its region: viewers
    still list the results (OHIF 3.13 fails on an SR without measurements)."""
    present, absent = make_findings().images
    no_box = replace(present, decision="indeterminate", fracture_probability=0.7, boxes=())
    sr = build(sources, make_findings(images=(no_box, absent)))
    groups = region_groups(sr)
    assert [region_image(g) for g in groups] == [PRESENT_UID, ABSENT_UID]
    for group, (rows, cols) in zip(groups, [(200, 160), (256, 256)], strict=True):
        (scoord,) = children(group, "SCOORD", codes.IMAGE_REGION)
        assert [float(v) for v in scoord.GraphicData] == [0, 0, cols, 0, cols, rows, 0, rows, 0, 0]
        identifier = one(group, "TEXT", Code("112039", "DCM", "Tracking Identifier"))
        assert identifier.TextValue == "AI fracture result, whole image"
    comments = [one(g, "TEXT", codes.COMMENT).TextValue for g in groups]
    assert comments == [
        "AI: Fracture of bone INDETERMINATE (p=0.70), whole image",
        "AI: Fracture of bone ABSENT (p=0.04), whole image",
    ]
    assert code_value(one(groups[1], "CODE", codes.FRACTURE)) == key(codes.ABSENT)
    _, absent = make_findings().images
    sr = build(sources, make_findings(images=(absent,)))
    summary = one(sr, "CONTAINER", codes.QUALITATIVE_EVALUATIONS)
    (result,) = children(summary, "TEXT", codes.IMAGE_RESULT)
    assert result.TextValue.startswith(f"{ABSENT_UID}: fracture ABSENT (p=0.04)")


def test_nothing_analysed_still_reports_the_study(sources: list[Dataset]) -> None:
    sr = build(sources, make_findings(images=()))
    assert not children(sr, "CONTAINER", Code("126010", "DCM", "Imaging Measurements"))
    summary = one(sr, "CONTAINER", codes.QUALITATIVE_EVALUATIONS)
    assert code_value(one(summary, "CODE", codes.FRACTURE)) == key(codes.UNDETERMINED)
    assert "0 image(s) analysed, 1 not analysed" in one(summary, "TEXT", codes.COMMENT).TextValue
    assert not children(summary, "TEXT", codes.IMAGE_RESULT)


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
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.file_meta.ImplementationVersionName == implementation_version_name()


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
        codes.IMAGE_RESULT,
        codes.IMAGE_NOT_ANALYSED,
    ]
    assert all(code.scheme_designator == codes.PRIVATE_SCHEME for code in private)
    assert codes.PRIVATE_SCHEME.startswith("99") and len(codes.PRIVATE_SCHEME) <= 16
    assert all(len(code.value) <= 16 for code in private)  # SH


# --- UIDs of xrayd's own ---------------------------------------------------------------------

SITE_ROOT = "1.2.826.0.1.1234567.3"


def uidrefs(item: Dataset) -> list[str]:
    """Every UIDREF value of the content tree (tracking and device observer UIDs)."""
    found = [str(item.UID)] if item.get("ValueType") == "UIDREF" else []
    for child in item.get("ContentSequence", []):
        found += uidrefs(child)
    return found


def test_derived_uids_are_xrayds_own(tmp_path: Path, sources: list[Dataset]) -> None:
    default = uidrefs(build(sources))
    assert len(default) >= 3  # the device observer and one tracking UID per region
    assert all(uid.startswith("2.25.") and len(uid) <= 64 for uid in default), default
    sr = build(sources, uid_root=SITE_ROOT)
    rooted = uidrefs(sr)
    assert len(rooted) == len(default)
    assert all(uid.startswith(SITE_ROOT + ".") and len(uid) <= 64 for uid in rooted), rooted
    assert uidrefs(build(sources, uid_root=SITE_ROOT)) == rooted  # deterministic
    tool = need_tool("dciodvfy")
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(sr))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert result.returncode == 0, report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
