"""The radiologist-verified SR: a saved review (an ``overrides`` row) -> an SR that supersedes
the AI SR -> outbox.

The verified SR is the AI SR of the reviewed analysis rebuilt from stored data, never from the
AI SR's own DICOM tree: the analysis row (per-image predictions with their regions, study
decision, the model's TID 4019 identification: name, version, weights hash, parameters), the AI
SR's row (its UIDs, for the predecessor reference), the source instances' rows and their
headers in the byte store (patient and study data, image references; xrayd keeps no copy of
patient data in its tables), plus the radiologist's assessment
(:class:`~dicom_node.findings.RadiologistReview`): VERIFIED by the reviewer (the organization
from ``settings.review.organization``), FINAL, and naming the AI SR in its Predecessor
Documents Sequence. Whether to send one at all (``settings.review.send_verified_sr``) is the
caller's decision.

Legacy: an analysis stored before issue 16 lacks the model's parameters. For those only,
:meth:`VerifiedSRWriter._legacy_algorithm` reads the identification from the AI SR file
(:func:`dicom_node.legacy_sr.algorithm_named_in`): it is the one place those parameters were
written down, whereas the model_versions row names the bundle, whose thresholds may since have
been changed, moved or deleted.

Idempotent: the SOP Instance UID depends only on the override and the AI SR it supersedes, so
a second call for the same override finds the recorded object and queues nothing; a call
after a crash before the commit rebuilds the same bytes under the same UID. The object's row
and its deliveries (one per destination whose ``send`` includes ``"sr"``) are committed in one
transaction (:func:`storage.analyses.record_verified_sr`), as the analysis job does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from config.errors import XraydError
from config.settings import Settings
from dicom_node.findings import Algorithm, NotAnalysed, RadiologistReview, StudyFindings
from dicom_node.legacy_sr import UnreadableSRError, algorithm_named_in
from dicom_node.sr import SRBuildError, build_sr, sr_bytes
from dicom_node.uids import derived_uid
from models.errors import NotAnalysable
from models.labels import Decision
from models.limits import DEFAULT_LIMITS
from models.prediction import Prediction
from models.reading import read_header
from storage import analyses as store
from storage.bytestore import ByteStore, ByteStoreError, ByteStoreUnavailableError, LocalByteStore
from storage.db import Sessions
from storage.spool import Spool
from xrayd.pipeline.analyse import SOFTWARE_VERSION, result_key
from xrayd.pipeline.predictions_to_findings import image_finding

LOGGER = logging.getLogger(__name__)

__all__ = ["SERIES_NUMBER", "VerifiedSRError", "VerifiedSRWriter", "verified_sr_uid"]

#: The verified SRs of a study share one series, beside the AI's (9901-9903).
SERIES_NUMBER = 9904
SR = store.SR


class VerifiedSRError(XraydError):
    """A verified SR cannot be made for this override (no such override, unusable label or
    source files); the message names internal ids only."""


@dataclass(frozen=True)
class _Reviewed:
    """The override as plain data: which study and analysis, and the radiologist's review."""

    override_id: int
    study_id: int
    analysis_id: int | None
    review: RadiologistReview


@dataclass(frozen=True)
class _AISR:
    """The AI SR a verified SR supersedes (its recorded row, the fields that are set)."""

    result_id: int
    job_id: int
    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    file_path: str
    analysis_id: int


@dataclass(frozen=True)
class _Built:
    study_instance_uid: str
    data: bytes
    detail: dict[str, Any]


def verified_sr_uid(override_id: int, ai_sr_uid: str, root: str | None = None) -> str:
    """The verified SR's SOP Instance UID: one per override and superseded AI SR (under the
    site's UID ``root``; None: ``2.25.``)."""
    return derived_uid(root, "xrayd verified sr", str(override_id), ai_sr_uid)


