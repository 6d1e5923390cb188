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
