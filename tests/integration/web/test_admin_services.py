"""The one service layer of admin actions (xrayd.admin): the CLI, the admin pages and the REST
API write the same audit action and accept or refuse an AE title with the same message; an
admin change and its audit row commit together or not at all. On SQLite and PostgreSQL."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from storage.audit import search_audit
from storage.errors import ConflictError, InvalidEntryError, NotFoundError
from storage.peers import list_callers, list_destinations
from storage.users import list_tokens, list_users
from xrayd.admin import peers as admin_peers
from xrayd.admin import users as admin_users
from xrayd.admin import validation
from xrayd.admin.actor import Actor
from xrayd.cli.actor import os_user
from xrayd.cli.main import main

from web_helpers import Web, make_web

DEST = {"name": "pacs", "ae_title": "PACS", "host": "10.1.2.3", "port": 104, "send": ["sr"]}


@pytest.fixture
def web(tmp_path: Path, database_url: str) -> Iterator[Web]:
    w = make_web(tmp_path / "data", database_url)
    yield w
    w.storage.engine.dispose()


def _config(web: Web, tmp_path: Path) -> str:
    """A settings file naming the web's database, for the CLI run in-process."""
    storage = web.ctx.settings.storage
    cfg = tmp_path / "xrayd.toml"
    cfg.write_text(
        '[node]\nae_title = "XRAYD"\nhost = "127.0.0.1"\nport = 0\nmin_free_mb = 0\n'
        '[[node.callers]]\nae_title = "MODALITY"\n'
        f'[storage]\ndata_dir = "{storage.data_dir}"\n'
        f'database_url = "{storage.database_url or ""}"\n'
    )
    return str(cfg)


def _form(web: Web, url: str, data: dict[str, Any]) -> Any:
    form = {"csrf_token": web.csrf(page="/admin"), **data}
    return web.client.post(url, data=form, follow_redirects=False)


def _audit(web: Web, **filters: str) -> list[Any]:
    rows, _ = search_audit(web.sessions, limit=1000, **filters)  # type: ignore[arg-type]
    return rows


def test_cli_page_and_api_write_the_same_audit_action(web: Web, tmp_path: Path) -> None:
    cfg = _config(web, tmp_path)
    h = web.token("admin")
    web.login("admin")

    assert main(["callers", "add", "CT1", "--config", cfg]) == 0
    assert _form(web, "/admin/callers", {"ae_title": "CT2"}).status_code == 303
    assert (
        web.client.post("/api/v1/callers", json={"ae_title": "CT3"}, headers=h).status_code == 201
    )
    assert main(["destinations", "add", "d1", "PACS@10.0.0.1:104", "--config", cfg]) == 0
    page = _form(web, "/admin/destinations", {**DEST, "name": "d2"})
    assert page.status_code == 303, page.text
    api = web.client.post("/api/v1/destinations", json={**DEST, "name": "d3"}, headers=h)
    assert api.status_code == 201

    added = {e.object_id: e for e in _audit(web, object_type="caller")}
    assert {t: (added[t].action, added[t].actor) for t in ("CT1", "CT2", "CT3")} == {
        "CT1": ("caller.added", f"cli:{os_user()}"),
        "CT2": ("caller.added", "web:admin"),
        "CT3": ("caller.added", "api:admin"),
    }
    sources = {c.ae_title: c.source for c in list_callers(web.sessions)}
    assert (sources["CT1"], sources["CT2"], sources["CT3"]) == ("cli", "web", "api")
    dests = {e.object_id: e.action for e in _audit(web, object_type="destination")}
    assert dests == {
        "d1": "destination.added",
        "d2": "destination.added",
        "d3": "destination.added",
    }

    assert main(["callers", "remove", "CT1", "--config", cfg]) == 0
    assert _form(web, "/admin/callers/remove", {"ae_title": "CT2"}).status_code == 303
    assert web.client.delete("/api/v1/callers?ae_title=CT3", headers=h).status_code == 204
    assert main(["destinations", "remove", "d1", "--config", cfg]) == 0
    assert _form(web, "/admin/destinations/d2/remove", {}).status_code == 303
    assert web.client.delete("/api/v1/destinations/d3", headers=h).status_code == 204
    removed = {
        (e.object_type, e.object_id, e.actor.split(":")[0])
        for e in _audit(web)
        if e.action in ("caller.removed", "destination.removed")
    }
    assert removed == {
        ("caller", "CT1", "cli"),
        ("caller", "CT2", "web"),
        ("caller", "CT3", "api"),
        ("destination", "d1", "cli"),
        ("destination", "d2", "web"),
        ("destination", "d3", "api"),
    }
    assert {a.action for a in _audit(web, object_type="caller")} == {
        "caller.added",
        "caller.removed",
    }


