"""Where the bytes of images and results live: one small interface, two implementations.

:class:`ByteStore` is all the rest of xrayd needs: ``put``/``put_file`` (durable when they
return), ``get``, ``fetch`` (a local file to read), ``exists``, ``size``, ``delete``.

Operators' tools use three more: ``check`` (can the store be used now: ``/ready``),
``list_objects`` (what is stored under a prefix: the sweep of unreferenced objects) and
``delete_if_older`` (delete only what was not written again since a cut-off: the sweep).

* :class:`LocalByteStore` is today's spool (:class:`storage.spool.Spool`): a key is the
  spool-relative path, written with ``fsync`` of file and directory and an atomic rename.
* :class:`S3ByteStore` is any S3-compatible object store (MinIO, Ceph RGW, SeaweedFS, AWS), for
  sites whose workers run on other hosts. ``put``/``put_file`` return only after the server
  answered 200 to the whole object (``PutObject``, or ``CompleteMultipartUpload`` after every
  part), each request carrying the ``Content-MD5`` of its body, which S3 servers verify: a
  truncated or altered body is refused (``BadDigest``) and nothing is stored. ``put_file``
  then reads the stored size back (``HeadObject``).

Keys are made by :func:`key_for` from SHA-256 hashes of identifiers, never from raw UIDs; the
instance layout is the spool's own, so a local key is today's spool path. Store once, then pass
keys (in jobs, rows), never bytes.

Errors are :class:`ByteStoreError` (a :class:`storage.errors.StorageError`): not found,
unavailable (network, timeouts, credentials, a missing bucket) and integrity. Messages name the
key (hash-like) and the endpoint and bucket, never credentials.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from config.errors import ConfigError
from storage.errors import NotFoundError, SpoolWriteError, StorageError
from storage.spool import OBJECTS_DIR, PART_SUFFIX, TMP_DIR, Spool, uid_sha256

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from config.settings import ObjectStoreSettings

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: S3 refuses parts below 5 MiB (except the last) and objects of more than 10,000 parts.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000
MAX_KEY_BYTES = 1024
#: S3's "safe" key characters (letters, digits, ``!-_.*'()``) and ``/`` between segments.
_KEY = re.compile(r"[A-Za-z0-9!_.*'()/-]+")
#: seconds check() waits for the answer (its connection gets the store's connect timeout)
_PROBE_READ_TIMEOUT = 5.0
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ByteStoreError(StorageError):
    """A byte store could not do what was asked; the message names key and store.

    ``reason`` is the cause alone, without store or key (e.g. "the bucket does not exist"),
    for answers to callers who may not see where the store is (``/ready``)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class InvalidKeyError(ByteStoreError, ValueError):
    """A key that no store accepts (absolute, ``..``, empty segments, unsafe characters)."""


class ByteStoreNotFoundError(ByteStoreError, NotFoundError):
    """No object under this key."""


class ByteStoreUnavailableError(ByteStoreError):
    """The store cannot be used now: network, timeout, server error, full disk, no bucket."""


class ByteStoreDeniedError(ByteStoreUnavailableError):
    """The store refused our credentials (wrong key or secret, clock skew, no permission)."""


class ByteStoreIntegrityError(ByteStoreError):
    """The bytes that arrived are not the bytes that were sent; nothing was stored."""


class ByteStore(Protocol):
    """Bytes under keys. Every method may raise :class:`ByteStoreError`."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (replacing it); durable when this returns."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at ``path`` under ``key``, streamed (never read whole into memory)."""

    def get(self, key: str) -> bytes:
        """The whole object (for small objects; use :meth:`fetch` for images)."""
        ...

    def fetch(self, key: str) -> AbstractContextManager[Path]:
        """A local file holding the object, for the duration of the ``with`` block."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int: ...

    def delete(self, key: str) -> None:
        """Remove the object; no error when it is already gone."""

    def describe(self) -> str:
        """Where the bytes go, for logs and status pages (no credentials)."""
        ...

    def check(self) -> None:
        """Raise :class:`ByteStoreUnavailableError` (:class:`ByteStoreDeniedError` for refused
        credentials) when the store cannot be used now. Only reads: anyone may make it run."""

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with ``prefix`` ("" or e.g. ``"objects/"``), read as
        it is iterated (never the whole listing in memory); S3 lists in key order, the spool
        directory by directory."""
        ...

    def delete_if_older(self, key: str, cutoff: datetime) -> int | None:
        """Delete the object only if it was last written at or before ``cutoff``; the bytes
        freed, or None when it was written since (kept) or is gone."""
        ...


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it: its key, size and last write (aware, UTC)."""

    key: str
    size: int
    modified: datetime


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is "" or a key, or a key followed by "/"; else :class:`InvalidKeyError`."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


def check_key(key: str) -> str:
    """``key`` if every store accepts it, else :class:`InvalidKeyError` (not echoing it)."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("invalid key: empty")
    if not _KEY.fullmatch(key):
        raise InvalidKeyError("invalid key: only letters, digits, /, and !-_.*'() are allowed")
    if key.startswith("/") or key.endswith("/"):
        raise InvalidKeyError("invalid key: it must be relative and name an object")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKeyError("invalid key: empty, '.' or '..' path segment")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"invalid key: longer than {MAX_KEY_BYTES} bytes")
    return key