class VerifiedSRWriter:
    """Writes, records and queues the radiologist-verified SR of one saved review."""

    def __init__(
        self,
        sessions: Sessions,
        spool: Spool,
        settings: Settings,
        *,
        on_queued: Callable[[], None] | None = None,
        store: ByteStore | None = None,
    ) -> None:
        """``store`` holds the instances (and the AI SRs, read for legacy analyses only) and
        takes the verified SR (default: the spool)."""
        self.sessions = sessions
        self.spool = spool
        self.store: ByteStore = store or LocalByteStore(spool)
        self.settings = settings
        self.on_queued = on_queued

    def write(self, override_id: int) -> int | None:
        """The result id of the verified SR for ``override_id``; None if the study has no AI SR.

        Raises :class:`VerifiedSRError` if the override does not exist or cannot be turned into
        a verified SR.
        """
        reviewed = self._reviewed(override_id)
        ai = self._ai_sr(reviewed)
        if ai is None:
            LOGGER.info(
                "override %d: study %d has no AI SR to verify; no verified SR written",
                override_id,
                reviewed.study_id,
                extra={"override_id": override_id, "study_id": reviewed.study_id},
            )
            return None
        uid = verified_sr_uid(override_id, ai.sop_instance_uid, self.settings.node.uid_root)
        existing = store.find_object(self.sessions, uid)
        if existing is not None:  # written before: the bytes already queued stay as they are
            return existing.result_id
        built = self._build(reviewed, ai, uid)
        result_id, queued = self._commit(reviewed.study_id, ai, uid, built)
        LOGGER.info(
            "override %d: verified SR recorded for study %d (supersedes result %d); "
            "%d deliveries queued",
            override_id,
            reviewed.study_id,
            ai.result_id,
            queued,
            extra={
                "override_id": override_id,
                "study_id": reviewed.study_id,
                "result_id": result_id,
            },
        )
        if queued and self.on_queued is not None:
            self.on_queued()
        return result_id

    # -- steps ---------------------------------------------------------------------------------

    def _reviewed(self, override_id: int) -> _Reviewed:
        row = store.review_to_verify(self.sessions, override_id)
        if row is None:
            raise VerifiedSRError(f"override {override_id} does not exist")
        label = dict(row.radiologist_label or {})
        try:
            review = RadiologistReview(
                observer_name=row.user_name,
                organization=self.settings.review.organization,
                when=row.created_at,
                agree=_agree(row.agree, row.ai_label, label),
                fracture=label["fracture"],
                count=label["count"],
                body_part=label["body_part"],
                hardware=_flag(label["hardware"]),
                comment=row.comment or None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerifiedSRError(
                f"override {override_id}: unusable review for a verified SR: {exc}"
            ) from None
        return _Reviewed(row.id, row.study_id, row.result_id, review)

    def _ai_sr(self, reviewed: _Reviewed) -> _AISR | None:
        """The AI SR of the reviewed analysis (of the newest analysis if the review names
        none); verified SRs (also kind "sr") are not AI SRs."""
        ai_srs = [
            _AISR(
                o.result_id,
                o.job_id,
                o.sop_instance_uid,
                str(o.detail["series_instance_uid"]),
                str(o.detail["sop_class_uid"]),
                o.file_path,
                int(o.detail["analysis_id"]),
            )
            for o in store.objects_of(self.sessions, reviewed.study_id)
            if o.kind == SR
            and "verified_by" not in o.detail
            and "analysis_id" in o.detail
            and "series_instance_uid" in o.detail
            and "sop_class_uid" in o.detail
            and o.job_id is not None
            and o.sop_instance_uid is not None
            and o.file_path is not None
        ]
        if reviewed.analysis_id is not None:
            ai_srs = [o for o in ai_srs if o.analysis_id == reviewed.analysis_id]
        return ai_srs[-1] if ai_srs else None

    def _build(self, reviewed: _Reviewed, ai: _AISR, uid: str) -> _Built:
        """The verified SR's bytes and its row's detail."""
        study = store.load_study(self.sessions, reviewed.study_id, ai.job_id)
        analysis = self._analysis(reviewed.study_id, ai)
        model: Mapping[str, Any] = analysis.detail["model"]
        algorithm = _stored_algorithm(model) or self._legacy_algorithm(
            ai, str(model["sha256"]), reviewed.override_id
        )
        findings, headers = self._findings(study, analysis, algorithm, reviewed.override_id)
        series_uid = derived_uid(
            self.settings.node.uid_root, "xrayd verified sr series", study.study_instance_uid
        )
        predecessor = (
            study.study_instance_uid,
            ai.series_instance_uid,
            ai.sop_class_uid,
            ai.sop_instance_uid,
        )
        try:
            sr = build_sr(
                findings,
                headers,
                sop_instance_uid=uid,
                series_instance_uid=series_uid,
                series_number=SERIES_NUMBER,
                instance_number=reviewed.override_id,
                content_datetime=reviewed.review.when,
                software_version=SOFTWARE_VERSION,
                predecessor=[predecessor],
                review=reviewed.review,
                uid_root=self.settings.node.uid_root,
            )
        except SRBuildError as exc:
            raise VerifiedSRError(f"override {reviewed.override_id}: {exc}") from None
        detail = {
            "verified_by": reviewed.review.observer_name,
            "override_id": reviewed.override_id,
            "series_instance_uid": series_uid,
            "sop_class_uid": str(sr.SOPClassUID),
            "predecessor": ai.sop_instance_uid,
        }
        return _Built(study.study_instance_uid, sr_bytes(sr), detail)

    def _analysis(self, study_id: int, ai: _AISR) -> store.ObjectRow:
        for row in store.analyses_of(self.sessions, study_id):
            if row.result_id == ai.analysis_id:
                return row
        raise VerifiedSRError(f"result {ai.result_id}: the analysis of this AI SR is gone")

    def _legacy_algorithm(self, ai: _AISR, weights_sha256: str, override_id: int) -> Algorithm:
        """Legacy analyses only (stored before the model's parameters were): the TID 4019
        identification as the AI SR file names it (see the module docstring)."""
        try:
            ai_sr = dcmread(BytesIO(self.store.get(ai.file_path)))
            return algorithm_named_in(ai_sr, weights_sha256)
        except ByteStoreUnavailableError:
            raise  # the store's trouble, not this SR's: the caller may try again later
        except UnreadableSRError as exc:
            raise VerifiedSRError(f"override {override_id}: {exc}") from None
        except (InvalidDicomError, OSError, ValueError, EOFError, ByteStoreError) as exc:
            raise VerifiedSRError(
                f"override {override_id}: cannot read the AI SR: {type(exc).__name__}"
            ) from None

    def _findings(
        self,
        study: store.StudyToAnalyse,
        analysis: store.ObjectRow,
        algorithm: Algorithm,
        override_id: int,
    ) -> tuple[StudyFindings, list[Dataset]]:
        """The findings of the analysis, and the source headers in the analysis job's order
        (analysed images first, then the readable ones it did not analyse)."""
        detail = analysis.detail
        instances = {i.sop_instance_uid: i for i in study.instances}
        model: Mapping[str, Any] = detail["model"]
        images = []
        headers = []
        for image in detail["images"]:
            instance = instances.get(image["sop_instance_uid"])
            header = None if instance is None else self._header(instance.spool_path)
            if instance is None or header is None:
                raise VerifiedSRError(
                    f"override {override_id}: an analysed image of study {study.study_id} "
                    "is no longer in the spool"
                )
            images.append(image_finding(instance, header, _prediction(image, model)))
            headers.append(header)
        not_analysed = []
        for skipped in detail["not_analysed"]:
            instance = instances.get(skipped["sop_instance_uid"])
            if instance is None:
                raise VerifiedSRError(
                    f"override {override_id}: an instance of study {study.study_id} is gone"
                )
            not_analysed.append(
                NotAnalysed(instance.sop_instance_uid, instance.sop_class_uid, skipped["reason"])
            )
            header = self._header(instance.spool_path)
            if header is not None:
                headers.append(header)
        findings = StudyFindings(
            study_instance_uid=study.study_instance_uid,
            decision=detail["decision"],
            fracture_probability=float(detail["fracture_probability"]),
            images=tuple(images),
            not_analysed=tuple(not_analysed),
            algorithm=algorithm,
        )
        return findings, headers

    def _header(self, spool_path: str) -> Dataset | None:
        """The stored instance's header (no pixel data), or None if it cannot be read.

        A deflated one is inflated with bounded memory (pydicom would inflate all of it)."""
        try:
            with self.store.fetch(spool_path) as path:
                return read_header(path, DEFAULT_LIMITS)
        except ByteStoreUnavailableError:
            raise  # the store's trouble, not this image's: the caller may try again later
        except (InvalidDicomError, OSError, ValueError, EOFError, NotAnalysable, ByteStoreError):
            return None

    def _commit(self, study_id: int, ai: _AISR, uid: str, built: _Built) -> tuple[int, int]:
        """Write the file durably, then record it and queue its deliveries in one transaction;
        ``(result id, deliveries queued)``."""
        path = result_key(self.store, built.study_instance_uid, SR, uid, "dcm")
        self.store.put(path, built.data)  # same bytes on a re-run: harmless rewrite
        return store.record_verified_sr(
            self.sessions,
            study_id=study_id,
            job_id=ai.job_id,
            sop_instance_uid=uid,
            file_path=path,
            supersedes_result_id=ai.result_id,
            detail=built.detail,
            delivery_max_attempts=self.settings.delivery.max_attempts,
        )


def _agree(
    agree: bool | None, ai_label: Mapping[str, Any] | None, label: Mapping[str, Any]
) -> bool:
    """The stored verdict; for a row without one, whether the labels are the AI's."""
    if agree is not None:
        return bool(agree)
    return ai_label is not None and all(ai_label.get(k) == v for k, v in label.items())


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"hardware must be true or false, got {type(value).__name__}")
    return value