@pytest.mark.parametrize("bad", ["A" * 17, "BAD\\AE", "   ", "CT\x01"])
def test_an_ae_title_is_refused_with_the_same_message_everywhere(
    web: Web, tmp_path: Path, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(validation.InvalidInputError) as refused:
        validation.ae_title(bad)
    message = str(refused.value)
    assert message.startswith("AE title must")
    cfg = _config(web, tmp_path)
    h = web.token("admin")
    web.login("admin")

    assert main(["callers", "add", bad, "--config", cfg]) == 2
    assert message in capsys.readouterr().err
    page = _form(web, "/admin/callers", {"ae_title": bad})
    assert page.status_code == 422 and html.escape(message) in page.text
    api = web.client.post("/api/v1/callers", json={"ae_title": bad}, headers=h)
    assert api.status_code == 422 and api.json()["detail"] == message

    remote = f"{bad}@10.0.0.1:104"
    assert main(["destinations", "add", "d1", remote, "--config", cfg]) == 2
    assert message in capsys.readouterr().err
    page = _form(web, "/admin/destinations", {**DEST, "ae_title": bad})
    assert page.status_code == 422 and html.escape(message) in page.text
    api = web.client.post("/api/v1/destinations", json={**DEST, "ae_title": bad}, headers=h)
    assert api.status_code == 422 and api.json()["detail"] == message

    assert list_callers(web.sessions) == [] or {c.ae_title for c in list_callers(web.sessions)} == {
        "MODALITY"
    }
    assert list_destinations(web.sessions) == []
    assert not _audit(web, action="caller.added") and not _audit(web, action="destination.added")


def test_a_valid_ae_title_is_accepted_everywhere_without_its_padding(
    web: Web, tmp_path: Path
) -> None:
    cfg = _config(web, tmp_path)
    h = web.token("admin")
    web.login("admin")
    sixteen = "ABCDEFGHIJKLMNOP"
    assert main(["callers", "add", f" {sixteen} ", "--host", "10.0.0.1", "--config", cfg]) == 0
    form = {"ae_title": f"{sixteen}  ", "host": "10.0.0.2"}
    assert _form(web, "/admin/callers", form).status_code == 303
    body = {"ae_title": f"  {sixteen}", "host": "10.0.0.3"}
    r = web.client.post("/api/v1/callers", json=body, headers=h)
    assert r.status_code == 201 and r.json()["ae_title"] == sixteen
    hosts = {c.host for c in list_callers(web.sessions) if c.ae_title == sixteen}
    assert hosts == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


# -- one transaction -----------------------------------------------------------------------------


def _refuse_inserts(web: Web, table: str) -> Callable[[], None]:
    """Make every insert into ``table`` fail (a trigger); returns what removes the trigger."""
    engine = web.storage.engine
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_insert() RETURNS trigger AS $$ "
                    "BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_insert()"
                )
            )

    def drop() -> None:
        on = "" if engine.dialect.name == "sqlite" else f" ON {table}"
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER refuse_{table}{on}"))

    return drop