def key_for(kind: str, *parts: str) -> str:
    """The key of an object, made from SHA-256 hashes of its identifiers.

    * ``key_for("instance", study_uid, sop_uid)`` and ``key_for("instance", study_uid,
      sop_uid, content_sha256)``: exactly :meth:`Spool.relative_path_for`, i.e.
      ``objects/<aa>/<bb>/<sha256(study)>/<sha256(sop)>.dcm`` (with the content digest:
      ``<first 40 hex of sha256(sop)>-<first 16 hex of the digest>.dcm``).
    * ``key_for("result", study_uid, name, uid, ext)``:
      ``results/<aa>/<sha256(study)>/<name>-<sha256(uid)>.<ext>`` (``name`` such as ``sr``,
      ``ext`` such as ``dcm``: short plain words).
    """
    if kind == "instance" and len(parts) in (2, 3):
        study, sop = uid_sha256(parts[0]), uid_sha256(parts[1])
        if len(parts) == 2:
            name = f"{sop}.dcm"
        else:
            digest = parts[2].lower()
            if not _HEX64.fullmatch(digest):
                raise InvalidKeyError("invalid key: a content digest must be 64 hex digits")
            name = f"{sop[:40]}-{digest[:16]}.dcm"
        return f"{OBJECTS_DIR}/{study[:2]}/{study[2:4]}/{study}/{name}"
    if kind == "result" and len(parts) == 4:
        study_uid, name, uid, ext = parts
        if not (_NAME.fullmatch(name) and _NAME.fullmatch(ext)):
            raise InvalidKeyError("invalid key: result name and extension must be plain words")
        study = uid_sha256(study_uid)
        return f"results/{study[:2]}/{study}/{name}-{uid_sha256(uid)}.{ext}"
    raise InvalidKeyError(f"invalid key: no key layout for {kind!r} with {len(parts)} parts")


# -- the spool -----------------------------------------------------------------------------


