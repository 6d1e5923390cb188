"""The one typed settings object: TOML file + ``XRAYD_*`` environment overrides.

Load it with :func:`config.loader.load_settings`; nothing here reads files at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path
from typing import Annotated, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.errors import ConfigError

_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _check_ae_title(value: str) -> str:
    """DICOM AE title: 1-16 characters of the default repertoire, no backslash or control chars."""
    if _AE_FORBIDDEN.search(value):
        raise ValueError("AE title must not contain a backslash or control characters")
    stripped = value.strip()
    if not stripped:
        raise ValueError("AE title must not be empty or only spaces")
    if len(stripped) > 16:  # leading/trailing spaces are padding, not significant
        raise ValueError(f"AE title must be 1 to 16 characters: at most 16 (got {len(stripped)})")
    if not value.isascii():
        raise ValueError("AE title must be ASCII")
    return stripped


AETitle = Annotated[str, AfterValidator(_check_ae_title)]
"""A validated DICOM Application Entity title (leading/trailing spaces removed)."""

#: longest UID root a site may configure: leaves at least 23 digits of a 64-character UID
#: for the suffix xrayd derives (see :mod:`dicom_node.uids`)
MAX_UID_ROOT_LENGTH = 40
_UID_COMPONENT = re.compile(r"0|[1-9][0-9]*")
#: pydicom's own root, which identifies objects that pydicom made, not a site's
_PYDICOM_ROOT = "1.2.826.0.1.3680043.8.498"


def check_uid_root(value: str) -> str:
    """A site's DICOM UID root: digits and dots, at most :data:`MAX_UID_ROOT_LENGTH`
    characters, no empty component, no leading zero, a first arc of 0, 1 or 2, and not
    pydicom's root. Raises ValueError saying what is wrong."""
    root = value.strip()
    if not root:
        raise ValueError("uid_root must not be blank (leave it out for 2.25 UUID-derived UIDs)")
    if len(root) > MAX_UID_ROOT_LENGTH:
        raise ValueError(
            f"uid_root must be at most {MAX_UID_ROOT_LENGTH} characters, so that the UIDs "
            f"derived from it fit in 64 (got {len(root)})"
        )
    components = root.split(".")
    for component in components:
        if not _UID_COMPONENT.fullmatch(component):
            raise ValueError(
                f"uid_root {root!r} must be numbers separated by dots, without empty "
                f"components or leading zeros (bad component {component!r})"
            )
    if components[0] not in ("0", "1", "2"):
        raise ValueError(f"uid_root {root!r} must start with 0, 1 or 2 (an ISO/ITU-T OID arc)")
    if root == _PYDICOM_ROOT or root.startswith(_PYDICOM_ROOT + "."):
        raise ValueError(f"uid_root {root!r} is pydicom's root, not one of this site's")
    if components[:2] == ["2", "25"]:
        raise ValueError(
            f"uid_root {root!r}: 2.25 is for UUID-derived UIDs; leave uid_root out to get them"
        )
    return root


SiteUidRoot = Annotated[str, AfterValidator(check_uid_root)]
"""A validated DICOM UID root of the site (see :func:`check_uid_root`)."""

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str) -> str:
    """Replace each ``${NAME}`` in ``value`` by the environment variable ``NAME``.

    Used for the paths of secret files, so that the TOML can name systemd credentials as
    ``${CREDENTIALS_DIRECTORY}/node.key``. A variable that is not set is left as written: the
    settings still load (e.g. for an admin command run outside the service, which does not
    read the file), and the check of the file, where it is needed, names the unexpanded path.
    """
    return _ENV_REFERENCE.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)


def unexpanded_env(path: Path | str) -> list[str]:
    """The names of the ``${NAME}`` references left in ``path`` (variables that were unset)."""
    return _ENV_REFERENCE.findall(str(path))


def _secret_path(value: object) -> object:
    if value == "":
        return None
    if isinstance(value, Path):
        value = str(value)
    return expand_env(value) if isinstance(value, str) else value


