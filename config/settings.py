"""The one typed settings object: TOML file + ``XRAYD_*`` environment overrides.

Load it with :func:`config.loader.load_settings`; nothing here reads files at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _check_ae_title(value: str) -> str:
    """DICOM AE title: 1-16 characters of the default repertoire, no backslash or control chars."""
    if _AE_FORBIDDEN.search(value):
        raise ValueError("AE title must not contain a backslash or control characters")
    stripped = value.strip()
    if not stripped:
        raise ValueError("AE title must not be empty or only spaces")
    if len(value) > 16:
        raise ValueError(f"AE title must be at most 16 characters (got {len(value)})")
    if not value.isascii():
        raise ValueError("AE title must be ASCII")
    return stripped


AETitle = Annotated[str, AfterValidator(_check_ae_title)]
"""A validated DICOM Application Entity title (leading/trailing spaces removed)."""

ObjectKind = Literal["sr", "sc", "pdf"]
DEFAULT_SEND: tuple[ObjectKind, ...] = ("sr", "sc")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerSettings(_Section):
    """A calling AE allowed to associate; ``host`` additionally pins its source address."""

    ae_title: AETitle
    host: str | None = None


class NodeSettings(_Section):
    """The DICOM listener."""

    ae_title: AETitle = "XRAYD"
    host: str = "0.0.0.0"  # noqa: S104 - a DICOM node listens on the hospital network
    port: int = Field(default=11112, ge=0, le=65535)  # 0: any free port (tests, demo)
    accept_any_caller: bool = False
    max_associations: int = Field(default=16, ge=1, le=1024)
    #: processes sharing the port (SO_REUSEPORT); each accepts up to max_associations
    listener_processes: int = Field(default=1, ge=1, le=32)
    callers: list[CallerSettings] = Field(default_factory=list)
    max_pdu_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description="largest PDU we accept; larger declared PDUs abort the association",
    )
    idle_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    extra_sop_classes: list[str] = Field(
        default_factory=list,
        description="further storage SOP Class UIDs this site accepts",
    )
    min_free_mb: int = Field(
        default=512, ge=0, description="refuse C-STOREs (0xA700) below this much free spool space"
    )

    @model_validator(mode="after")
    def _check_uids(self) -> NodeSettings:
        for uid in self.extra_sop_classes:
            if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid) or len(uid) > 64:
                raise ValueError(f"extra_sop_classes: {uid!r} is not a valid UID")
        return self


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "xrayd"


class StorageSettings(_Section):
    """Where instances and the embedded database live."""

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str = ""

    @model_validator(mode="after")
    def _check_url(self) -> StorageSettings:
        url = self.database_url
        if url and not url.startswith(("sqlite:", "postgresql")):
            raise ValueError("database_url must be empty, sqlite:///... or postgresql+psycopg://...")
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
    lease_seconds: float = Field(default=600.0, gt=0)
    poll_seconds: float = Field(default=30.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _lease_covers_a_send(self) -> DeliverySettings:
        if self.lease_seconds <= 3 * self.send_timeout_seconds:
            raise ValueError("lease_seconds must exceed three times send_timeout_seconds")
        return self


class ModelSettings(_Section):
    """The fracture model the analysis workers and ``xrayd predict`` use."""

    #: a bundle directory; empty: the synthetic-data demo bundle shipped with xrayd
    bundle: Path | None = None
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")
    #: CPU threads for inference
    threads: int = Field(default=2, ge=1, le=256)
    runtime: Literal["auto", "eager", "channels_last", "onnxruntime", "openvino"] = "auto"
    batch_size: int = Field(default=8, ge=1, le=256)

    @field_validator("bundle", mode="before")
    @classmethod
    def _empty_bundle(cls, value: object) -> object:
        return None if value == "" else value


class DestinationSettings(_Section):
    """A DICOM peer (usually the PACS) that receives xrayd's results."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: AETitle
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    send: list[ObjectKind] = Field(default_factory=lambda: list(DEFAULT_SEND))


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


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
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @model_validator(mode="after")
    def _unique_destinations(self) -> Settings:
        names = [d.name for d in self.destinations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"destinations: duplicate name(s) {', '.join(dupes)}")
        return self

    @property
    def database_url(self) -> str:
        """The configured URL, or the embedded SQLite file inside ``data_dir``."""
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.storage.data_dir / 'xrayd.sqlite3'}"

    @property
    def spool_dir(self) -> Path:
        return self.storage.data_dir / "spool"
