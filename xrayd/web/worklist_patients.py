"""The worklist's patient columns (name, patient ID, accession, exam), read from the stored
images' headers: by design the database holds no patient data (:mod:`storage.schema`).

Only the rows on the page are read, each once: a bounded LRU cache per app, keyed by the byte
store key (immutable: made from hashes of the UIDs and content). Nothing read here is logged.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import Request

from models.errors import NotAnalysable
from models.limits import ImageLimits
from models.reading import read_header
from storage.bytestore import ByteStore, ByteStoreError
from storage.worklist import WorklistItem
from xrayd.runtime.limits import image_limits
from xrayd.web.auth import context
from xrayd.web.formats import person_name

__all__ = ["HeaderCache", "PatientColumns", "patient_columns"]

LOGGER = logging.getLogger(__name__)
#: worklist rows whose header columns are kept in memory (a few hundred bytes each)
CACHE_SIZE = 4096
TAGS = ("PatientName", "PatientID", "AccessionNumber", "StudyDescription", "BodyPartExamined")
_CREATE_LOCK = threading.Lock()


@dataclass(frozen=True)
class PatientColumns:
    """What the worklist shows of a study's patient and exam (page only, never logged)."""

    name: str  # "Family, Given Middle" from the DICOM person name
    patient_id: str
    accession: str
    exam: str  # Study Description, else Body Part Examined

    @property
    def empty(self) -> bool:
        return not (self.name or self.patient_id or self.accession or self.exam)


class HeaderCache:
    """A bounded, thread-safe LRU map from byte store key to :class:`PatientColumns`."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, PatientColumns] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get(self, key: str) -> PatientColumns | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: str, value: PatientColumns) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _read(store: ByteStore, key: str, limits: ImageLimits) -> PatientColumns:
    with store.fetch(key) as path:
        ds = read_header(path, limits, specific_tags=TAGS)
    description = str(ds.get("StudyDescription", "") or "").strip()
    body_part = str(ds.get("BodyPartExamined", "") or "").strip()
    return PatientColumns(
        name=person_name(str(ds.get("PatientName", "") or "")),
        patient_id=str(ds.get("PatientID", "") or "").strip(),
        accession=str(ds.get("AccessionNumber", "") or "").strip(),
        exam=description or body_part,
    )


def cache_of(request: Request) -> HeaderCache:
    """The app's cache (made on first use; one per app, so two apps never share keys)."""
    state = request.app.state
    cache: HeaderCache | None = getattr(state, "worklist_headers", None)
    if cache is None:
        with _CREATE_LOCK:
            cache = getattr(state, "worklist_headers", None)
            if cache is None:
                cache = HeaderCache()
                state.worklist_headers = cache
    return cache


def patient_columns(request: Request, items: Iterable[WorklistItem]) -> dict[int, PatientColumns]:
    """Per study id of ``items``, its patient columns; a study whose image cannot be read is
    left out (the page shows its study id instead), and logged by internal ids alone."""
    ctx = context(request)
    cache = cache_of(request)
    limits = image_limits(ctx.settings.limits)
    store: ByteStore | None = None
    found: dict[int, PatientColumns] = {}
    for item in items:
        key = item.first_instance_key
        if key is None:
            continue
        columns = cache.get(key)
        if columns is None:
            store = store or ctx.byte_store()
            try:
                columns = _read(store, key, limits)
            except (OSError, ValueError, NotAnalysable, ByteStoreError) as exc:
                LOGGER.warning(
                    "worklist: stored image header unreadable: %s",
                    type(exc).__name__,
                    extra={"study_id": item.study_id},
                )
                continue
            cache.put(key, columns)
        found[item.study_id] = columns
    return found