SecretPath = Annotated[Path, BeforeValidator(_secret_path)]
"""The path of a file holding a secret (key, certificate, password); ``${NAME}`` references to
environment variables are expanded (``${CREDENTIALS_DIRECTORY}``)."""

OptionalSecretPath = Annotated[Path | None, BeforeValidator(_secret_path)]
"""A :data:`SecretPath` that may be left out; ``""`` means unset."""


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


EMPTY_IS_NONE = BeforeValidator(_empty_is_none)
"""For an optional setting: ``""`` (in the TOML or an ``XRAYD_*`` variable) means unset."""

OptionalPath = Annotated[Path | None, EMPTY_IS_NONE]
"""A path that may be left out; ``""`` means unset."""

ObjectKind = Literal["sr", "sc", "pdf", "gsps", "kos"]
"""Result objects a destination can take: "sr" the TID 1500 SR (and radiologist-verified SRs),
"sc" the burned-in Secondary Captures, "pdf" the Encapsulated PDF report, "gsps" a Grayscale
Softcopy Presentation State per analysed image (boxes and text over the original), "kos" a Key
Object Selection of the images the AI flags."""
OBJECT_KINDS: tuple[ObjectKind, ...] = get_args(ObjectKind)
#: What most PACS viewers show: SR, burned-in captures, presentation states and key images.
DEFAULT_SEND: tuple[ObjectKind, ...] = ("sr", "sc", "gsps", "kos")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerSettings(_Section):
    """A calling AE allowed to associate; ``host`` additionally pins its source address."""

    ae_title: AETitle
    host: str | None = None


class NodeTLSSettings(_Section):
    """DICOM TLS on the listener (TLS 1.2 or later). Paths only: the files hold the secrets.

    The files are checked by :meth:`Settings.check_tls_files` when a node starts.
    """

    cert_file: SecretPath
    key_file: SecretPath
    #: CA bundle that signs the client certificates
    ca_file: OptionalSecretPath = None
    require_client_cert: bool = True

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> NodeTLSSettings:
        if self.require_client_cert and self.ca_file is None:
            raise ValueError("ca_file is required when require_client_cert is true")
        return self


class DestinationTLSSettings(_Section):
    """DICOM TLS to a destination (TLS 1.2 or later). Paths only: the files hold the secrets."""

    #: CA bundle that signs the destination's certificate
    ca_file: SecretPath
    #: our client certificate, when the destination asks for one (may also hold the key)
    cert_file: OptionalSecretPath = None
    key_file: OptionalSecretPath = None
    #: the name the destination's certificate must carry; empty: the destination's host
    server_hostname: Annotated[str | None, EMPTY_IS_NONE] = Field(default=None, max_length=253)
    #: check the certificate's name (server_hostname, else host). Set false only for a
    #: destination whose certificate names no reachable host; the chain is still verified
    #: against ca_file, but any certificate that CA signed is then accepted.
    check_hostname: bool = True

    @model_validator(mode="after")
    def _key_needs_cert(self) -> DestinationTLSSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load instead of prompting on a terminal


def _unset_hint(path: Path) -> str:
    names = unexpanded_env(path)
    if not names:
        return ""
    return f" (${{{names[0]}}} is not set: start xrayd from its systemd unit, or set it)"


def _check_readable(key: str, path: Path, problems: list[str]) -> bool:
    try:
        with path.open("rb"):
            return True
    except FileNotFoundError:
        problems.append(f"{key}: {path} does not exist{_unset_hint(path)}")
    except PermissionError:
        problems.append(f"{key}: {path} is not readable")
    except OSError as exc:
        problems.append(f"{key}: cannot read {path}: {exc.strerror or type(exc).__name__}")
    return False


