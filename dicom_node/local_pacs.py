"""A minimal storage SCP standing in for the PACS in ``make demo`` (not for production use).

It accepts the result objects xrayd sends (SR, Secondary Capture, Encapsulated PDF), writes each
to ``directory/<SOP Instance UID>.dcm`` and tells ``on_stored`` which study it belongs to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    EncapsulatedPDFStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    KeyObjectSelectionDocumentStorage,
    SecondaryCaptureImageStorage,
    Verification,
)

from dicom_node.uids import identify_ae

LOGGER = logging.getLogger(__name__)

__all__ = ["LocalPacs", "StoredObject"]


@dataclass(frozen=True)
class StoredObject:
    study_instance_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    path: Path


class LocalPacs:
    """A loopback storage SCP; ``start()`` returns the port it listens on."""

    def __init__(
        self,
        directory: Path,
        *,
        ae_title: str = "DEMO-PACS",
        on_stored: Callable[[StoredObject], None] | None = None,
    ) -> None:
        self.directory = directory
        self.ae_title = ae_title
        self.on_stored = on_stored
        self.stored: list[StoredObject] = []
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        ae = identify_ae(AE(ae_title=self.ae_title))
        for sop_class in (
            Comprehensive3DSRStorage,
            SecondaryCaptureImageStorage,
            EncapsulatedPDFStorage,
            GrayscaleSoftcopyPresentationStateStorage,
            KeyObjectSelectionDocumentStorage,
            Verification,
        ):
            ae.add_supported_context(sop_class)
        self._server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        return int(self._server.socket.getsockname()[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _store(self, event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = self.directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        item = StoredObject(
            str(ds.StudyInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID), path
        )
        with self._lock:
            self.stored.append(item)
        if self.on_stored is not None:
            self.on_stored(item)
        return 0x0000
