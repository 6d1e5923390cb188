"""The model an older AI SR names, read back from the SR itself: legacy analyses only.

Since issue 16 every analysis stores its model's TID 4019 Algorithm Identification (name,
version, weights hash, parameters) with its predictions, and the radiologist-verified SR is
built from that stored form. Analyses stored before then lack the parameters; for those alone,
:func:`algorithm_named_in` reads the identification from the AI SR that was sent, which is the
one place it was written down. Nothing else reads an SR back.

The concepts are the DICOM ones that highdicom's ``AlgorithmIdentification`` writes (TID 4019),
from pydicom's code dictionary; :func:`dicom_node.sr.algorithm_parameters` wrote the
parameters as ``key=value`` plus the weights' hash.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_node.errors import DicomNodeError
from dicom_node.findings import Algorithm

__all__ = ["UnreadableSRError", "algorithm_named_in"]

_IMAGING_MEASUREMENTS = codes.DCM.ImagingMeasurements
_MEASUREMENT_GROUP = codes.DCM.MeasurementGroup
_ALGORITHM_NAME = codes.DCM.AlgorithmName
_ALGORITHM_VERSION = codes.DCM.AlgorithmVersion
_ALGORITHM_PARAMETERS = codes.DCM.AlgorithmParameters
#: the parameter :func:`dicom_node.sr.algorithm_parameters` adds for the weights' hash
_WEIGHTS_PARAMETER = "weights_sha256"


class UnreadableSRError(DicomNodeError, ValueError):
    """The SR does not name an algorithm the way xrayd's AI SRs did."""


def algorithm_named_in(sr: Dataset, weights_sha256: str) -> Algorithm:
    """The TID 4019 identification an older AI SR names in its first measurement group
    (``weights_sha256`` from the stored analysis: the SR lists it among the parameters)."""
    group = _first_measurement_group(sr)
    texts: dict[tuple[str, str], list[str]] = {}
    for item in group.get("ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            texts.setdefault(_concept(item), []).append(str(item.TextValue))
    try:
        [name] = texts[_key(_ALGORITHM_NAME)]
        [version] = texts[_key(_ALGORITHM_VERSION)]
    except (KeyError, ValueError):
        raise UnreadableSRError("the AI SR names no algorithm") from None
    parameters: dict[str, str] = {}
    for entry in texts.get(_key(_ALGORITHM_PARAMETERS), []):
        key, _, value = entry.partition("=")
        if key != _WEIGHTS_PARAMETER:  # algorithm_parameters() adds it back
            parameters[key] = value
    return Algorithm(name, version, weights_sha256, parameters)


def _first_measurement_group(sr: Dataset) -> Dataset:
    for container in sr.get("ContentSequence", []):
        if container.get("ValueType") == "CONTAINER" and _concept(container) == _key(
            _IMAGING_MEASUREMENTS
        ):
            for group in container.get("ContentSequence", []):
                if _concept(group) == _key(_MEASUREMENT_GROUP):
                    found: Dataset = group
                    return found
    raise UnreadableSRError("the AI SR has no measurement group")


def _key(code: Code) -> tuple[str, str]:
    return str(code.scheme_designator), str(code.value)


def _concept(item: Dataset) -> tuple[str, str]:
    names = item.get("ConceptNameCodeSequence") or []
    if not names:
        return "", ""
    return str(names[0].CodingSchemeDesignator), str(names[0].CodeValue)
