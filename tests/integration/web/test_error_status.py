"""HTTP status codes of storage errors come from the error's type, never from its wording:
the same status for the REST API (JSON) and for a page (the HTML error page)."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI

from storage.audit import InvalidAuditEntryError
from storage.bytestore import (
    ByteStoreDeniedError,
    ByteStoreIntegrityError,
    ByteStoreNotFoundError,
    ByteStoreUnavailableError,
)
from storage.errors import (
    ConflictError,
    DatabaseUnavailableError,
    InvalidEntryError,
    JobLostError,
    JobNotFoundError,
    NotFoundError,
    SpoolWriteError,
    StorageError,
)
from storage.model_versions import RegistryError, VersionNotFoundError
from storage.outbox import DeliveryNotFoundError
from storage.peers import InvalidEntryError as PeersInvalidEntryError
from xrayd.web.app import storage_error_status

from web_helpers import Web

#: (error raised, status answered); several messages say "no ..." whatever their type
CASES: list[tuple[StorageError, int]] = [
    (NotFoundError("no such thing"), 404),
    (JobNotFoundError("no job with id 7"), 404),
    (DeliveryNotFoundError("delivery 7 is gone"), 404),
    (VersionNotFoundError("no model version '9'"), 404),
    (ByteStoreNotFoundError("the object is missing"), 404),
    (ConflictError("there is no earlier model to roll back to"), 409),
    (JobLostError("job 7: lost its lease"), 409),
    (RegistryError("model 2 has no passing gate verdict"), 409),
    (InvalidEntryError("port must be between 1 and 65535"), 422),
    (InvalidAuditEntryError("since must carry a time zone"), 422),
    (DatabaseUnavailableError("no database at postgresql://***@db/x"), 503),
    (ByteStoreUnavailableError("no bucket"), 503),
    (ByteStoreDeniedError("no permission"), 503),
    (StorageError("no row was found after a conflicting insert"), 500),
    (SpoolWriteError("no space left"), 500),
    (ByteStoreIntegrityError("the bytes differ"), 500),
]
IDS = [f"{type(e).__name__}-{status}" for e, status in CASES]


def _raising_routes(app: FastAPI) -> None:
    """An API route and a page route that raise ``CASES[i]``'s error (after the app's own
    routes, under the app's own exception handlers)."""
    router = APIRouter()

    def raise_case(i: int) -> None:
        raise CASES[i][0]

    router.add_api_route("/api/v1/test-raise/{i}", raise_case, methods=["GET"])
    router.add_api_route("/test-raise/{i}", raise_case, methods=["GET"])
    app.include_router(router)


@pytest.fixture
def raising(web: Web) -> Web:
    app = web.client.app
    assert isinstance(app, FastAPI)
    _raising_routes(app)
    return web


def test_the_invalid_entry_error_of_peers_is_the_storage_one() -> None:
    assert PeersInvalidEntryError is InvalidEntryError


@pytest.mark.parametrize(("error", "status"), CASES, ids=IDS)
def test_status_follows_the_type(error: StorageError, status: int) -> None:
    assert storage_error_status(error) == status


@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_api_and_page_answer_the_same_status(raising: Web, i: int) -> None:
    error, status = CASES[i]
    api = raising.client.get(f"/api/v1/test-raise/{i}")
    page = raising.client.get(f"/test-raise/{i}")

    assert api.status_code == status and page.status_code == status
    assert api.headers["content-type"].startswith("application/json")
    assert page.headers["content-type"].startswith("text/html")
    if status < 500:  # the operator-safe message is shown as it is
        assert api.json() == {"detail": str(error)}
        assert str(error).split("'")[0] in page.text
    else:  # not the request's fault: the answer names the kind of failure, the log the cause
        assert str(error) not in api.json()["detail"]
        assert str(error) not in page.text


def test_real_routes_answer_404_for_an_unknown_study(web: Web) -> None:
    headers = web.token("rad")
    r = web.client.post("/api/v1/overrides", json={"study_id": 999, "agree": True}, headers=headers)
    assert r.status_code == 404 and r.json() == {"detail": "no study 999"}
    web.login("rad")
    page = web.client.post(
        "/studies/999/review", data={"csrf_token": web.csrf(), "verdict": "agree"}
    )
    assert page.status_code == 404 and "no study 999" in page.text