def test_an_admin_change_and_its_audit_row_commit_together(web: Web) -> None:
    sm, actor = web.sessions, Actor.web("admin")
    admin_peers.add_destination(sm, actor, DEST)
    admin_users.create_token(sm, actor, "rad", "scripts")
    (token,) = list_tokens(sm)
    before = len(_audit(web))

    # the audit row cannot be written: the change is rolled back with it
    drop = _refuse_inserts(web, "audit_events")
    changes: list[Callable[[], object]] = [
        lambda: admin_peers.add_caller(sm, actor, "CT1"),
        lambda: admin_peers.add_destination(sm, actor, {**DEST, "name": "other"}),
        lambda: admin_peers.remove_destination(sm, actor, "pacs"),
        lambda: admin_users.add_user(sm, actor, "rad3", "radiologist", "third-rad-pw-000"),
        lambda: admin_users.set_disabled(sm, actor, "rad", True),
        lambda: admin_users.revoke_token(sm, actor, token.id),
    ]
    for change in changes:
        with pytest.raises(DBAPIError):
            change()
    drop()
    assert list_callers(sm) == [] or {c.ae_title for c in list_callers(sm)} == {"MODALITY"}
    assert [d.name for d in list_destinations(sm)] == ["pacs"]
    users = {u.name: u for u in list_users(sm)}
    assert "rad3" not in users and not users["rad"].disabled
    assert list_tokens(sm)[0].revoked_at is None
    assert len(_audit(web)) == before

    # the change fails: no audit row
    drop = _refuse_inserts(web, "callers")
    # (SQLite reports the trigger's abort as a constraint failure: read as a concurrent add)
    with pytest.raises((DBAPIError, ConflictError)):
        admin_peers.add_caller(sm, actor, "CT1")
    drop()
    with pytest.raises(ConflictError):
        admin_peers.add_destination(sm, actor, DEST)  # the name is taken
    with pytest.raises(NotFoundError):
        admin_peers.remove_caller(sm, actor, "NOPE")
    with pytest.raises(NotFoundError):
        admin_users.set_disabled(sm, actor, "nobody", True)
    with pytest.raises(InvalidEntryError):
        admin_peers.add_caller(sm, actor, "A" * 17)
    assert len(_audit(web)) == before

    # neither fails: both are there
    admin_peers.add_caller(sm, actor, "CT1")
    admin_users.set_disabled(sm, actor, "rad", True)
    events = _audit(web)
    assert len(events) == before + 2
    assert {(e.action, e.object_id, e.actor) for e in events[:2]} == {
        ("caller.added", "CT1", "web:admin"),
        ("user.disabled", "rad", "web:admin"),
    }


def test_the_cli_records_the_os_user_and_keeps_actor_only_as_a_note() -> None:
    actor = Actor.cli("  change ticket 42 ")
    assert actor.name == f"cli:{os_user()}" and actor.source == "cli"
    assert actor.detail({"host": None}) == {"host": None, "note": "change ticket 42"}
    assert Actor.cli().detail() == {}
    assert (Actor.web("ann").name, Actor.api("bob").name) == ("web:ann", "api:bob")


def test_user_and_token_actions_are_the_same_through_the_page_and_the_api(web: Web) -> None:
    h = web.token("admin")
    web.login("admin")
    web.token("rad")
    (rad_token,) = [t for t in list_tokens(web.sessions) if t.user_name == "rad"]
    body = {"name": "rad3", "role": "radiologist", "password": "third-rad-pw-000"}
    r = web.client.post("/api/v1/users", json=body, headers=h)
    assert r.status_code == 201 and r.json()["name"] == "rad3" and r.json()["disabled"] is False
    assert web.client.post("/api/v1/users", json=body, headers=h).status_code == 409
    short = web.client.post(
        "/api/v1/users", json={**body, "name": "x", "password": "short"}, headers=h
    )
    assert short.status_code == 422 and "at least 12 characters" in short.json()["detail"]
    page = _form(web, "/admin/users", {**body, "name": "rad4"})
    assert page.status_code == 303

    r = web.client.post("/api/v1/users/rad3/disable", headers=h)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert _form(web, "/admin/users/rad4/disable", {}).status_code == 303
    assert web.client.post("/api/v1/users/nobody/disable", headers=h).status_code == 404
    me = web.client.post("/api/v1/users/admin/disable", headers=h)
    assert me.status_code == 409 and "your own account" in me.json()["detail"]
    assert web.client.post("/api/v1/users/rad3/enable", headers=h).json()["disabled"] is False
    r = web.client.post(f"/api/v1/tokens/{rad_token.id}/revoke", headers=h)
    assert r.status_code == 204
    assert web.client.post(f"/api/v1/tokens/{rad_token.id}/revoke", headers=h).status_code == 404

    seen = {(e.action, e.object_id, e.actor) for e in _audit(web)}
    assert {
        ("user.added", "rad3", "api:admin"),
        ("user.added", "rad4", "web:admin"),
        ("user.disabled", "rad3", "api:admin"),
        ("user.disabled", "rad4", "web:admin"),
        ("user.enabled", "rad3", "api:admin"),
        ("token.revoked", str(rad_token.id), "api:admin"),
    } <= seen
    assert not [e for e in _audit(web, action="user.disabled") if e.object_id == "admin"]