def _prediction(image: Mapping[str, Any], model: Mapping[str, Any]) -> Prediction:
    """A stored per-image prediction back as a :class:`Prediction` (for ``image_finding``).

    The heatmap is not stored (the Secondary Capture shows it) and the findings do not use it.
    """
    low, mid, high = (float(p) for p in image["count_probabilities"])
    return Prediction(
        fracture_probability=float(image["fracture_probability"]),
        decision=Decision(image["decision"]),
        count_probabilities=(low, mid, high),
        count=str(image["count"]),
        body_part=str(image["body_part"]),
        body_part_probability=float(image["body_part_probability"]),
        hardware_probability=float(image["hardware_probability"]),
        hardware=bool(image["hardware"]),
        heatmap=np.zeros((0, 0), dtype=np.float32),
        boxes=tuple(_box(box) for box in image["boxes"]),
        model_name=str(model["name"]),
        model_version=str(model["version"]),
        threshold_body_part=image.get("threshold_body_part"),
    )


def _box(values: Sequence[float]) -> tuple[float, float, float, float]:
    row0, col0, row1, col1 = (float(v) for v in values)
    return row0, col0, row1, col1


def _stored_algorithm(model: Mapping[str, Any]) -> Algorithm | None:
    """The model as the analysis stored it; None for analyses stored before the parameters
    were (their AI SR has a measurement group per image, which names them)."""
    parameters = model.get("parameters")
    if not isinstance(parameters, Mapping):
        return None
    return Algorithm(
        str(model["name"]),
        str(model["version"]),
        str(model["sha256"]),
        {str(k): str(v) for k, v in parameters.items()},
    )
