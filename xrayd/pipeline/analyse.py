"""The analysis job: a ready study -> predictions -> SR, Secondary Captures, PDF -> outbox.

For each claimed study job: read the study's instances from the byte store (the spool, or an
S3-compatible object store: :mod:`storage.bytestore`), prepare the analysable ones (others are
recorded as "not analysed: reason"), predict in batches with the loaded bundle, store the
analysis (per-image predictions, study decision, model, timings), build the result objects,
write them durably to the byte store, record them (with their keys) and queue their deliveries
in one transaction, then wake the delivery worker.

Idempotent: the objects' UIDs depend only on the study, the set of instances analysed and the
model (the "revision"). A re-run after a crash that followed the commit finds the revision's
analysis and stops (the objects, rows and deliveries were committed together, so what was sent
stays byte-identical); a re-run after a crash before the commit rebuilds the objects under the
same UIDs. A late instance re-queues the study: the new set of instances gives a new revision,
whose SR lists the previous SR as its predecessor.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset

from dicom_node.encapsulated_pdf import build_encapsulated_pdf
from dicom_node.findings import Algorithm, ImageFinding, NotAnalysed, StudyFindings
from dicom_node.gsps import build_gsps
from dicom_node.kos import build_kos
from dicom_node.overlay import render_overlay
from dicom_node.secondary_capture import build_secondary_capture, dataset_bytes
from dicom_node.sr import build_sr, sr_bytes
from dicom_node.uids import derived_uid
from models.errors import NotAnalysable
from models.heatmap import heatmap_to_source
from models.limits import DEFAULT_LIMITS, ImageLimits
from models.loading import ReadyClassifier
from models.prediction import Prediction, aggregate_study
from models.preprocess import PreparedImage, prepare
from models.reading import read_header, read_image
from storage import analyses as store
from storage.bytestore import (
    ByteStore,
    ByteStoreError,
    ByteStoreNotFoundError,
    ByteStoreUnavailableError,
    LocalByteStore,
    key_for,
)
from storage.db import Sessions
from storage.jobs import ClaimedJob
from storage.outbox import DEFAULT_MAX_ATTEMPTS as DELIVERY_MAX_ATTEMPTS
from storage.redact import describe_exception, redact
from storage.spool import Spool, uid_sha256
from xrayd.pipeline.pdf_report import render_pdf_report
from xrayd.pipeline.predictions_to_findings import algorithm_of, image_finding, prediction_detail

LOGGER = logging.getLogger(__name__)

__all__ = ["HEATMAP", "LOCAL_KINDS", "SOFTWARE_VERSION", "StudyAnalyser", "heatmap_png"]

SOFTWARE_VERSION = "xrayd 0.1.0"
#: One series per kind in the source study (9904 is the radiologist-verified SRs').
SERIES_NUMBERS = {"sr": 9901, "sc": 9902, "pdf": 9903, "gsps": 9905, "kos": 9906}
HEATMAP = "heatmap"
HEATMAP_SIDE = 256
#: object kinds kept in the spool for xrayd itself (report PDF, heatmaps), never sent
LOCAL_KINDS = frozenset({"report", HEATMAP})
DISCLAIMER = "AI result - not a diagnosis. Research software, not for clinical use."


@dataclass(frozen=True)
class _Source:
    instance: store.SourceInstance
    header: Dataset
    prepared: PreparedImage | None
    reason: str | None


class StudyAnalyser:
    """The job step ``xrayd.workers.analysis.Worker`` runs for every ready study."""

    def __init__(
        self,
        sessions: Sessions,
        spool: Spool,
        model: Callable[[], ReadyClassifier],
        *,
        on_queued: Callable[[], None] | None = None,
        on_inference: Callable[[float, int], None] | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
        store: ByteStore | None = None,
        delivery_max_attempts: int = DELIVERY_MAX_ATTEMPTS,
        uid_root: str | None = None,
    ) -> None:
        """``store`` holds the instances and takes the result objects (default: the spool);
        ``delivery_max_attempts``: the attempts each delivery queued gets (``[delivery]
        max_attempts``); ``uid_root``: the site's root of the objects' UIDs (``[node]
        uid_root``; None: ``2.25.`` UIDs, see :mod:`dicom_node.uids`)."""
        self.sessions = sessions
        self.uid_root = uid_root
        self.delivery_max_attempts = delivery_max_attempts
        self.spool = spool
        self.store: ByteStore = store or LocalByteStore(spool)
        self.model = model
        #: what one image may cost; beyond: "not analysed: image too large", never decoded
        self.limits = limits
        self.on_queued = on_queued
        #: observes each forward pass: (seconds, images), e.g. for the metrics histogram
        self.on_inference = on_inference
        self._predict_lock = threading.Lock()  # the classifier is not thread-safe

    def _uid(self, *parts: str) -> str:
        """The UID of an object of the analysis, derived from ``parts`` (deterministic)."""
        return derived_uid(self.uid_root, *parts)

    # -- the job -------------------------------------------------------------------------------

    def analyse(self, job: ClaimedJob) -> None:
        started = time.perf_counter()
        # One model for the whole job: a switch (retraining) takes effect at the next job.
        ready = self.model()
        study = store.load_study(self.sessions, job.study_id, job.job_id)
        revision = self._revision(study, ready)
        if store.has_analysis(self.sessions, job.job_id, revision):
            # A re-run after a crash that followed the commit: the objects, their rows and
            # their deliveries were committed together; the bytes already sent stay as they are.
            LOGGER.info(
                "study %d: job %d already analysed this revision",
                study.study_id,
                job.job_id,
                extra={"job_id": job.job_id, "study_id": study.study_id},
            )
            return
        last_received = max((i.received_at for i in study.instances), default=None)
        waited = (datetime.now(UTC) - last_received).total_seconds() if last_received else 0.0
        sources = [self._read(i, ready) for i in study.instances]
        prepared_s = time.perf_counter() - started
        analysable = [s for s in sources if s.prepared is not None]
        not_analysed = tuple(
            NotAnalysed(s.instance.sop_instance_uid, s.instance.sop_class_uid, s.reason or "")
            for s in sources
            if s.prepared is None
        )
        meta = ready.model.metadata
        hints = [self._hint(s, ready) for s in analysable]
        t_infer = time.perf_counter()
        with self._predict_lock:
            predictions = ready.classifier.predict(
                [s.prepared for s in analysable if s.prepared is not None], hints
            )
        inference_s = time.perf_counter() - t_infer
        if self.on_inference is not None and analysable:
            self.on_inference(inference_s, len(analysable))
        algorithm = algorithm_of(ready.model)
        detail: dict[str, Any] = {
            "model": {
                "name": meta.name,
                "version": meta.version,
                "sha256": ready.model.info.sha256,
                "runtime": ready.runtime,
                # TID 4019 parameters: the verified SR names the model from these
                "parameters": dict(algorithm.parameters),
            },
            "images": [
                prediction_detail(s.instance.sop_instance_uid, p)
                for s, p in zip(analysable, predictions, strict=True)
            ],
            "not_analysed": [
                {"sop_instance_uid": n.sop_instance_uid, "reason": n.reason} for n in not_analysed
            ],
            "timings": {
                "received_to_started_s": round(waited, 3),
                "read_and_prepare_s": round(prepared_s, 4),
                "inference_s": round(inference_s, 4),
            },
        }
        if not predictions:
            detail["decision"] = None
            store.commit_analysis(
                self.sessions,
                study_id=study.study_id,
                job_id=job.job_id,
                worker_id=job.worker_id,
                revision=revision,
                detail=detail,
            )
            LOGGER.info(
                "study %d: nothing analysable in %d instance(s)",
                study.study_id,
                len(sources),
                extra={"job_id": job.job_id, "study_id": study.study_id},
            )
            return
        summary = aggregate_study(predictions, meta.thresholds)
        findings = StudyFindings(
            study_instance_uid=study.study_instance_uid,
            decision=summary.decision.value,
            fracture_probability=summary.fracture_probability,
            images=tuple(
                image_finding(s.instance, s.header, p)
                for s, p in zip(analysable, predictions, strict=True)
            ),
            not_analysed=not_analysed,
            algorithm=algorithm,
        )
        detail["decision"] = summary.decision.value
        detail["fracture_probability"] = summary.fracture_probability
        detail["count"] = summary.count
        detail["hardware"] = summary.hardware
        not_built: list[dict[str, Any]] = []
        objects = self._objects(
            study,
            revision,
            findings,
            sources,
            analysable,
            predictions,
            detail["timings"],
            not_built,
        )
        if not_built:
            detail["objects_not_built"] = not_built
        last = max(i.received_at for i in study.instances)
        detail["timings"]["analysis_s"] = round(time.perf_counter() - started, 4)
        detail["timings"]["received_to_analysed_s"] = round(
            (datetime.now(UTC) - last).total_seconds(), 3
        )
        queued = self._commit(study, job.job_id, job.worker_id, revision, detail, objects)
        LOGGER.info(
            "study %d analysed: %s (p=%.3f) on %d image(s), %d not analysed; %d object(s), "
            "%d deliveries queued",
            study.study_id,
            summary.decision.value,
            summary.fracture_probability,
            len(predictions),
            len(not_analysed),
            len(objects),
            queued,
            extra={"job_id": job.job_id, "study_id": study.study_id},
        )
        if queued and self.on_queued is not None:
            self.on_queued()

    # -- steps ---------------------------------------------------------------------------------

    def _read(self, instance: store.SourceInstance, ready: ReadyClassifier) -> _Source:
        try:
            # A local file for the whole read and preparation (pixel data may be read lazily);
            # from an object store it is a private temporary copy, removed on leaving.
            with self.store.fetch(instance.spool_path) as path:
                return self._read_file(instance, path, ready)
        except ByteStoreError as exc:
            if not _final(exc):
                raise  # the store is unavailable: the job fails and is retried
            if isinstance(exc, ByteStoreNotFoundError):
                reason = "cannot read the stored file: it is missing"
            else:
                reason = f"cannot read the stored file: {describe_exception(exc)}"
            return _Source(instance, Dataset(), None, reason)

    def _read_file(
        self, instance: store.SourceInstance, path: Path, ready: ReadyClassifier
    ) -> _Source:
        try:
            # The header first: an image beyond the limits is refused before its pixel data
            # is read or decoded, and a deflated one is inflated only up to its limit.
            ds = read_image(path, self.limits)
            # pydicom converts elements when first used: a corrupt one (wrong length, unknown
            # VR) would raise from prepare or _header and fail the whole study's job (fuzzing)
            ds.walk(lambda _ds, _element: None)
        except NotAnalysable as exc:
            # A final outcome, recorded like any other refusal: the job completes, no retry.
            LOGGER.warning(
                "instance %s not analysed: %s",
                uid_sha256(instance.sop_instance_uid),
                exc.reason.value,
            )
            return _Source(instance, _bare_header(path, self.limits), None, redact(str(exc)))
        except Exception as exc:  # pydicom: ValueError, BytesLengthException, NotImplementedError..
            reason = f"cannot read the stored file: {describe_exception(exc)}"
            return _Source(instance, Dataset(), None, reason)
        try:
            prepared = prepare(ds, ready.model.metadata.preprocess, limits=self.limits)
        except NotAnalysable as exc:
            # stored, shown and put in the SR: a value quoted from the data set stays out
            return _Source(instance, _header(ds), None, redact(str(exc)))
        return _Source(instance, _header(ds), prepared, None)

    def _hint(self, source: _Source, ready: ReadyClassifier) -> str | None:
        part = (source.instance.body_part_examined or "").lower()
        return part if part in ready.model.metadata.body_parts else None

    def _revision(self, study: store.StudyToAnalyse, ready: ReadyClassifier) -> str:
        blob = "\n".join(
            [
                study.study_instance_uid,
                ready.model.info.sha256,
                *sorted(i.sop_instance_uid for i in study.instances),
            ]
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _objects(
        self,
        study: store.StudyToAnalyse,
        revision: str,
        findings: StudyFindings,
        sources: Sequence[_Source],
        analysable: Sequence[_Source],
        predictions: Sequence[Prediction],
        timings: dict[str, float],
        not_built: list[dict[str, Any]],
    ) -> list[tuple[str, str, str, bytes, dict[str, Any]]]:
        """(kind, SOP Instance UID, spool path, bytes, detail) of every object, built."""
        when = study.job_created_at
        headers = [s.header for s in sources if s.prepared is not None] + [
            s.header for s in sources if s.prepared is None and len(s.header)
        ]
        series = {
            k: self._uid(study.study_instance_uid, revision, k, "series") for k in SERIES_NUMBERS
        }
        algorithm = findings.algorithm
        out: list[tuple[str, str, str, bytes, dict[str, Any]]] = []
        previous = store.latest_object(
            self.sessions, study.study_id, "sr", excluding_job=study.job_id
        )
        predecessor = None
        if previous is not None and previous.sop_instance_uid is not None:
            predecessor = [
                (
                    study.study_instance_uid,
                    str(previous.detail.get("series_instance_uid", "")),
                    str(previous.detail.get("sop_class_uid", "")),
                    previous.sop_instance_uid,
                )
            ]
        sr_uid = self._uid(study.study_instance_uid, revision, "sr")
        sr = build_sr(
            findings,
            headers,
            sop_instance_uid=sr_uid,
            series_instance_uid=series["sr"],
            series_number=SERIES_NUMBERS["sr"],
            instance_number=1,
            content_datetime=when,
            software_version=SOFTWARE_VERSION,
            predecessor=predecessor,
            uid_root=self.uid_root,
        )
        out.append(
            (
                "sr",
                sr_uid,
                self._path(study, "sr", sr_uid, "dcm"),
                sr_bytes(sr),
                {
                    "series_instance_uid": series["sr"],
                    "sop_class_uid": str(sr.SOPClassUID),
                    "revision": revision,
                    "predecessor": predecessor[0][3] if predecessor else None,
                },
            )
        )
        thumbnails: list[tuple[str, np.ndarray]] = []
        for n, (source, prediction) in enumerate(zip(analysable, predictions, strict=True), 1):
            assert source.prepared is not None
            finding = findings.images[n - 1]
            # Full-resolution arrays (a long-leg DX: 119 M pixels) are made one after the other
            # and dropped once used, so no two of them need to be held at the same time.
            heat = heatmap_to_source(prediction.heatmap, source.prepared.geometry)
            heat_png = heatmap_png(heat)
            # render_overlay draws per overlay_style: no heatmap and no box for an "absent"
            # result (in a viewer they read as a finding), only the banner and its legend (the
            # heatmap PNG is still kept for the review screen).
            rgb = render_overlay(
                np.asarray(source.prepared.display),
                heat,
                finding.boxes,
                [
                    f"AI fracture: {finding.decision.upper()} "
                    f"(p={finding.fracture_probability:.2f})"
                    f"  count {finding.count}  {finding.body_part}"
                    f"{'  hardware' if finding.hardware else ''}",
                    f"Model {algorithm.name} {algorithm.version}",
                    DISCLAIMER,
                ],
                decision=finding.decision,
            )
            del heat
            uid = self._uid(
                study.study_instance_uid, revision, "sc", source.instance.sop_instance_uid
            )
            sc = build_secondary_capture(
                source.header,
                rgb,
                sop_instance_uid=uid,
                series_instance_uid=series["sc"],
                series_number=SERIES_NUMBERS["sc"],
                instance_number=n,
                content_datetime=when,
                algorithm=algorithm,
                software_version=SOFTWARE_VERSION,
            )
            sc_bytes = dataset_bytes(sc)
            del sc
            out.append(
                (
                    "sc",
                    uid,
                    self._path(study, "sc", uid, "dcm"),
                    sc_bytes,
                    {
                        "series_instance_uid": series["sc"],
                        "revision": revision,
                        "source_sop_instance_uid": source.instance.sop_instance_uid,
                    },
                )
            )
            thumbnails.append((f"image {n}: {finding.decision}", _thumbnail(rgb)))
            del rgb
            try:
                out.append(
                    self._gsps(study, revision, series["gsps"], n, finding, source, algorithm)
                )
            except Exception as exc:  # a header highdicom refuses: the other objects still go
                self._not_built(not_built, "gsps", n, exc)
            heat_uid = self._uid(
                study.study_instance_uid, revision, "heatmap", source.instance.sop_instance_uid
            )
            out.append(
                (
                    HEATMAP,
                    heat_uid,
                    self._path(study, HEATMAP, heat_uid, "png"),
                    heat_png,
                    {
                        "revision": revision,
                        "source_sop_instance_uid": source.instance.sop_instance_uid,
                    },
                )
            )
        kos_uid = self._uid(study.study_instance_uid, revision, "kos")
        try:
            kos = build_kos(
                findings,
                headers,
                sop_instance_uid=kos_uid,
                series_instance_uid=series["kos"],
                series_number=SERIES_NUMBERS["kos"],
                instance_number=1,
                content_datetime=when,
                algorithm=algorithm,
                software_version=SOFTWARE_VERSION,
                uid_root=self.uid_root,
            )
        except Exception as exc:  # as for the GSPS: the SR and the captures still go
            self._not_built(not_built, "kos", None, exc)
            kos = None
        if kos is not None:  # only when the AI flags an image (present or indeterminate)
            out.append(
                (
                    "kos",
                    kos_uid,
                    self._path(study, "kos", kos_uid, "dcm"),
                    dataset_bytes(kos),
                    {"series_instance_uid": series["kos"], "revision": revision},
                )
            )
        header = headers[0]
        pdf = render_pdf_report(
            findings,
            thumbnails,
            study_description=str(header.get("StudyDescription", "") or "Radiograph"),
            patient_label=str(header.get("PatientID", "")),
            timings={
                "last image received -> analysis started (s)": timings["received_to_started_s"],
                "reading and preprocessing (s)": timings["read_and_prepare_s"],
                "inference (s)": timings["inference_s"],
            },
            generated_at=when,
        )
        pdf_uid = self._uid(study.study_instance_uid, revision, "pdf")
        out.append(
            (
                "report",
                pdf_uid,
                self._path(study, "report", pdf_uid, "pdf"),
                pdf,
                {"revision": revision},
            )
        )
        epdf = build_encapsulated_pdf(
            headers,
            pdf,
            sop_instance_uid=self._uid(pdf_uid, "dicom"),
            series_instance_uid=series["pdf"],
            series_number=SERIES_NUMBERS["pdf"],
            instance_number=1,
            content_datetime=when,
            title="xrayd AI fracture triage report (not a diagnosis)",
            algorithm=algorithm,
            software_version=SOFTWARE_VERSION,
        )
        epdf_uid = str(epdf.SOPInstanceUID)
        out.append(
            (
                "pdf",
                epdf_uid,
                self._path(study, "pdf", epdf_uid, "dcm"),
                dataset_bytes(epdf),
                {"series_instance_uid": series["pdf"], "revision": revision},
            )
        )
        return out

    def _not_built(
        self, record: list[dict[str, Any]], kind: str, image: int | None, exc: Exception
    ) -> None:
        """An optional object (presentation state, KOS) that could not be built from these
        headers: logged (no identifiers) and listed in the analysis detail, not fatal: the SR,
        the captures and the report are the result; a study must not lose them for an extra."""
        reason = describe_exception(exc)
        LOGGER.warning(
            "%s of image %s not built: %s", kind, "-" if image is None else image, reason
        )
        record.append({"kind": kind, "image": image, "reason": reason})

    def _gsps(
        self,
        study: store.StudyToAnalyse,
        revision: str,
        series_uid: str,
        number: int,
        finding: ImageFinding,
        source: _Source,
        algorithm: Algorithm,
    ) -> tuple[str, str, str, bytes, dict[str, Any]]:
        """The presentation state of one analysed image: its boxes and result over it."""
        uid = self._uid(
            study.study_instance_uid, revision, "gsps", source.instance.sop_instance_uid
        )
        gsps = build_gsps(
            finding,
            source.header,
            sop_instance_uid=uid,
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBERS["gsps"],
            instance_number=number,
            content_datetime=study.job_created_at,
            algorithm=algorithm,
            software_version=SOFTWARE_VERSION,
        )
        return (
            "gsps",
            uid,
            self._path(study, "gsps", uid, "dcm"),
            dataset_bytes(gsps),
            {
                "series_instance_uid": series_uid,
                "revision": revision,
                "source_sop_instance_uid": source.instance.sop_instance_uid,
            },
        )

    def _path(self, study: store.StudyToAnalyse, kind: str, uid: str, ext: str) -> str:
        return result_key(self.store, study.study_instance_uid, kind, uid, ext)

    def _commit(
        self,
        study: store.StudyToAnalyse,
        job_id: int,
        worker_id: str | None,
        revision: str,
        detail: dict[str, Any],
        objects: Sequence[tuple[str, str, str, bytes, dict[str, Any]]],
    ) -> int:
        if store.has_analysis(self.sessions, job_id, revision):
            # another worker (this job's lease was lost meanwhile) committed this revision:
            # its files may be sent already; nothing is rewritten
            LOGGER.warning(
                "study %d: job %d was committed by another worker meanwhile",
                study.study_id,
                job_id,
                extra={"job_id": job_id, "study_id": study.study_id},
            )
            return 0
        for _, _, path, data, _ in objects:
            self.store.put(path, data)  # same bytes on a re-run: harmless rewrite
        return store.commit_analysis(
            self.sessions,
            study_id=study.study_id,
            job_id=job_id,
            worker_id=worker_id,
            revision=revision,
            detail=detail,
            objects=[
                store.NewObject(
                    kind,
                    uid,
                    path,
                    extra,
                    predecessor_sop_instance_uid=(
                        str(extra["predecessor"])
                        if kind == "sr" and extra.get("predecessor")
                        else None
                    ),
                    # The PDF file itself stays here ("pdf" is its DICOM form), and so do the
                    # heatmaps (for the web viewer; the SC carries them to the PACS).
                    send=kind not in LOCAL_KINDS,
                )
                for kind, uid, path, _, extra in objects
            ],
            delivery_max_attempts=self.delivery_max_attempts,
        )


def result_path(study_instance_uid: str, kind: str, uid: str, ext: str) -> str:
    """Where a result object of the study lies in the spool (relative path)."""
    h = uid_sha256(study_instance_uid)
    return f"results/{h[:2]}/{h}/{kind}-{uid}.{ext}"


def result_key(
    byte_store: ByteStore, study_instance_uid: str, kind: str, uid: str, ext: str
) -> str:
    """The key of a result object in ``byte_store``: in the spool today's path
    (:func:`result_path`, unchanged layout), in any other store
    ``key_for("result", ...)``, whose parts are all hashes (no UID in an object name)."""
    if isinstance(byte_store, LocalByteStore):
        return result_path(study_instance_uid, kind, uid, ext)
    return key_for("result", study_instance_uid, kind, uid, ext)


def _final(exc: ByteStoreError) -> bool:
    """Whether a store error is about this object (missing, refused key, corrupt), so retrying
    cannot help; the others (unavailable, denied) are the store's and fail the job."""
    return not isinstance(exc, ByteStoreUnavailableError)


