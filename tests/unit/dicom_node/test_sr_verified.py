"""The radiologist-verified SR: ``build_sr(..., review=...)`` supersedes the AI SR."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from dicom_node import codes
from dicom_node.findings import (
    Algorithm,
    Box,
    ImageFinding,
    NotAnalysed,
    RadiologistReview,
    StudyFindings,
)
from dicom_node.sr import SRBuildError, build_sr, sr_bytes

from dicom_factory import DX, make_radiograph
from helpers import need_tool
from validators import pixelmed_sr_report

STUDY = "1.2.826.0.1.3680043.8.498.5151"
IMAGE_UID = STUDY + ".1.1"
SKIPPED_UID = STUDY + ".1.2"
AI_SR = (STUDY, STUDY + ".900", "1.2.840.10008.5.1.4.1.1.88.34", STUDY + ".900.1")
VERIFIED_UID = STUDY + ".904.1"
WHEN = datetime(2021, 3, 5, 9, 31, tzinfo=UTC)
REVIEWED_AT = datetime(2021, 3, 5, 10, 30, 15, tzinfo=timezone(timedelta(hours=1)))
ORGANIZATION = "St Elsewhere Radiology"
COMMENT = "Nutrient canal, not a fracture.\nNo follow-up needed."

ALGORITHM = Algorithm("xrayd-phantom", "1.0.0", "cd" * 32, {"threshold": "0.5000"})
FINDINGS = StudyFindings(
    study_instance_uid=STUDY,
    decision="present",
    fracture_probability=0.87,
    images=(
        ImageFinding(
            sop_instance_uid=IMAGE_UID,
            sop_class_uid=DX,
            series_instance_uid=STUDY + ".1",
            rows=128,
            columns=96,
            decision="present",
            fracture_probability=0.87,
            count="1",
            body_part="wrist",
            body_part_probability=0.9,
            hardware=False,
            hardware_probability=0.05,
            boxes=(Box(row0=10, col0=10, row1=50, col1=40),),
        ),
    ),
    not_analysed=(NotAnalysed(SKIPPED_UID, DX, "lateral view"),),
    algorithm=ALGORITHM,
)


def make_review(**changes: Any) -> RadiologistReview:
    values: dict[str, Any] = {
        "observer_name": "jdoe",
        "organization": ORGANIZATION,
        "when": REVIEWED_AT,
        "agree": False,
        "fracture": "absent",
        "count": "0",
        "body_part": "wrist",
        "hardware": True,
        "comment": COMMENT,
    }
    values.update(changes)
    return RadiologistReview(**values)


@pytest.fixture
def sources() -> list[Dataset]:
    headers = []
    for uid in (IMAGE_UID, SKIPPED_UID):
        ds = make_radiograph(
            sop_class=DX,
            rows=128,
            cols=96,
            study_uid=STUDY,
            series_uid=STUDY + ".1",
            sop_uid=uid,
            patient_id="PAT-7",
            patient_name="Roe^Richard",
        )
        del ds.PixelData
        headers.append(ds)
    return headers


def build(sources: list[Dataset], review: RadiologistReview | None, **kw: Any) -> Dataset:
    args: dict[str, Any] = {
        "sop_instance_uid": VERIFIED_UID if review else AI_SR[3],
        "series_instance_uid": STUDY + (".904" if review else ".900"),
        "series_number": 9904 if review else 9901,
        "instance_number": 1,
        "content_datetime": WHEN,
        "software_version": "xrayd 0.1.0",
        "predecessor": [AI_SR] if review else None,
        "review": review,
    }
    args.update(kw)
    return build_sr(FINDINGS, sources, **args)


# --- walking the content tree ----------------------------------------------------------------


def key(code: Code) -> tuple[str, str]:
    return code.scheme_designator, code.value


def concept(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def code_value(item: Dataset) -> tuple[str, str]:
    code = item.ConceptCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def walk(item: Dataset) -> Iterator[Dataset]:
    for child in item.get("ContentSequence", []):
        yield child
        yield from walk(child)


def children(item: Dataset, value_type: str, name: Code) -> list[Dataset]:
    return [
        c
        for c in item.get("ContentSequence", [])
        if c.ValueType == value_type and concept(c) == key(name)
    ]


def one(item: Dataset, value_type: str, name: Code) -> Dataset:
    found = children(item, value_type, name)
    assert len(found) == 1, (value_type, name, len(found))
    return found[0]


def review_container(sr: Dataset) -> Dataset:
    return one(sr, "CONTAINER", codes.FINDINGS)


# --- header ----------------------------------------------------------------------------------


def test_verified_by_the_radiologist(sources: list[Dataset]) -> None:
    sr = build(sources, make_review())
    assert sr.VerificationFlag == "VERIFIED"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.PreliminaryFlag == "FINAL"
    (observer,) = sr.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "jdoe^"  # family name component only
    assert observer.VerifyingObserverName.family_name == "jdoe"
    assert observer.VerifyingOrganization == ORGANIZATION
    assert str(observer.VerificationDateTime) == "20210305103015+0100"  # the review, not "now"
    assert "radiologist-verified" in sr.SeriesDescription


def test_supersedes_the_ai_sr(sources: list[Dataset]) -> None:
    sr = build(sources, make_review())
    (study,) = sr.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (ref,) = series.ReferencedSOPSequence
    assert (
        study.StudyInstanceUID,
        series.SeriesInstanceUID,
        ref.ReferencedSOPClassUID,
        ref.ReferencedSOPInstanceUID,
    ) == AI_SR


# --- content ---------------------------------------------------------------------------------


def test_the_radiologist_assessment_is_coded_content(sources: list[Dataset]) -> None:
    container = review_container(build(sources, make_review()))
    assert container.RelationshipType == "CONTAINS"
    context = [c for c in container.ContentSequence if c.RelationshipType == "HAS OBS CONTEXT"]
    assert code_value(one(container, "CODE", Code("121005", "DCM", "Observer Type"))) == key(
        codes.PERSON_OBSERVER
    )
    name = one(container, "PNAME", Code("121008", "DCM", "Person Observer Name"))
    assert str(name.PersonName) == "jdoe^"
    texts = {concept(t)[1]: t.TextValue for t in context if t.ValueType == "TEXT"}
    assert texts == {"128774": "jdoe", "121009": ORGANIZATION}  # login name, organization
    expected = {
        key(codes.FRACTURE): key(codes.ABSENT),
        key(codes.NUMBER_OF_FRACTURES): key(codes.COUNT_CLASSES["0"]),
        key(codes.FINDING_SITE): key(codes.BODY_PARTS["wrist"]),
        key(codes.ORTHOPEDIC_DEVICE): key(codes.PRESENT),
        key(codes.AGREEMENT_WITH_PRIOR_FINDINGS): key(codes.NO),
    }
    coded = {
        concept(c): code_value(c)
        for c in container.ContentSequence
        if c.ValueType == "CODE" and c.RelationshipType == "CONTAINS"
    }
    assert coded == expected
    assert one(container, "TEXT", codes.COMMENT).TextValue == COMMENT


def test_agreement_and_the_other_labels_follow_the_review(sources: list[Dataset]) -> None:
    review = make_review(
        agree=True, fracture="present", count="2+", hardware=False, body_part="hand"
    )
    container = review_container(build(sources, review))
    assert code_value(one(container, "CODE", codes.FINDING_SITE)) == key(codes.BODY_PARTS["hand"])
    assert code_value(one(container, "CODE", codes.AGREEMENT_WITH_PRIOR_FINDINGS)) == key(codes.YES)
    assert code_value(one(container, "CODE", codes.FRACTURE)) == key(codes.PRESENT)
    assert code_value(one(container, "CODE", codes.NUMBER_OF_FRACTURES)) == key(
        codes.COUNT_CLASSES["2+"]
    )
    assert code_value(one(container, "CODE", codes.ORTHOPEDIC_DEVICE)) == key(codes.ABSENT)


@pytest.mark.parametrize("part", ["knee", "ankle", "foot", "leg", "other"])
def test_review_body_parts_beyond_the_models(sources: list[Dataset], part: str) -> None:
    container = review_container(build(sources, make_review(body_part=part)))
    site = one(container, "CODE", codes.FINDING_SITE)
    assert code_value(site) == key(codes.REVIEW_BODY_PARTS[part])
    assert code_value(site)[0] == "SCT"


@pytest.mark.parametrize("comment", [None, "", "  \n"])
def test_no_comment_no_text(sources: list[Dataset], comment: str | None) -> None:
    container = review_container(build(sources, make_review(comment=comment)))
    assert not children(container, "TEXT", codes.COMMENT)


def test_the_ai_content_stays_the_devices(sources: list[Dataset]) -> None:
    ai = build(sources, None)
    verified = build(sources, make_review())
    # The same root items (device observer context, measurement groups, study summary) ...
    assert list(verified.ContentSequence)[:-1] == list(ai.ContentSequence)
    assert code_value(one(verified, "CODE", Code("121005", "DCM", "Observer Type"))) == key(
        codes.DEVICE_OBSERVER
    )
    # ... and the person observer only inside the radiologist's container.
    persons = [
        item
        for item in walk(verified)
        if item.ValueType == "CODE" and code_value(item) == key(codes.PERSON_OBSERVER)
    ]
    assert len(persons) == 1
    assert persons[0] in list(review_container(verified).ContentSequence)


def test_unverified_build_unchanged(sources: list[Dataset]) -> None:
    sr = build(sources, None)
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.PreliminaryFlag == "PRELIMINARY"
    assert sr.CompletionFlag == "COMPLETE"
    assert "VerifyingObserverSequence" not in sr
    assert "PredecessorDocumentsSequence" not in sr
    assert not children(sr, "CONTAINER", codes.FINDINGS)
    assert sr.SeriesDescription == "xrayd AI fracture triage (research, not for clinical use)"
    # Not passing review at all is the same as review=None.
    args = {"sop_instance_uid": AI_SR[3], "series_instance_uid": AI_SR[1], "series_number": 9901}
    plain = build_sr(
        FINDINGS,
        sources,
        instance_number=1,
        content_datetime=WHEN,
        software_version="xrayd 0.1.0",
        **args,
    )
    assert sr_bytes(plain) == sr_bytes(sr)


def test_identical_reviews_give_identical_bytes(sources: list[Dataset]) -> None:
    first = sr_bytes(build(sources, make_review()))
    assert sr_bytes(build(sources, make_review())) == first
    assert sr_bytes(build(sources, make_review(agree=True))) != first
    back = dcmread(BytesIO(first))
    assert back.VerifyingObserverSequence[0].VerifyingObserverName == "jdoe^"


# --- refusing bad reviews --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "j\\doe",  # value delimiter
        "j^doe",  # component delimiter
        "j=doe",  # component group delimiter
        "jdoe\n",
        "j\x00doe",
        "j\x1bdoe",
        "",
        "   ",
        " jdoe",
        "x" * 64,
    ],
)
def test_hostile_observer_name_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="observer_name"):
        make_review(observer_name=name)


def test_other_bad_reviews_rejected(sources: list[Dataset]) -> None:
    with pytest.raises(ValueError, match="organization"):
        make_review(organization="A\\B")
    with pytest.raises(ValueError, match="organization"):
        make_review(organization="x" * 65)
    with pytest.raises(ValueError, match="timezone"):
        make_review(when=REVIEWED_AT.replace(tzinfo=None))
    with pytest.raises(ValueError, match="fracture"):
        make_review(fracture="indeterminate")
    with pytest.raises(ValueError, match="count"):
        make_review(count="3")
    with pytest.raises(ValueError, match="comment"):
        make_review(comment="bell\x07")
    assert make_review(observer_name="x" * 63, comment="tab\tok\r\n").person_name.endswith("^")
    with pytest.raises(SRBuildError, match="body part"):
        build(sources, replace(make_review(), body_part="skull"))


# --- the tools' verdicts ---------------------------------------------------------------------


@pytest.mark.parametrize("agree", [True, False])
def test_dciodvfy_reports_no_errors(tmp_path: Path, sources: list[Dataset], agree: bool) -> None:
    tool = need_tool("dciodvfy")
    path = tmp_path / "verified.dcm"
    path.write_bytes(sr_bytes(build(sources, make_review(agree=agree))))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert result.returncode == 0, report
    assert "Comprehensive3DSR" in report, report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    warnings = [line for line in report.splitlines() if line.startswith("Warning")]
    assert not [line for line in warnings if "<99XRAYD>" not in line], report


#: Warnings PixelMed's template tables (2022) give for a verified SR, all "Content Item not in
#: template" in extensible templates: the box group's decision and label (as in the AI SR), and
#: the radiologist's Findings container with its own person observer context (TID 1500 lists
#: no row for a reviewer's assessment).
ACCEPTED_PIXELMED_WARNINGS = (
    '/CONTAINER (125007,DCM,"Measurement Group")/CODE (125605004,SCT,"Fracture of bone")',
    '/CONTAINER (125007,DCM,"Measurement Group")/TEXT (121106,DCM,"Comment")',
    '/CONTAINER (121070,DCM,"Findings")',
)


def test_pixelmed_template_validator_reports_no_errors(
    tmp_path: Path, sources: list[Dataset]
) -> None:
    path = tmp_path / "verified.dcm"
    path.write_bytes(sr_bytes(build(sources, make_review())))
    report = pixelmed_sr_report(path)
    assert "Found Root Template TID_1500 (MeasurementReport)" in report.output, report.output
    assert not report.errors, report.output
    for warning in report.warnings:
        assert warning.endswith("Content Item not in template"), warning
        assert any(part in warning for part in ACCEPTED_PIXELMED_WARNINGS), warning


def test_dsrdump_reads_it_back(tmp_path: Path, sources: list[Dataset]) -> None:
    tool = need_tool("dsrdump")
    path = tmp_path / "verified.dcm"
    path.write_bytes(sr_bytes(build(sources, make_review())))
    result = subprocess.run(
        [tool, "+Pu", "+Pl", "+Pc", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Error" not in result.stderr and "Warning" not in result.stderr, result.stderr
    out = result.stdout
    assert "VERIFIED" in out and "UNVERIFIED" not in out
    assert f"jdoe^, {ORGANIZATION}" in out  # Verifying Observers
    assert "Predecessor Docs    : 1" in out
    for text in (
        '(121070,DCM,"Findings")',
        '(121006,DCM,"Person")',
        '(121008,DCM,"Person Observer Name")="jdoe^"',
        '(122775,DCM,"Agreement with prior findings")=(373067005,SCT,"No")',
        '(121106,DCM,"Comment")="Nutrient canal, not a fracture.',
    ):
        assert text in out, text
