"""Named DIMSE statuses (PS3.4 Annex B, PS3.7 Annex C): no handler returns a bare hex literal."""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses xrayd answers with."""

    SUCCESS = 0x0000
    #: Refused: Out of Resources — disk full, write failed, below the free-space low-water mark.
    OUT_OF_RESOURCES = 0xA700
    #: Error: Data Set does not match SOP Class — UIDs disagree with the request or are invalid.
    DATASET_MISMATCH = 0xA900
    #: Error: Cannot understand — the data set could not be parsed.
    CANNOT_UNDERSTAND = 0xC000
    #: Failure: SOP class not supported (normally refused at negotiation already).
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    #: Failure: Processing failure — an unexpected error while storing (logged with a trace).
    PROCESSING_FAILURE = 0x0110


class RejectReason(IntEnum):
    """Why an association was rejected (for logs and audit events; not a wire value)."""

    CALLING_AE_NOT_RECOGNISED = 1
    CALLED_AE_NOT_RECOGNISED = 2
    HOST_NOT_ALLOWED = 3
    TOO_MANY_ASSOCIATIONS = 4
    #: the spool's free space is below its low-water mark (transient: retry later)
    LOW_DISK_SPACE = 5

    @property
    def wire(self) -> tuple[int, int, int]:
        """(result, source, diagnostic) of the A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
        return {
            RejectReason.CALLING_AE_NOT_RECOGNISED: (0x01, 0x01, 0x03),
            RejectReason.CALLED_AE_NOT_RECOGNISED: (0x01, 0x01, 0x07),
            # No dedicated reason for a disallowed address exists; "calling AE not recognised"
            # is what DCMTK and Orthanc answer too.
            RejectReason.HOST_NOT_ALLOWED: (0x01, 0x01, 0x03),
            RejectReason.TOO_MANY_ASSOCIATIONS: (0x02, 0x03, 0x02),
            # rejected-transient, service-provider (presentation), local-limit-exceeded
            RejectReason.LOW_DISK_SPACE: (0x02, 0x03, 0x02),
        }[self]

    @property
    def slug(self) -> str:
        return self.name.lower()