def test_a_job_is_cancelled_through_the_api_and_the_cli_alike(
    web: Web, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from storage.jobs import promote_studies_now
    from storage.schema import Study

    now = datetime.now(UTC)
    uids = ["1.2.826.0.1.3680043.8.498.7", "1.2.826.0.1.3680043.8.498.8"]
    with web.sessions.begin() as session:
        for uid in uids:
            session.add(
                Study(
                    study_instance_uid=uid,
                    state="receiving",
                    first_received_at=now,
                    last_received_at=now,
                    instance_count=1,
                )
            )
    first, second = promote_studies_now(web.sessions, uids, now, max_attempts=3)
    h = web.token("admin")
    assert web.client.post(f"/api/v1/jobs/{first}/cancel", headers=h).status_code == 204
    again = web.client.post(f"/api/v1/jobs/{first}/cancel", headers=h)
    assert again.status_code == 409 and "not queued" in again.json()["detail"]
    assert web.client.post("/api/v1/jobs/999999/cancel", headers=h).status_code == 404
    assert main(["queue", "cancel", str(second), "--config", _config(web, tmp_path)]) == 0
    assert f"job {second} cancelled" in capsys.readouterr().out
    cancelled = {e.object_id: e.actor for e in _audit(web, action="job.cancelled")}
    assert cancelled == {str(first): "api:admin", str(second): f"cli:{os_user()}"}


def test_models_are_promoted_and_rolled_back_through_the_api(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.model_versions import active_version, ensure_active, register_version

    # these versions name no real bundle (the check of the files: test_model_digest_web.py)
    monkeypatch.setattr("xrayd.runtime.served_model.verify_version", lambda row: None)
    ensure_active(web.sessions, name="m", version="1.0.0", sha256="a" * 64, path="/a", actor="t")
    with web.sessions.begin() as session:
        register_version(
            session,
            name="m",
            version="1.0.0+r1",
            sha256="b" * 64,
            path="/b",
            state="candidate",
            actor="retrain",
            gate={"verdict": "passed"},
        )
    changed: list[int] = []
    web.ctx.model_changed = lambda: changed.append(1)
    h = web.token("admin")
    assert web.client.post("/api/v1/models/nope/promote", headers=h).status_code == 404
    r = web.client.post("/api/v1/models/1.0.0+r1/promote", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "active"
    active = active_version(web.sessions)
    assert active is not None and active.promoted_by == "api:admin"
    r = web.client.post("/api/v1/models/rollback", headers=h)
    assert r.status_code == 200 and r.json()["version"] == "1.0.0" and changed == [1, 1]
    events = [(e.action, e.object_id, e.actor) for e in _audit(web, object_type="model_version")]
    assert ("model.promoted", "1.0.0+r1", "api:admin") in events
    assert ("model.rolled_back", "1.0.0", "api:admin") in events


def test_passwords_tokens_and_unlocks_through_the_api_as_through_the_cli(
    web: Web, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = web.token("admin")
    r = web.client.post("/api/v1/users/rad/tokens", json={"label": "pacs", "days": 7}, headers=h)
    assert r.status_code == 201 and r.json()["token"].startswith("xrd_")
    rad = {"Authorization": f"Bearer {r.json()['token']}"}
    assert web.client.get("/api/v1/studies", headers=rad).status_code == 200
    too_long = web.client.post("/api/v1/users/rad/tokens", json={"days": 4000}, headers=h)
    assert too_long.status_code == 422
    message = too_long.json()["detail"]
    assert message == "days must be more than 0 and at most 3650"
    cfg = _config(web, tmp_path)
    with pytest.raises(SystemExit):  # argparse refuses it, with the same message
        main(["users", "token", "rad", "--days", "4000", "--config", cfg])
    assert message in capsys.readouterr().err
    assert web.client.post("/api/v1/users/nobody/tokens", json={}, headers=h).status_code == 404

    r = web.client.post(
        "/api/v1/users/rad/password", json={"password": "a-new-rad-password"}, headers=h
    )
    assert r.status_code == 200 and r.json()["tokens_revoked"] == 1
    assert web.client.get("/api/v1/studies", headers=rad).status_code == 401
    short = web.client.post("/api/v1/users/rad/password", json={"password": "x"}, headers=h)
    assert short.status_code == 422
    r = web.client.post("/api/v1/users/rad/unlock", headers=h)
    assert r.status_code == 200 and r.json() == {"failures_cleared": 0}

    seen = {(e.action, e.object_id, e.actor) for e in _audit(web) if e.actor == "api:admin"}
    assert {
        ("user.password_changed", "rad", "api:admin"),
        ("user.login_unlocked", "rad", "api:admin"),
    } <= seen
    assert [e.detail["user"] for e in _audit(web, action="token.created", actor="api:admin")] == [
        "rad"
    ]