def _bare_header(path: Path, limits: ImageLimits) -> Dataset:
    """The header of an image refused before it was read (empty if even that fails)."""
    try:
        return _header(read_header(path, limits))
    except Exception:  # NotAnalysable, or anything pydicom raises for a corrupt element
        return Dataset()


def _header(ds: Dataset) -> Dataset:
    """``ds`` without its pixel data (the builders need only the header)."""
    header = Dataset()
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    for element in ds:
        if element.tag.group != 0x7FE0:
            header.add(element)
    return header


def heatmap_png(heat: np.ndarray, side: int = HEATMAP_SIDE) -> bytes:
    """The heatmap (values 0..1 in source geometry) as an 8-bit greyscale PNG, at most
    ``side`` pixels on its long side (the web viewer colours and scales it)."""
    grey = np.empty(heat.shape, dtype=np.uint8)
    band = max(1, (1 << 21) // max(1, heat.shape[-1]))
    for row in range(0, heat.shape[0], band):  # a band at a time: no full-size float copies
        values = np.clip(np.nan_to_num(np.asarray(heat[row : row + band], np.float32)), 0.0, 1.0)
        grey[row : row + band] = values * 255.0 + 0.5
    image = Image.fromarray(grey, mode="L")
    del grey
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _thumbnail(rgb: np.ndarray, side: int = 512) -> np.ndarray:
    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(image)
