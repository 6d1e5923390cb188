"""xrayd's own DICOM identity: the UIDs of the objects it makes, and its implementation.

UIDs of result objects (SR, Secondary Capture, Encapsulated PDF, GSPS, KOS, their series, the
tracking and device observer UIDs inside them) are *derived*: the same parts always give the
same UID, so a resend after a crash is byte-identical and a PACS sees no duplicate.

* Without a configured root (``[node] uid_root`` left out), a UID is ``2.25.<integer>``
  (ITU-T X.667 / PS3.5 B.2): the integer of a UUID made from the first 16 bytes of the SHA-256
  of the parts, with the version and variant bits of an RFC 9562 UUIDv8 (custom, name-based).
* With a site root, a UID is ``<root>.<decimal suffix>``: the suffix is the leading digits of
  the same SHA-256 read as an integer, as many as fit in 64 characters (at least 23 with a root
  of at most 40 characters, the most :func:`config.settings.check_uid_root` allows). The suffix
  never has a leading zero.

The parts are hashed with their lengths, so ``("ab", "c")`` and ``("a", "bc")`` differ.

xrayd's Implementation Class UID (file meta of every object it writes, and the A-ASSOCIATE
user information of its associations) is ``2.25.`` of the fixed UUID
:data:`XRAYD_IMPLEMENTATION_UUID`, chosen at random once for xrayd and never to change; the
Implementation Version Name is ``XRAYD_<major>_<minor>`` of the installed package's version.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from dataclasses import dataclass
from importlib import metadata

from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE

from config.settings import check_uid_root

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "MAX_UID_LENGTH",
    "XRAYD_IMPLEMENTATION_UUID",
    "UidRoot",
    "derived_uid",
    "file_meta",
    "identify_ae",
    "implementation_version_name",
    "version_name_of",
]

MAX_UID_LENGTH = 64

#: xrayd's implementation, as a UUID: generated at random once (uuid4) and fixed for good.
XRAYD_IMPLEMENTATION_UUID = uuid.UUID("07fc46b6-9fd2-4b95-9031-7db512b9f97a")
#: ``2.25.10614489016505368805909697121534736762``
IMPLEMENTATION_CLASS_UID = f"2.25.{XRAYD_IMPLEMENTATION_UUID.int}"

_PACKAGE = "xrayd"
_MAX_VERSION_NAME = 16


def _digest(parts: tuple[str, ...]) -> bytes:
    """SHA-256 of the parts, each preceded by its UTF-8 length (unambiguous)."""
    if not parts:
        raise ValueError("a derived UID needs at least one part")
    h = hashlib.sha256(b"xrayd uid\x00")
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


def _uuid_from(digest: bytes) -> uuid.UUID:
    """An RFC 9562 UUIDv8 from the first 16 bytes of ``digest``."""
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant 10xx (RFC 9562)
    return uuid.UUID(bytes=bytes(raw))


def derived_uid(root: str | None, *parts: str) -> str:
    """The UID of ``parts`` under ``root`` (None: ``2.25.`` UUID-derived); deterministic.

    Raises ValueError for an invalid ``root`` or no parts.
    """
    digest = _digest(parts)
    if root is None:
        return f"2.25.{_uuid_from(digest).int}"
    root = check_uid_root(root)
    room = MAX_UID_LENGTH - len(root) - 1
    suffix = str(int.from_bytes(digest, "big"))[:room]  # a nonzero first digit
    return f"{root}.{suffix}"


@dataclass(frozen=True)
class UidRoot:
    """A site's root (or None: ``2.25.``) ready to derive UIDs: ``UidRoot(root)("a", "b")``."""

    root: str | None = None

    def __post_init__(self) -> None:
        if self.root is not None:
            object.__setattr__(self, "root", check_uid_root(self.root))

    def __call__(self, *parts: str) -> str:
        return derived_uid(self.root, *parts)


def version_name_of(version: str) -> str:
    """``XRAYD_<major>_<minor>`` of a version string such as ``0.1.0`` (``XRAYD`` alone when
    it has no numeric major and minor)."""
    numbers = version.split(".")[:2]
    if len(numbers) == 2 and all(n.isdigit() for n in numbers):
        name = f"XRAYD_{int(numbers[0])}_{int(numbers[1])}"
        if len(name) <= _MAX_VERSION_NAME:
            return name
    return "XRAYD"


@functools.cache
def implementation_version_name() -> str:
    """The Implementation Version Name of the installed xrayd (at most 16 characters)."""
    try:
        return version_name_of(metadata.version(_PACKAGE))
    except metadata.PackageNotFoundError:
        return "XRAYD"


def file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    """The Part 10 file meta of an object xrayd writes: explicit VR little endian, xrayd's
    Implementation Class UID and Version Name."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = implementation_version_name()
    return meta


def identify_ae(ae: AE) -> AE:
    """Make ``ae`` announce xrayd's Implementation Class UID and Version Name in its
    A-ASSOCIATE user information (instead of pynetdicom's); returns ``ae``."""
    ae.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
    ae.implementation_version_name = implementation_version_name()
    return ae
