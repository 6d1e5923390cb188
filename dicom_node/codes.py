"""Every coded concept that xrayd's result objects use, in one place, with where it comes from.

Sources, checked against DICOM PS3.16 (as shipped in pydicom's ``pydicom.sr.codedict``, which is
generated from the standard's tables) and SNOMED CT concept ids:

* ``DCM`` codes are from PS3.16 Annex D (DICOM Controlled Terminology Definitions).
* ``SCT`` codes are SNOMED CT concept ids as DICOM lists them (PS3.16 Annex L / the CIDs cited).
* ``UCUM`` and ``LN`` (LOINC) codes are the ones PS3.16 uses in the CIDs cited.
* ``99XRAYD`` is xrayd's **private** coding scheme (PS3.16 section 8: private designators start
  with "99"). It is used only where neither DICOM nor SNOMED CT has a concept: the three-way
  fracture-count class and the study summary's per-image lines. Every SR that uses it declares it
  in the Coding Scheme Identification Sequence (:data:`PRIVATE_SCHEME`).

Deliberate choices, so nobody "fixes" them back:

* Presence values come from CID 240 "Present-Absent": Absent is SCT 272519000 (not 2667000), and
  the third value is SCT 373068000 "Undetermined", which is what DICOM offers for an
  indeterminate answer in that value set (SCT 82334004 "Indeterminate" is only in CID 4220,
  visual fixation quality).
* Probabilities are DCM 122157 "Probability" (unit UCUM "1", CID 7181 "no units", range 0..1),
  post-coordinated with a HAS CONCEPT MOD that says *what* the probability is of (a Finding or
  the Target Region), instead of inventing "fracture probability" codes.
* Contributing equipment purpose is DCM 109102 "Processing Equipment" (CID 7005): xrayd derives
  new objects from the images, it does not modify them (109103 would claim that).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pydicom.sr.coding import Code

__all__ = [
    "ABSENT",
    "AGREEMENT_WITH_PRIOR_FINDINGS",
    "APPROXIMATE_SPATIAL_LOCATION",
    "BODY_PARTS",
    "COMMENT",
    "COUNT_CLASSES",
    "DEVICE_OBSERVER",
    "FINDING",
    "FINDINGS",
    "FINDING_SITE",
    "FRACTURE",
    "IMAGE_NOT_ANALYSED",
    "IMAGE_REGION",
    "IMAGE_RESULT",
    "MEASUREMENT_REPORT",
    "NO",
    "NO_UNITS",
    "NUMBER_OF_FRACTURES",
    "ORTHOPEDIC_DEVICE",
    "PERSON_OBSERVER",
    "PRESENCE",
    "PRESENT",
    "PRIVATE_SCHEME",
    "PRIVATE_SCHEME_NAME",
    "PRIVATE_SCHEME_ORGANIZATION",
    "PROBABILITY",
    "PROCEDURE_XR",
    "PROCESSING_EQUIPMENT",
    "QUALITATIVE_EVALUATIONS",
    "REVIEW_BODY_PARTS",
    "TARGET_REGION",
    "UNDETERMINED",
    "YES",
    "body_part_code",
]

#: xrayd's private coding scheme designator (PS3.16 section 8.2: "99" prefix = private).
PRIVATE_SCHEME = "99XRAYD"
PRIVATE_SCHEME_NAME = "xrayd private codes (fracture triage research software)"
PRIVATE_SCHEME_ORGANIZATION = "xrayd project"

# --- document structure --------------------------------------------------------------------------

#: CID 7021 "Measurement Report Document Title": the TID 1500 root container.
MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
#: CID 100 "Quantitative Diagnostic Imaging Procedure": SNOMED CT 363679005 "Imaging procedure",
#: the Procedure Reported. CID 100 has no radiography member; LOINC 43468-8 "XR unspecified body
#: region" (used before) is not in it either, and PixelMed's template validator reports that as
#: an error, so the group's generic member is used.
PROCEDURE_XR = Code("363679005", "SCT", "Imaging procedure")
#: TID 1500 row 12: the study-level "Qualitative Evaluations" container (UMLS CUI, as the
#: template itself specifies it).
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
#: CID 270 "Observer Type": the observer is a device (TID 1002).
DEVICE_OBSERVER = Code("121007", "DCM", "Device")
#: CID 270 "Observer Type": the observer is a person (TID 1002), the reviewing radiologist.
PERSON_OBSERVER = Code("121006", "DCM", "Person")
#: CID 7005 "Contributing Equipment Purpose of Reference".
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")

# --- findings and their values -------------------------------------------------------------------

#: SNOMED CT 125605004 |Fracture of bone (disorder)|: the finding (TID 1501 Finding, and the
#: concept name of the presence evaluation).
FRACTURE = Code("125605004", "SCT", "Fracture of bone")
#: SNOMED CT 16349000 |Orthopedic device|, as PS3.16 lists it (CID 1000): orthopaedic hardware
#: (plates, screws, nails, prostheses) seen on the image.
ORTHOPEDIC_DEVICE = Code("16349000", "SCT", "Orthopedic device")
#: DCM 121071 "Finding" (CID 3419 / 7002): the concept modifier that names what a probability
#: is of.
FINDING = Code("121071", "DCM", "Finding")
#: SNOMED CT 363698007 |Finding site| (CID 9000): the anatomic site of the image's evaluation.
FINDING_SITE = Code("363698007", "SCT", "Finding Site")
#: DCM 123014 "Target Region": the imaged anatomic region, modifier of the body-part probability.
TARGET_REGION = Code("123014", "DCM", "Target Region")

#: CID 240 "Present-Absent".
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
UNDETERMINED = Code("373068000", "SCT", "Undetermined")
#: Decision ("present" | "absent" | "indeterminate") to its CID 240 value.
PRESENCE: Mapping[str, Code] = MappingProxyType(
    {"present": PRESENT, "absent": ABSENT, "indeterminate": UNDETERMINED}
)

#: DCM 122157 "Probability" (Annex D; no CID): every probability, with unit :data:`NO_UNITS`.
PROBABILITY = Code("122157", "DCM", "Probability")
#: CID 7181: UCUM "1", "no units" (a probability in 0..1).
NO_UNITS = Code("1", "UCUM", "no units")

#: CID 7553 "Generic Purpose of Reference to Coordinates in Measurement": the SCOORD box that
#: localises the fracture on the source image.
APPROXIMATE_SPATIAL_LOCATION = Code("121226", "DCM", "Approximate spatial location")
#: TID 1410 row 5: the SCOORD that defines a measurement group's region (what viewers such as
#: OHIF load as an annotation on the image).
IMAGE_REGION = Code("111030", "DCM", "Image Region")

# --- the radiologist's review (verified SR) ------------------------------------------------------

#: DCM 121070 "Findings" (CID 7001 "Diagnostic Imaging Report Heading"): the container of the
#: radiologist's assessment, whose own observation context names the radiologist (TID 1002).
FINDINGS = Code("121070", "DCM", "Findings")
#: DCM 122775 "Agreement with prior findings": whether the radiologist agrees with the AI
#: result (the prior findings of the SR this one supersedes), valued :data:`YES` / :data:`NO`.
AGREEMENT_WITH_PRIOR_FINDINGS = Code("122775", "DCM", "Agreement with prior findings")
#: CID 230 "Yes-No".
YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
#: DCM 121106 "Comment": the radiologist's free-text comment.
COMMENT = Code("121106", "DCM", "Comment")

# --- private codes (99XRAYD): no DICOM or SNOMED CT concept exists -------------------------------

#: The model predicts a count *class* (0, 1, 2 or more), which a NUM cannot express ("2+"), so it
#: is a CODE with private values.
NUMBER_OF_FRACTURES = Code("FXCOUNT", PRIVATE_SCHEME, "Number of fractures")
COUNT_CLASSES: Mapping[str, Code] = MappingProxyType(
    {
        "0": Code("FXCOUNT0", PRIVATE_SCHEME, "No fracture"),
        "1": Code("FXCOUNT1", PRIVATE_SCHEME, "One fracture"),
        "2+": Code("FXCOUNT2P", PRIVATE_SCHEME, "Two or more fractures"),
    }
)
#: Study summary (TEXT items of the study-level Qualitative Evaluations container, TID 1500
#: row 14): one per analysed image, "<SOP Instance UID>: fracture PRESENT (p=0.97), ...", so
#: images without a box (kept out of Imaging Measurements) are still reported; one per instance
#: not analysed, "<SOP Instance UID>: <reason>".
IMAGE_RESULT = Code("IMGRESULT", PRIVATE_SCHEME, "AI result of image")
IMAGE_NOT_ANALYSED = Code("IMGSKIPREASON", PRIVATE_SCHEME, "Image not analysed")

# --- anatomy -------------------------------------------------------------------------------------

#: Body part label of the model -> SNOMED CT anatomic region, CID 4 "Anatomic Region" (PS3.16
#: Annex L gives the mapping from Body Part Examined). Same values as the synthetic radiographs.
BODY_PARTS: Mapping[str, Code] = MappingProxyType(
    {
        "elbow": Code("16953009", "SCT", "Elbow joint"),
        "finger": Code("7569003", "SCT", "Finger"),
        "forearm": Code("14975008", "SCT", "Forearm"),
        "hand": Code("85562004", "SCT", "Hand"),
        "humerus": Code("85050009", "SCT", "Humerus"),
        "shoulder": Code("16982005", "SCT", "Shoulder"),
        "wrist": Code("74670003", "SCT", "Wrist joint"),
        "leg": Code("30021000", "SCT", "Lower leg"),
        "hip": Code("29836001", "SCT", "Hip"),
        "other": Code("66019005", "SCT", "Extremity"),
    }
)
#: Body part label of a radiologist's review -> SNOMED CT anatomic region (CID 4): the model's
#: labels plus the regions the review form offers that the model does not predict.
REVIEW_BODY_PARTS: Mapping[str, Code] = MappingProxyType(
    {
        **BODY_PARTS,
        "knee": Code("72696002", "SCT", "Knee"),
        "ankle": Code("70258002", "SCT", "Ankle joint"),
        "foot": Code("56459004", "SCT", "Foot"),
    }
)


def body_part_code(label: str) -> Code:
    """The SNOMED CT anatomic region of one of the model's body-part labels."""
    try:
        return BODY_PARTS[label]
    except KeyError:
        raise ValueError(
            f"unknown body part {label!r}; known: {', '.join(sorted(BODY_PARTS))}"
        ) from None


# --- key object selection (KOS) ---------------------------------------------------------------

#: CID 7010 "Key Object Selection Document Title": the title of the KOS that lists the images
#: the AI flags. "Of Interest" is the generic member; the others say *why* a person selected
#: images (For Teaching, For Research, For Diagnosis, Quality Issue, ...), which an AI triage
#: result is not: see :mod:`dicom_node.kos`.
KEY_OBJECT_TITLE = Code("113000", "DCM", "Of Interest")
#: TID 2010 row 4: the KOS's TEXT "Key Object Description".
KEY_OBJECT_DESCRIPTION = Code("113012", "DCM", "Key Object Description")

__all__ += ["KEY_OBJECT_DESCRIPTION", "KEY_OBJECT_TITLE"]
