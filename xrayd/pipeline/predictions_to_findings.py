"""From the classifier's predictions to the plain findings the DICOM builders read."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset

from dicom_node.findings import Algorithm, Box, ImageFinding
from models.bundle import LoadedModel
from models.prediction import Prediction
from storage.analyses import SourceInstance

__all__ = ["algorithm_of", "image_finding", "prediction_detail"]


def algorithm_of(model: LoadedModel) -> Algorithm:
    """TID 4019 identification: name, version, weights hash and the decision parameters."""
    meta = model.metadata
    point = meta.thresholds.default
    parameters = {
        "threshold": f"{point.threshold:.4f}",
        "indeterminate_low": f"{point.indeterminate_low:.4f}",
        "indeterminate_high": f"{point.indeterminate_high:.4f}",
        "temperature": f"{meta.temperature:.4f}",
        "input_size": str(meta.input_size),
        "arch": meta.arch,
    }
    for part, p in sorted(meta.thresholds.per_body_part.items()):
        parameters[f"threshold_{part}"] = f"{p.threshold:.4f}"
        parameters[f"indeterminate_low_{part}"] = f"{p.indeterminate_low:.4f}"
        parameters[f"indeterminate_high_{part}"] = f"{p.indeterminate_high:.4f}"
    return Algorithm(meta.name, meta.version, model.info.sha256, parameters)


def _boxes(prediction: Prediction, rows: int, cols: int) -> tuple[Box, ...]:
    out = []
    for r0, c0, r1, c1 in prediction.boxes:
        r0, c0 = max(0.0, r0), max(0.0, c0)
        r1, c1 = min(float(rows), r1), min(float(cols), c1)
        if r0 < r1 and c0 < c1:
            out.append(Box(r0, c0, r1, c1))
    return tuple(out)


def image_finding(instance: SourceInstance, header: Dataset, p: Prediction) -> ImageFinding:
    rows, cols = int(header.Rows), int(header.Columns)
    count = p.count if p.count in ("0", "1", "2+") else "0"
    return ImageFinding(
        sop_instance_uid=instance.sop_instance_uid,
        sop_class_uid=instance.sop_class_uid,
        series_instance_uid=instance.series_instance_uid,
        rows=rows,
        columns=cols,
        decision=p.decision.value,
        fracture_probability=p.fracture_probability,
        count=count,  # type: ignore[arg-type]
        body_part=p.body_part,
        body_part_probability=p.body_part_probability,
        hardware=p.hardware,
        hardware_probability=p.hardware_probability,
        boxes=_boxes(p, rows, cols),
    )


def prediction_detail(sop_instance_uid: str, p: Prediction) -> dict[str, Any]:
    """A prediction as JSON for the analysis row (no heatmap: it is in the SC)."""
    return {
        "sop_instance_uid": sop_instance_uid,
        "decision": p.decision.value,
        "fracture_probability": p.fracture_probability,
        "count": p.count,
        "count_probabilities": list(p.count_probabilities),
        "body_part": p.body_part,
        "body_part_probability": p.body_part_probability,
        "hardware": p.hardware,
        "hardware_probability": p.hardware_probability,
        "boxes": [list(b) for b in p.boxes],
        "threshold_body_part": p.threshold_body_part,
    }