def _check_certificates(key: str, path: Path, problems: list[str]) -> bool:
    """``path`` holds at least one PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
        return True
    except (ssl.SSLError, OSError, ValueError):
        problems.append(f"{key}: {path} holds no usable PEM certificate")
    return False


def _check_tls_files(
    prefix: str,
    cert: Path | None,
    key: Path | None,
    ca: Path | None,
    problems: list[str],
) -> None:
    """Append to ``problems`` what is wrong with these files (never their contents)."""
    if ca is not None and _check_readable(f"{prefix}.ca_file", ca, problems):
        _check_certificates(f"{prefix}.ca_file", ca, problems)
    if cert is None:
        return
    ok = _check_readable(f"{prefix}.cert_file", cert, problems)
    ok = ok and _check_certificates(f"{prefix}.cert_file", cert, problems)
    if key is not None:
        ok = _check_readable(f"{prefix}.key_file", key, problems) and ok
    if not ok:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            str(cert), None if key is None else str(key), password=_no_password
        )
    except (ssl.SSLError, OSError, ValueError):
        if key is not None:
            what = f"{prefix}.key_file: {key} is not an unencrypted PEM private key"
        else:
            what = f"{prefix}.cert_file: {cert} holds no unencrypted PEM private key"
        problems.append(f"{what} matching {prefix}.cert_file")


class NodeSettings(_Section):
    """The DICOM listener."""

    ae_title: AETitle = "XRAYD"
    host: str = "0.0.0.0"  # noqa: S104 - a DICOM node listens on the hospital network
    port: int = Field(default=11112, ge=0, le=65535)  # 0: any free port (tests, demo)
    accept_any_caller: bool = False
    max_associations: int = Field(default=16, ge=1, le=1024)
    #: processes sharing the listening socket; each accepts up to max_associations
    listener_processes: int = Field(default=1, ge=1, le=32)
    callers: list[CallerSettings] = Field(default_factory=list)
    max_pdu_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description="largest PDU we accept; larger declared PDUs abort the association",
    )
    idle_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: seconds a new connection has to complete its A-ASSOCIATE-RQ (the DICOM ARTIM timer);
    #: a peer that connects and says nothing (or too little) is closed after this
    artim_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    #: live connections one source address may hold at once (the rest are closed at accept);
    #: 0: max_associations // 2, at least 1
    max_connections_per_host: int = Field(default=0, ge=0, le=1024)
    #: largest C-STORE data set accepted (MiB); larger ones are refused with 0xA700 before
    #: they fill the disk. A 7,000 x 17,000 x 16-bit long-leg DX is about 230 MiB.
    max_instance_mb: int = Field(default=1024, ge=1, le=65536)
    extra_sop_classes: list[str] = Field(
        default_factory=list,
        description="further storage SOP Class UIDs this site accepts",
    )
    min_free_mb: int = Field(
        default=512, ge=0, description="refuse C-STOREs (0xA700) below this much free spool space"
    )
    #: DICOM TLS; absent: plain DICOM
    tls: NodeTLSSettings | None = None
    #: the site's UID root for the objects xrayd makes (SR, captures, PDF, GSPS, KOS and their
    #: series); absent: "2.25." UIDs derived from a UUID (see dicom_node.uids)
    uid_root: Annotated[SiteUidRoot | None, EMPTY_IS_NONE] = None

    @property
    def connections_per_host(self) -> int:
        """The per-source-address connection cap in force."""
        return self.max_connections_per_host or max(1, self.max_associations // 2)

    @model_validator(mode="after")
    def _check_uids(self) -> NodeSettings:
        for uid in self.extra_sop_classes:
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid) or len(uid) > 64:
                raise ValueError(f"extra_sop_classes: {uid!r} is not a valid UID")
        return self


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "xrayd"


class LimitsSettings(_Section):
    """Bounds on what an image may cost before any of it is decoded (analysis, web viewer,
    retraining). An image beyond them is "not analysed: image too large", never decoded."""

    #: Rows x Columns x frames; a 7,000 x 17,000 stitched long-leg DX is 119 million
    max_image_pixels: int = Field(default=200_000_000, ge=1_000_000)
    #: the decoded pixel data (Rows x Columns x frames x samples x bytes per sample), MiB
    max_decoded_mb: int = Field(default=512, ge=16)
    #: decoded bytes per stored byte of compressed pixel data (a few-byte JPEG 2000 that
    #: declares 8192 x 8192 is a bomb; real radiographs compress far less than 1000:1)
    max_compression_ratio: float = Field(default=1000.0, ge=10)
    #: largest inflated size of a Deflated Explicit VR Little Endian data set, MiB
    max_inflated_mb: int = Field(default=1024, ge=1)


class StorageSettings(_Section):
    """Where instances and the embedded database live."""

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""
    #: a file whose first line is the PostgreSQL password (e.g. a systemd credential); read
    #: when the database is opened and given to the driver, never written into the URL text
    database_password_file: OptionalSecretPath = None

    @model_validator(mode="after")
    def _check_url(self) -> StorageSettings:
        url = self.database_url
        if url and not url.startswith(("sqlite:", "postgresql")):
            raise ValueError(
                "database_url must be empty, sqlite:///... or postgresql+psycopg://..."
            )
        if self.database_password_file is not None:
            if not url.startswith("postgresql"):
                raise ValueError("database_password_file needs a postgresql database_url")
            try:
                has_password = urlsplit(url).password is not None
            except ValueError:
                has_password = False
            if has_password:
                raise ValueError(
                    "database_url holds a password and database_password_file is set: "
                    "keep the password in the file only"
                )
        return self


class StudySettings(_Section):
    """When a study counts as complete."""

    quiet_seconds: float = Field(default=5.0, ge=0)
    max_wait_seconds: float = Field(default=120.0, gt=0)
    #: the release of the association that sent a study ends its quiet period at once
    release_ends_wait: bool = True


class JobSettings(_Section):
    """The analysis workers."""

    workers: int = Field(default=1, ge=1, le=64)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: float = Field(default=10.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)
    lease_seconds: float = Field(default=600.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)


class DeliverySettings(_Section):
    """Sending result objects to the destinations."""

    workers: int = Field(default=1, ge=1, le=16)
    max_attempts: int = Field(default=10, ge=1, le=1000)
    retry_base_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    send_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: TCP connect (and TLS handshake) deadline for outgoing associations
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    #: largest PDU we accept from a destination (its declared length is checked first)
    max_pdu_bytes: int = Field(default=1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    lease_seconds: float = Field(default=600.0, gt=0)
    poll_seconds: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _lease_covers_a_send(self) -> DeliverySettings:
        if self.lease_seconds <= 3 * self.send_timeout_seconds:
            raise ValueError("lease_seconds must exceed three times send_timeout_seconds")
        return self


class ModelSettings(_Section):
    """The fracture model the analysis workers and ``xrayd predict`` use."""

    #: a bundle directory; empty: the default bundle shipped with xrayd (FracAtlas-trained)
    bundle: OptionalPath = None
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    #: CPU threads for inference
    threads: int = Field(default=2, ge=1, le=256)
    runtime: Literal["auto", "eager", "channels_last", "onnxruntime", "openvino"] = "auto"
    batch_size: int = Field(default=8, ge=1, le=256)


class DestinationSettings(_Section):
    """A DICOM peer (usually the PACS) that receives xrayd's results."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AETitle
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    send: list[ObjectKind] = Field(default_factory=lambda: list(DEFAULT_SEND))
    #: DICOM TLS to this destination; absent: plain DICOM
    tls: DestinationTLSSettings | None = None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class WebSettings(_Section):
    """The web UI and REST API served by ``xrayd serve``."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port (tests)
    #: the Secure flag on the session cookie (browsers honour it on http://localhost too)
    cookie_secure: bool = True
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    #: a session unused this long ends, whatever session_hours says (last use is recorded
    #: at most once a minute, so the end comes up to a minute later)
    session_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    #: failed logins per (user name, client address) within the window before that pair is
    #: refused; a client address may fail 4x as often over all names (storage.logins)
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_window_seconds: float = Field(default=900.0, gt=0)
    #: Host header values the web app answers (DNS rebinding): names and addresses, "*.domain"
    #: for a domain's names, "*" for any; a specific web.host is added by itself
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    #: reverse proxies (addresses or networks) whose X-Forwarded-For names the client
    trusted_proxies: tuple[str, ...] = ()
    #: requests handled at once (page and API handlers run in this many threads; more wait in
    #: line). The web UI shares the process, and so its CPU, with the DICOM listener: a small
    #: pool keeps 20 busy browsers from slowing the modality's acknowledgements
    request_threads: int = Field(default=4, ge=1, le=64)
    #: HTTPS for the web UI (else put a TLS reverse proxy in front)
    tls_cert_file: OptionalSecretPath = None
    tls_key_file: OptionalSecretPath = None
    #: the site's PACS viewer, with {study_uid} for the study's StudyInstanceUID (e.g.
    #: "https://pacs.example/viewer?StudyInstanceUIDs={study_uid}"); empty: no link
    pacs_viewer_url: str = Field(default="", max_length=2000)

    @field_validator("pacs_viewer_url")
    @classmethod
    def _pacs_viewer_url(cls, value: str) -> str:
        url = value.strip()
        if url and (
            not url.lower().startswith(("https://", "http://")) or "{study_uid}" not in url
        ):
            raise ValueError(
                "pacs_viewer_url: an http(s) URL with {study_uid} where the study goes"
            )
        return url

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = []
        for entry in value:
            host = entry.strip().lower()
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]  # [::1] as written in a URL
            pattern = host[2:] if host.startswith("*.") else host
            if host != "*" and (
                not pattern
                or "*" in pattern
                or "/" in pattern
                or len(pattern) > 253
                or (":" in pattern and not _is_ip(pattern))  # no ports: any port is fine
            ):
                raise ValueError(f"allowed_hosts: {entry!r} is not a host name or address")
            hosts.append(host)
        return tuple(hosts)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(str(ipaddress.ip_network(v.strip(), strict=False)) for v in value)
        except ValueError as exc:
            raise ValueError(f"trusted_proxies: {exc}") from None

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("web: tls_cert_file and tls_key_file go together")
        return self


class GateSettings(_Section):
    """Promotion gate: a candidate must be at least this good on the locked validation set."""

    #: candidate AUC may be lower than the current model's by at most this much
    auc_margin: float = Field(default=0.01, ge=0, le=1)
    #: sensitivity at the candidate's operating point must reach this
    min_sensitivity: float = Field(default=0.90, ge=0, le=1)
    #: specificity at the candidate's operating point must reach this
    min_specificity: float = Field(default=0.80, ge=0, le=1)


class RetrainSettings(_Section):
    """Scheduled retraining from radiologists' reviews (one scheduler per deployment)."""

    #: run the scheduler inside `xrayd serve` (false: run `xrayd scheduler` elsewhere, or none)
    enabled: bool = True
    #: crontab (minute hour day month weekday; a sixth leading field = seconds)
    schedule: str = "0 2 * * *"
    timezone: str = "UTC"
    #: skip a scheduled run when fewer reviews arrived since the last trained candidate
    min_new_reviews: int = Field(default=20, ge=0)
    #: promote a candidate that passes the gate at once (false: wait for an admin)
    auto_promote: bool = False
    #: the base dataset trained on besides the reviews: synthetic, mura, fracatlas or csv
    base_dataset: Literal["synthetic", "mura", "fracatlas", "csv"] = "synthetic"
    base_data: OptionalPath = None  # dataset root (not for synthetic)
    base_cases: int = Field(default=600, ge=0)  # base images trained on per run (0: reviews only)
    validation_cases: int = Field(default=400, ge=20)  # synthetic cases of the locked set
    #: share of reviewed patients added to the locked validation set by
    #: `xrayd retrain validation add-reviews` (never automatically)
    review_validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    review_weight: int = Field(default=5, ge=1, le=100)  # oversampling of reviewed images
    epochs: int = Field(default=3, ge=1, le=100)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=16, ge=1, le=1024)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    #: where candidate bundles are written; empty: <data_dir>/models
    models_dir: OptionalPath = None
    #: the lease of a run's queue job, renewed while it trains; a run whose worker stopped
    #: renewing it for this long is taken up again (or failed on its last attempt)
    lease_seconds: float = Field(default=900.0, gt=0)
    gate: GateSettings = Field(default_factory=GateSettings)

    @field_validator("schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        fields = value.split()
        if len(fields) not in (5, 6):
            raise ValueError("schedule must be a crontab: 5 fields (or 6 with seconds first)")
        return value


class ReviewSettings(_Section):
    """What happens when a radiologist saves a review."""

    #: send a radiologist-verified SR that supersedes the AI SR to every destination taking "sr"
    send_verified_sr: bool = False
    #: Verifying Organization in that SR
    organization: str = Field(default="xrayd site", min_length=1, max_length=64)


class RetentionSettings(_Section):
    """Deleting received images from the spool (``storage.retention``); rows stay."""

    #: delete eligible studies' files this many days after their last image (0: keep forever)
    max_age_days: int = Field(default=30, ge=0, le=36500)
    #: disk pressure: below this much free spool space, purge eligible studies oldest first,
    #: whatever their age (0: never purge for space) ...
    min_free_mb: int = Field(default=2048, ge=0)
    #: ... until this share of the spool's filesystem is free (and at least min_free_mb)
    target_free_percent: float = Field(default=10.0, ge=0, lt=100)
    #: how often the retention worker of `xrayd serve` runs
    interval_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: "auto": JSON lines under systemd's journal (JOURNAL_STREAM), text otherwise
    format: Literal["auto", "text", "json"] = "auto"


# -- [object_store]: where image bytes live (storage.bytestore) ---------------------------------

#: S3 bucket names: 3-63 of a-z 0-9 . -, starting and ending with a letter or digit
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]*")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class S3ObjectStoreSettings(_Section):
    """An S3-compatible object store (MinIO, Ceph RGW, SeaweedFS, AWS S3)."""

    #: "https://host[:port]"; empty: AWS S3 in `region`
    endpoint_url: str = ""
    region: str = Field(default="us-east-1", min_length=1, max_length=64)
    bucket: str
    #: keys are stored under this prefix ("" or e.g. "site-a/")
    prefix: str = Field(default="", max_length=256)
    #: with secret_access_key_file; both empty: the SDK's default chain (instance role, env)
    access_key_id: str = Field(default="", max_length=256)
    #: a file whose first line is the secret access key (e.g. a systemd credential)
    secret_access_key_file: OptionalSecretPath = None
    #: check the server's certificate (against ca_file, else the system's CAs)
    verify: bool = True
    ca_file: OptionalSecretPath = None
    #: plain http, only to a loopback endpoint (a local gateway or test server)
    allow_http: bool = False
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    read_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: tries per request in all (timeouts, 5xx, throttling), with backoff
    max_attempts: int = Field(default=3, ge=1, le=20)
    #: files above this are uploaded in parts of this size (S3's minimum part is 5 MiB)
    part_size_mb: int = Field(default=16, ge=5, le=5120)

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if (
            not _BUCKET_NAME.fullmatch(value)
            or ".." in value
            or ".-" in value
            or "-." in value
            or _is_ip(value)
            or value.startswith("xn--")
        ):
            raise ValueError(
                f"bucket: {value!r} is not a valid S3 bucket name (3-63 characters: "
                "a-z, 0-9, '.', '-'; a letter or digit first and last; not an IP address)"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and (
            not _S3_PREFIX.fullmatch(value)
            or value.startswith("/")
            or any(p in ("", ".", "..") for p in value.rstrip("/").split("/"))
        ):
            raise ValueError(
                "prefix: relative, segments of letters, digits and !-_.*'() "
                "separated by '/', no '.' or '..'"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> S3ObjectStoreSettings:
        url = self.endpoint_url
        if url:
            try:
                parts = urlsplit(url)
                host, _port = parts.hostname or "", parts.port  # a bad port: ValueError
            except ValueError:
                raise ValueError(f"endpoint_url: {url!r} is not a URL") from None
            if parts.scheme not in ("https", "http") or not host:
                raise ValueError("endpoint_url must be https://host[:port]")
            if parts.username is not None or parts.password is not None:
                raise ValueError("endpoint_url must not hold credentials")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError("endpoint_url must be only scheme, host and port")
            if parts.scheme == "http" and not (self.allow_http and _is_loopback(host)):
                raise ValueError(
                    "endpoint_url: plain http is refused (image bytes and credentials in the "
                    "clear); use https, or allow_http = true for a loopback endpoint"
                )
        if bool(self.access_key_id) != (self.secret_access_key_file is not None):
            raise ValueError("access_key_id and secret_access_key_file go together")
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file is set but verify = false")
        return self

    def secret_access_key(self) -> str | None:
        """The first line of ``secret_access_key_file`` (None: none set); read when the store
        is opened. Raises :class:`ConfigError` naming the key, never the contents."""
        path = self.secret_access_key_file
        if path is None:
            return None
        key = "object_store.s3.secret_access_key_file"
        problems: list[str] = []
        if not _check_readable(key, path, problems):
            raise ConfigError(problems[0])
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}: cannot read {path} ({type(exc).__name__})") from None
        if not lines or not lines[0].strip():
            raise ConfigError(f"{key}: {path} is empty (the secret is its first line)")
        return lines[0].strip()


class ObjectStoreSettings(_Section):
    """Where the bytes of received images live: the local spool, or an S3-compatible store
    shared by listeners and workers on several hosts."""

    backend: Literal["local", "s3"] = "local"
    #: used when backend = "s3"
    s3: S3ObjectStoreSettings | None = None

    @model_validator(mode="after")
    def _s3_needs_table(self) -> ObjectStoreSettings:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError("backend = 's3' needs the [object_store.s3] table (bucket, ...)")
        return self


class Settings(BaseSettings):
    """Everything xrayd reads at start-up, validated once."""

    model_config = SettingsConfigDict(
        env_prefix="XRAYD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    node: NodeSettings = Field(default_factory=NodeSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    study: StudySettings = Field(default_factory=StudySettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    destinations: list[DestinationSettings] = Field(default_factory=list)
    web: WebSettings = Field(default_factory=WebSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)

    @model_validator(mode="after")
    def _unique_destinations(self) -> Settings:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destinations: duplicate name(s) {', '.join(dupes)}")
        return self

    def check_tls_files(self) -> None:
        """Check that every TLS file exists and is readable, holds certificates, and that each
        key matches its certificate; raises :class:`ConfigError` naming the keys.

        Called when a node starts (not at load time: the files may exist only where xrayd
        runs, e.g. systemd credentials).
        """
        problems: list[str] = []
        tls = self.node.tls
        if tls is not None:
            _check_tls_files("node.tls", tls.cert_file, tls.key_file, tls.ca_file, problems)
        for i, dest in enumerate(self.destinations):
            if dest.tls is not None:
                t = dest.tls
                prefix = f"destinations.{i}.tls"
                _check_tls_files(prefix, t.cert_file, t.key_file, t.ca_file, problems)
        if problems:
            raise ConfigError("unusable TLS files:\n  " + "\n  ".join(problems))

    def database_password(self) -> str | None:
        """The first line of ``storage.database_password_file`` (None: no such file set).

        Read when the database is opened (the file may exist only inside the service, e.g. a
        systemd credential); raises :class:`ConfigError` naming the key, never the contents.
        """
        path = self.storage.database_password_file
        if path is None:
            return None
        key = "storage.database_password_file"
        problems: list[str] = []
        if not _check_readable(key, path, problems):
            raise ConfigError(problems[0])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{key}: cannot read {path} ({type(exc).__name__})") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise ConfigError(f"{key}: {path} is empty (the password is its first line)")
        return lines[0]

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.storage.data_dir / 'xrayd.sqlite3'}"

    @property
    def spool_dir(self) -> Path:
        return self.storage.data_dir / "spool"
