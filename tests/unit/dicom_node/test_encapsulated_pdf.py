"""The study report as an Encapsulated PDF instance."""

from __future__ import annotations

import subprocess
from datetime import datetime
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from reportlab.pdfgen.canvas import Canvas

from dicom_node.encapsulated_pdf import ENCAPSULATED_PDF_STORAGE, build_encapsulated_pdf
from dicom_node.findings import Algorithm
from dicom_node.secondary_capture import dataset_bytes
from dicom_node.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

from dicom_factory import make_radiograph
from helpers import need_tool

ALGORITHM = Algorithm(name="fracnet", version="1.2.0", weights_sha256="cd" * 32)
WHEN = datetime(2026, 11, 23, 10, 31, 0)
TITLE = "xrayd AI fracture triage report - not a diagnosis"
STUDY = "2.25.4242"


def small_pdf(text: str = "hello") -> bytes:
    buffer = BytesIO()
    canvas = Canvas(buffer, invariant=1)
    canvas.drawString(100, 700, text)
    canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def sources(count: int = 2) -> list[Dataset]:
    out = []
    for seed in range(count):
        ds = make_radiograph(rows=16, cols=16, study_uid=STUDY, seed=seed)
        del ds.PixelData
        out.append(ds)
    return out


def build(srcs: list[Dataset], pdf: bytes, title: str = TITLE) -> Dataset:
    return build_encapsulated_pdf(
        srcs,
        pdf,
        sop_instance_uid="2.25.2001",
        series_instance_uid="2.25.2002",
        series_number=9003,
        instance_number=1,
        content_datetime=WHEN,
        title=title,
        algorithm=ALGORITHM,
        software_version="0.1.0",
    )


def test_encapsulated_pdf_passes_dciodvfy_and_dcmdump(tmp_path: Path) -> None:
    tool = need_tool("dciodvfy")
    dump = need_tool("dcmdump")
    path = tmp_path / "report.dcm"
    path.write_bytes(dataset_bytes(build(sources(), small_pdf())))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    assert result.returncode == 0, report
    result = subprocess.run([dump, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "EncapsulatedPDFStorage" in result.stdout
    assert "(0028,0301) CS [YES]" in result.stdout


@pytest.mark.parametrize("parity", [0, 1])
def test_document_identity_and_references(parity: int) -> None:
    srcs = sources(3)
    pdf = next(p for n in range(1, 40) if len(p := small_pdf("x" * n)) % 2 == parity)
    ds = dcmread(BytesIO(dataset_bytes(build([*srcs, srcs[0]], pdf))))

    assert ds.SOPClassUID == ENCAPSULATED_PDF_STORAGE
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.ImplementationVersionName == implementation_version_name()
    assert ds.Modality == "DOC" and ds.ConversionType == "WSD"
    assert ds.BurnedInAnnotation == "YES"
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.DocumentTitle == TITLE
    concept = ds.ConceptNameCodeSequence[0]
    assert (concept.CodeValue, concept.CodingSchemeDesignator) == ("18748-4", "LN")
    assert ds.EncapsulatedDocumentLength == len(pdf)
    assert bytes(ds.EncapsulatedDocument)[: len(pdf)] == pdf
    assert len(ds.EncapsulatedDocument) % 2 == 0
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
    ):
        assert ds[keyword].value == srcs[0][keyword].value, keyword
    assert ds.StudyInstanceUID == STUDY
    assert [r.ReferencedSOPInstanceUID for r in ds.SourceInstanceSequence] == [
        s.SOPInstanceUID for s in srcs
    ]
    (equipment,) = ds.ContributingEquipmentSequence
    assert equipment.Manufacturer == "xrayd" and equipment.ManufacturerModelName == "fracnet"
    assert ds.ContentDate == "20261123" and ds.AcquisitionDateTime == "20261123103100"


def test_identical_inputs_give_identical_bytes() -> None:
    srcs, pdf = sources(), small_pdf()
    assert dataset_bytes(build(srcs, pdf)) == dataset_bytes(build(srcs, pdf))


def test_rejects_what_is_not_one_study_or_not_a_pdf() -> None:
    srcs = sources()
    with pytest.raises(ValueError, match="at least one"):
        build([], small_pdf())
    with pytest.raises(ValueError, match="not a PDF"):
        build(srcs, b"GIF89a")
    stranger = make_radiograph(rows=16, cols=16, study_uid="2.25.7")
    with pytest.raises(ValueError, match="studies"):
        build([*srcs, stranger], small_pdf())
    with pytest.raises(ValueError, match="title"):
        build(srcs, small_pdf(), title="")