class LocalByteStore:
    """The spool as a byte store: keys are spool-relative paths (one host only)."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def describe(self) -> str:
        return f"local spool {self._spool.root}"

    def _path(self, key: str) -> Path:
        check_key(key)
        try:
            return self._spool.absolute(key)
        except StorageError as exc:
            raise InvalidKeyError(f"invalid key: {exc}") from None

    def put(self, key: str, data: bytes) -> None:
        self._path(key)
        try:
            self._spool.write_atomic(key, data)
        except SpoolWriteError as exc:
            raise ByteStoreUnavailableError(f"{self.describe()}: put {key}: {exc}") from exc

    def put_file(self, key: str, path: Path) -> None:
        self._path(key)
        try:
            with path.open("rb") as fh:
                self._spool.write_atomic(key, iter(lambda: fh.read(_CHUNK), b""))
        except SpoolWriteError as exc:
            raise ByteStoreUnavailableError(f"{self.describe()}: put {key}: {exc}") from exc
        except OSError as exc:  # the source file
            reason = exc.strerror or type(exc).__name__
            what = f"{self.describe()}: put {key}: cannot read the source file: {reason}"
            raise ByteStoreError(what) from None

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            raise self._unavailable("get", key, exc) from exc

    @contextlib.contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise self._missing(key)
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            if path.is_file():
                return path.stat().st_size
        except OSError as exc:
            raise self._unavailable("size", key, exc) from exc
        raise self._missing(key)

    def delete(self, key: str) -> None:
        self._path(key)
        try:
            self._spool.remove(key)
        except OSError as exc:
            raise self._unavailable("delete", key, exc) from exc

    # -- operators' tools -------------------------------------------------------------------

    def check(self) -> None:
        """The spool's root is a directory (whether it can be written is the spool's own
        check); nothing is created."""
        if not self._spool.root.is_dir():
            reason = "the spool directory is missing"
            raise ByteStoreUnavailableError(f"{self.describe()}: check: {reason}", reason=reason)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """The regular files under ``prefix``, directory by directory in name order; the
        spool's ``tmp/``, links, and names no key could have are left out."""
        check_prefix(prefix)
        folder = prefix.rpartition("/")[0]
        if folder.split("/")[0] == TMP_DIR:
            return
        start = self._spool.root / folder if folder else self._spool.root
        yield from self._walk(start, folder, prefix)

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[StoredObject]:
        try:
            with os.scandir(directory) as found:
                entries = sorted(found, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._unavailable("list", prefix or "(all)", exc) from exc
        for entry in entries:
            key = f"{rel}/{entry.name}" if rel else entry.name
            if key == TMP_DIR:
                continue
            if entry.is_dir(follow_symlinks=False):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk(Path(entry.path), key, prefix)
                continue
            if not key.startswith(prefix) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                check_key(key)
                info = entry.stat(follow_symlinks=False)
            except (InvalidKeyError, FileNotFoundError):
                continue
            if stat.S_ISREG(info.st_mode):
                yield StoredObject(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def delete_if_older(self, key: str, cutoff: datetime) -> int | None:
        """Rename the file aside (into ``tmp/``, atomically), then look at what was taken: a
        file written at or before ``cutoff`` is deleted; one written since (a retransmission
        installed between the caller's listing and now) is put back. A file installed after
        the rename is a new one, and stays."""
        path = self._path(key)
        try:
            aside = self._spool.tmp_dir() / f"sweep-{os.urandom(8).hex()}{PART_SUFFIX}"
            path.rename(aside)
        except FileNotFoundError:
            return None
        except (OSError, SpoolWriteError) as exc:
            raise ByteStoreUnavailableError(f"{self.describe()}: delete {key}: {exc}") from exc
        try:
            info = aside.stat()
            if datetime.fromtimestamp(info.st_mtime, UTC) > cutoff:
                # written again: put back (over a copy installed meanwhile: the same bytes,
                # since keys name their content)
                aside.replace(path)
                return None
            aside.unlink()
        except OSError as exc:
            raise self._unavailable("delete", key, exc) from exc
        parent = path.parent
        if parent.parent != self._spool.root and parent != self._spool.root:
            with contextlib.suppress(OSError):  # not empty, or already gone
                parent.rmdir()
        return info.st_size

    def _missing(self, key: str) -> ByteStoreNotFoundError:
        return ByteStoreNotFoundError(f"{self.describe()}: no object {key}")

    def _unavailable(self, op: str, key: str, exc: OSError) -> ByteStoreUnavailableError:
        reason = exc.strerror or type(exc).__name__
        return ByteStoreUnavailableError(f"{self.describe()}: {op} {key}: {reason}")


# -- S3 --------------------------------------------------------------------------------------

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {
    "403",
    "AccessDenied",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "InvalidToken",
    "AuthorizationHeaderMalformed",
}
_INTEGRITY = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "IncompleteBody"}


class _FileWindow:
    """``length`` bytes of an open file from ``start``, as a seekable body for botocore.

    Read with ``os.pread`` (no shared file position); position 0 is ``start``, so botocore's
    rewind before a retry (``seek(0)``) starts the part again.
    """

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd, self._start, self._length, self._pos = fd, start, length, 0

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._pos
        count = remaining if size is None or size < 0 else min(size, remaining)
        if count <= 0:
            return b""
        data = os.pread(self._fd, count, self._start + self._pos)
        if not data:
            raise OSError("the file became shorter while it was being uploaded")
        self._pos += len(data)
        return data

    def io(self) -> IO[bytes]:
        """This window, typed as the file object botocore takes (it needs only read, seek,
        tell and len)."""
        return cast("IO[bytes]", self)

    def md5(self) -> str:
        """Base64 MD5 of the whole window (the ``Content-MD5`` header); rewinds."""
        digest = hashlib.md5(usedforsecurity=False)
        self.seek(0)
        while block := self.read(_CHUNK):
            digest.update(block)
        self.seek(0)
        return base64.b64encode(digest.digest()).decode("ascii")


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def _public_endpoint(endpoint_url: str | None, region: str) -> str:
    if endpoint_url is None:
        return f"AWS S3 ({region})"
    parts = urlsplit(endpoint_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"  # no user info, path or query


class S3ByteStore:
    """Objects in one bucket of an S3-compatible server, under ``prefix``.

    ``endpoint_url`` None means AWS S3 in ``region``; other endpoints are addressed path-style
    (``https://host/bucket/key``), which every S3-compatible server supports. With neither
    ``access_key_id`` nor ``secret_access_key`` the SDK's default credentials are used (an
    instance role, ``AWS_*`` environment). ``verify`` is True, False or a CA bundle path.
    Retries (``max_attempts`` in all, botocore's "standard" mode) and both timeouts bound how
    long any call can take when the server is gone. The client is safe to share by threads.
    """

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        prefix: str = "",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        verify: bool | str | Path = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        part_size: int = 16 * 1024 * 1024,
        tmp_dir: Path | None = None,
    ) -> None:
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        if prefix:
            check_key(prefix.rstrip("/"))
            prefix = prefix.rstrip("/") + "/"
        self._bucket = bucket
        self._prefix = prefix
        self._part_size = max(MIN_PART_SIZE, part_size)
        self._tmp_dir = tmp_dir
        self._where = f"{_public_endpoint(endpoint_url, region)} bucket {bucket}"
        path_style = endpoint_url is not None and not (
            (urlsplit(endpoint_url).hostname or "").endswith(".amazonaws.com")
        )
        config = Config(
            region_name=region,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if path_style else "auto"},
            # We send Content-MD5 ourselves, the check every S3 API has had from the start;
            # the SDK's default since 1.36 (x-amz-checksum-crc32, over HTTPS in an aws-chunked
            # trailer) is refused by several S3-compatible servers. A response that carries a
            # full-object checksum is still verified.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_supported",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key
        )
        self._client: S3Client = session.client(
            "s3",
            endpoint_url=endpoint_url,
            verify=str(verify) if isinstance(verify, Path) else verify,
            config=config,
        )
        # check()'s client: one try, a short read (a probe that is retried hides nothing and
        # keeps a load balancer waiting); made at the first check
        self._probe_options: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "verify": str(verify) if isinstance(verify, Path) else verify,
            "config": config.merge(
                Config(
                    read_timeout=min(read_timeout, _PROBE_READ_TIMEOUT),
                    retries={"total_max_attempts": 1, "mode": "standard"},
                )
            ),
        }
        self._session = session
        self._probe_client: S3Client | None = None
        self._probe_lock = threading.Lock()

    def describe(self) -> str:
        prefix = f" prefix {self._prefix}" if self._prefix else ""
        return f"S3 {self._where}{prefix}"

    def _key(self, key: str) -> str:
        full = self._prefix + check_key(key)
        if len(full.encode()) > MAX_KEY_BYTES:
            raise InvalidKeyError(f"invalid key: longer than {MAX_KEY_BYTES} bytes with prefix")
        return full

    # -- writing -----------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        name = self._key(key)
        with self._errors("put", key):
            self._client.put_object(Bucket=self._bucket, Key=name, Body=data, ContentMD5=_md5(data))

    def put_file(self, key: str, path: Path) -> None:
        name = self._key(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            what = f"{self.describe()}: put {key}: cannot read the source file: {reason}"
            raise ByteStoreError(what) from None
        try:
            size = os.fstat(fd).st_size
            with self._errors("put", key):
                if size <= self._part_size:
                    body = _FileWindow(fd, 0, size)
                    self._client.put_object(
                        Bucket=self._bucket, Key=name, Body=body.io(), ContentMD5=body.md5()
                    )
                else:
                    self._multipart(name, key, fd, size)
                # the server's own account of what it now holds
                stored = self._client.head_object(Bucket=self._bucket, Key=name)
            if stored["ContentLength"] != size:
                raise ByteStoreIntegrityError(
                    f"{self.describe()}: put {key}: stored {stored['ContentLength']} bytes "
                    f"of {size}"
                )
        finally:
            os.close(fd)

    def _multipart(self, name: str, key: str, fd: int, size: int) -> None:
        part_size = max(self._part_size, -(-size // MAX_PARTS))
        upload = self._client.create_multipart_upload(Bucket=self._bucket, Key=name)
        upload_id = upload["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            for number, start in enumerate(range(0, size, part_size), start=1):
                body = _FileWindow(fd, start, min(part_size, size - start))
                answer = self._client.upload_part(
                    Bucket=self._bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body.io(),
                    ContentMD5=body.md5(),
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=name, UploadId=upload_id
                )
            logger.warning("multipart upload aborted", extra={"key": key})
            raise

    def delete(self, key: str) -> None:
        name = self._key(key)
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=name)

    # -- reading -----------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        name = self._key(key)
        with self._errors("get", key):
            answer = self._client.get_object(Bucket=self._bucket, Key=name)
            data = answer["Body"].read()  # botocore checks the length it was promised
        return data

    @contextlib.contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        name = self._key(key)
        with self._errors("fetch", key):
            body = self._client.get_object(Bucket=self._bucket, Key=name)["Body"]
            try:  # mode 0600: ours alone
                if self._tmp_dir is not None:
                    self._tmp_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix="xrayd-", suffix=".fetch", dir=self._tmp_dir)
            except OSError:
                body.close()
                raise
        path = Path(tmp)
        try:
            with self._errors("fetch", key), os.fdopen(fd, "wb") as fh:
                for chunk in body.iter_chunks(_CHUNK):  # botocore checks the promised length
                    fh.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ByteStoreNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        name = self._key(key)
        with self._errors("size", key):
            return self._client.head_object(Bucket=self._bucket, Key=name)["ContentLength"]

    # -- operators' tools -------------------------------------------------------------------

    def check(self) -> None:
        """``HeadBucket``, once, without retries: the server answers, the bucket exists and
        these credentials may use it. Reads nothing but the bucket's existence, writes
        nothing. Takes at most ``connect_timeout`` + 5 s."""
        try:
            self._probe().head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            raise self._check_error(exc) from exc
        except BotoCoreError as exc:
            name = type(exc).__name__
            if isinstance(exc, BotoConnectionError):
                reason = f"cannot connect to the server ({name})"
            elif isinstance(exc, ReadTimeoutError):
                reason = f"the server did not answer in time ({name})"
            else:
                reason = f"no usable answer from the server ({name})"
            what = f"{self.describe()}: check: {reason}"
            raise ByteStoreUnavailableError(what, reason=reason) from exc

    def _probe(self) -> S3Client:
        with self._probe_lock:  # making a client is not thread-safe
            if self._probe_client is None:
                self._probe_client = self._session.client("s3", **self._probe_options)
            return self._probe_client

    def _check_error(self, exc: ClientError) -> ByteStoreError:
        error: Any = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        label = code if code and code != str(status) else str(status)
        kind: type[ByteStoreError] = ByteStoreUnavailableError
        if code in ("NoSuchBucket", "NotFound", "404") or status == 404:
            reason = "the bucket does not exist"
        elif code in _DENIED or status in (401, 403):
            kind = ByteStoreDeniedError
            reason = (
                f"access denied ({label}): check the access key, its secret, the clock, "
                "the bucket's name and its policy"
            )
        elif status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
            reason = f"server error {label}"
        else:
            reason = f"refused ({label})"
        return kind(f"{self.describe()}: check: {reason}", reason=reason)

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """``ListObjectsV2`` under the store's prefix, a page (1,000 keys) at a time, in key
        order; keys are returned without the store's prefix (names no key could have, such
        as folder markers, are left out)."""
        check_prefix(prefix)
        strip = len(self._prefix)
        pages = self._client.get_paginator("list_objects_v2")
        with self._errors("list", prefix or "(all)"):
            for page in pages.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    try:
                        check_key(key)
                    except InvalidKeyError:
                        continue
                    modified = item["LastModified"].astimezone(UTC)
                    yield StoredObject(key, item["Size"], modified)

    def delete_if_older(self, key: str, cutoff: datetime) -> int | None:
        """``HeadObject``, then ``DeleteObject`` if it was last written at or before ``cutoff``.
        S3 has no conditional delete on the time of the last write: a write of the same key
        between the two requests (one round trip) would be deleted too; keys name their
        content, so only a resend of exactly these bytes could be."""
        name = self._key(key)
        try:
            with self._errors("delete", key):
                head = self._client.head_object(Bucket=self._bucket, Key=name)
        except ByteStoreNotFoundError:
            return None
        if head["LastModified"].astimezone(UTC) > cutoff:
            return None
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self._bucket, Key=name)
        return head["ContentLength"]

    # -- errors ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, op: str, key: str) -> Iterator[None]:
        """Turn the SDK's exceptions into :class:`ByteStoreError` naming key and store."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(op, key, exc) from exc
        except BotoCoreError as exc:
            what = f"{self.describe()}: {op} {key}: {type(exc).__name__}"
            raise ByteStoreUnavailableError(what) from exc
        except OSError as exc:  # a local file (fetch target, source file shrinking)
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ByteStoreError(f"{self.describe()}: {op} {key}: {reason}") from exc

    def _client_error(self, op: str, key: str, exc: ClientError) -> ByteStoreError:
        error: Any = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        what = f"{self.describe()}: {op} {key}"
        if code == "NoSuchBucket":
            return ByteStoreUnavailableError(f"{what}: the bucket does not exist")
        if code in _NOT_FOUND:
            return ByteStoreNotFoundError(f"{what}: no such object")
        if code in _DENIED or status == 403:
            return ByteStoreDeniedError(
                f"{what}: access denied ({code or status}): check the access key, its secret, "
                "the clock, and the bucket policy"
            )
        if code in _INTEGRITY:
            return ByteStoreIntegrityError(
                f"{what}: the server received other bytes than were sent ({code}); not stored"
            )
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable"):
            return ByteStoreUnavailableError(f"{what}: server error {code or status}")
        return ByteStoreError(f"{what}: refused ({code or status})")


# -- the factory -------------------------------------------------------------------------------


def open_byte_store(settings: ObjectStoreSettings, spool: Spool) -> ByteStore:
    """The byte store ``[object_store]`` asks for; the local one is ``spool`` itself.

    Reads the S3 secret key from its file (:class:`ConfigError` naming the setting when it
    cannot); downloads of :meth:`ByteStore.fetch` go to ``tmp/fetch-<pid>/`` in the spool, a
    folder of this process's own, so that :func:`remove_orphaned_fetches` can remove what a
    killed process left (patient data) without touching a live one's.
    """
    if settings.backend == "local":
        return LocalByteStore(spool)
    s3 = settings.s3
    if s3 is None:  # the settings refuse this; kept for type narrowing
        raise ConfigError("object_store.s3 is required when object_store.backend = 's3'")
    secret = s3.secret_access_key()
    return S3ByteStore(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url or None,
        region=s3.region,
        prefix=s3.prefix,
        access_key_id=s3.access_key_id or None,
        secret_access_key=secret,
        verify=s3.ca_file if (s3.verify and s3.ca_file is not None) else s3.verify,
        connect_timeout=s3.connect_timeout_seconds,
        read_timeout=s3.read_timeout_seconds,
        max_attempts=s3.max_attempts,
        part_size=s3.part_size_mb * 1024 * 1024,
        tmp_dir=fetch_dir(spool, os.getpid()),
    )


def fetch_dir(spool: Spool, pid: int) -> Path:
    """Where process ``pid`` keeps its :meth:`S3ByteStore.fetch` downloads."""
    return spool.tmp_dir() / f"{_FETCH_PREFIX}{pid}"


def remove_orphaned_fetches(spool: Spool) -> int:
    """Remove the download folders of processes of this host that are gone (a SIGKILLed worker
    leaves the image it was reading: patient data nothing else would ever delete); returns how
    many files were removed. A folder of a live process, this one included, is left alone."""
    removed = 0
    tmp = spool.tmp_dir()
    if not tmp.is_dir():
        return 0
    for folder in tmp.glob(f"{_FETCH_PREFIX}*"):
        suffix = folder.name[len(_FETCH_PREFIX) :]
        if not suffix.isdigit() or not folder.is_dir():
            continue
        pid = int(suffix)
        if pid == os.getpid() or process_alive(pid):
            continue
        for leftover in folder.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        with contextlib.suppress(OSError):
            folder.rmdir()
    return removed


_FETCH_PREFIX = "fetch-"


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if TYPE_CHECKING:  # both implementations satisfy the protocol (checked by mypy)

    def _implements(local: LocalByteStore, s3: S3ByteStore) -> tuple[ByteStore, ByteStore]:
        return local, s3
