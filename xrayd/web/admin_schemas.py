"""The admin REST API's request and response models (pydantic), and the conversions from
:mod:`storage` rows. Lists answer :class:`xrayd.web.paging.Page`. Callers and destinations
answer their rows as they are (:class:`storage.peers.CallerRow`, ``DestinationRow``).

Input models bound sizes only; the rules (AE title, host, port, names) are checked once, by
:mod:`xrayd.admin.validation`, so the API refuses what the pages and the CLI refuse, with the
same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from config.settings import DEFAULT_SEND, ObjectKind
from storage.audit import AuditRow
from storage.jobs import JobRow
from storage.model_versions import ModelVersionRow
from storage.outbox import DeliveryRow
from storage.users import ApiTokenRow, UserRow
from xrayd.web.from_row import from_row
from xrayd.web.paging import Page


class EchoOut(BaseModel):
    ok: bool
    status: int | None = Field(description="the C-ECHO's DIMSE status; null without a response")
    detail: str = Field(description="what happened, in one line (names the peer, never data)")
    cause: str = Field(
        default="ok",
        description="why it failed, one of dicom_node.echo_diagnosis.EchoCause "
        "(refused, dns, timed-out, called-ae-unknown, calling-ae-unknown, tls-..., ...); "
        "'ok' on success",
    )
    fix: str | None = Field(default=None, description="what to try; null on success")


class MetricOut(BaseModel):
    name: str
    value: float | None
    low: float | None = Field(default=None, description="95 % CI, lower end")
    high: float | None = Field(default=None, description="95 % CI, upper end")


class BundleOut(BaseModel):
    path: str
    shipped: bool = Field(description="the default bundle shipped with xrayd (none configured)")
    trained_on: str | None = Field(default=None, description="the training data it names")
    licence: str | None = Field(default=None, description="the training data's licence")
    name: str | None = None
    version: str | None = None
    sha256: str | None = Field(default=None, description="of the weights file")
    arch: str | None = None
    input_size: int | None = None
    threshold: float | None = Field(
        default=None, description="the binary cut (sensitivity and specificity are quoted at it)"
    )
    indeterminate_low: float | None = Field(
        default=None, description="below this probability: absent"
    )
    indeterminate_high: float | None = Field(
        default=None, description="at or above this probability: present; between: indeterminate"
    )
    per_body_part: dict[str, tuple[float, float, float]] = Field(
        default_factory=dict,
        description="body parts with their own operating point: (low, threshold, high)",
    )
    training_manifest_sha256: str | None = None
    metrics: list[MetricOut] = Field(
        default_factory=list, description="from the bundle's report/report.json"
    )
    report_n: int | None = Field(default=None, description="cases in the evaluation report")
    training_metrics: dict[str, float | None] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)


class CallerIn(BaseModel):
    ae_title: str = Field(
        max_length=64, description="1 to 16 characters (checked by the rule the CLI uses)"
    )
    host: str | None = Field(default=None, max_length=255, description="null: from any host")


class TLSIn(BaseModel):
    ca_file: str = Field(min_length=1, description="CA bundle that signs the peer's certificate")
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None
    check_hostname: bool = Field(
        default=True,
        description="check the certificate's name (server_hostname, else host); false: any "
        "certificate the CA signed is accepted",
    )


class DestinationIn(BaseModel):
    name: str = Field(max_length=255, description="1 to 64 of A-Z a-z 0-9 _ . -")
    ae_title: str = Field(max_length=64, description="1 to 16 characters")
    host: str = Field(max_length=255)
    port: int = Field(description="1 to 65535")
    send: list[ObjectKind] = Field(default_factory=lambda: list(DEFAULT_SEND))
    tls: TLSIn | None = Field(default=None, description="DICOM TLS; null: plain DICOM")


class DeliveryOut(BaseModel):
    id: int
    result_id: int
    study_id: int
    kind: str
    destination: str
    state: str
    attempts: int
    #: its queue job's due time, or the end of the running attempt's lease; None once sent
    #: or dead
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class Retried(BaseModel):
    retried: list[int]


class JobOut(BaseModel):
    id: int
    study_id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class QueueOut(BaseModel):
    """One queue of xrayd's work queue: jobs by state, and how long the oldest due one has
    waited (None: nothing queued, or nothing due yet)."""

    name: str
    states: dict[str, int]
    oldest_waiting_seconds: float | None


class QueuesOut(BaseModel):
    items: list[QueueOut]


class ModelVersionOut(BaseModel):
    id: int
    name: str
    version: str
    sha256: str
    path: str
    state: str
    metrics: dict[str, Any] | None
    created_at: datetime
    promoted_at: datetime | None


class ModelsOut(Page[ModelVersionOut]):
    """The model_versions table, newest first, and the bundle the settings name."""

    bundle: BundleOut = Field(description="the bundle the settings name (or the default bundle)")


class UserIn(BaseModel):
    name: str = Field(max_length=64, description="1 to 64 of A-Z a-z 0-9 . _ -")
    role: str = Field(max_length=16, description="radiologist or admin")
    password: str = Field(max_length=1024, description="at least 12 characters")


class PasswordIn(BaseModel):
    password: str = Field(max_length=1024, description="at least 12 characters")


class PasswordSet(BaseModel):
    tokens_revoked: int
    sessions_ended: int


class Unlocked(BaseModel):
    failures_cleared: int


class TokenIn(BaseModel):
    label: str = Field(default="api", max_length=64, description="what the token is for")
    days: float | None = Field(default=None, description="expires after this many days")


class TokenCreated(BaseModel):
    token: str = Field(description="shown once: only its hash is kept")


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    detail: dict[str, Any]


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = Field(description="None: valid until revoked")


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    created_at: datetime
    tokens: list[TokenOut]


def delivery_out(d: DeliveryRow) -> DeliveryOut:
    return from_row(DeliveryOut, d, id=d.delivery_id, destination=d.destination_name)


def job_out(j: JobRow) -> JobOut:
    return from_row(JobOut, j, id=j.job_id)


def version_out(v: ModelVersionRow) -> ModelVersionOut:
    return from_row(ModelVersionOut, v)


def audit_out(a: AuditRow) -> AuditOut:
    return from_row(AuditOut, a)


def user_out(u: UserRow, tokens: Sequence[ApiTokenRow]) -> UserOut:
    mine = [from_row(TokenOut, t) for t in tokens if t.user_name == u.name]
    return from_row(UserOut, u, tokens=mine)
