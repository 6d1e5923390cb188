"""The admin page's promote and rollback buttons check a version's bundle against the sha256 the
registry recorded; an altered bundle is refused and the active model stays."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from models.bundle import bundle_identity, load_bundle, phantom_bundle_path, save_bundle
from storage.model_versions import active_version, ensure_active, register_version

from web_helpers import Web


def _register(web: Web, tmp_path: Path) -> Path:
    """Two real bundles: "1.0.0" active, "1.0.0+r1" a candidate that passed the gate."""
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(phantom_bundle_path(), first)
    shutil.copytree(phantom_bundle_path(), second)
    info = bundle_identity(first)
    ensure_active(
        web.sessions,
        name=info.name,
        version=info.version,
        sha256=info.sha256,
        path=str(first),
        actor="t",
    )
    with web.sessions.begin() as session:
        # the same files under another version: the registry records name and version too,
        # so the candidate's metadata must name it
        model = load_bundle(second)
        meta = dataclasses.replace(model.metadata, version="1.0.0+r1")
        candidate = save_bundle(second, model.network, meta)
        register_version(
            session,
            name=candidate.name,
            version="1.0.0+r1",
            sha256=candidate.sha256,
            path=str(second),
            state="candidate",
            actor="retrain",
            gate={"verdict": "passed"},
        )
    return second


def test_promoting_an_altered_bundle_is_refused(web: Web, tmp_path: Path) -> None:
    second = _register(web, tmp_path)
    model = load_bundle(second)
    with torch.no_grad():
        model.network.fracture_head.bias.add_(3.0)
    save_bundle(second, model.network, model.metadata)  # other weights, consistent metadata
    web.login("admin")
    csrf = web.csrf(page="/admin/models")
    r = web.client.post("/admin/models/1.0.0+r1/promote", data={"csrf_token": csrf})
    assert r.status_code == 409
    assert "cannot be served" in r.text and "registry sha256" in r.text
    active = active_version(web.sessions)
    assert active is not None and active.version != "1.0.0+r1"


def test_promoting_an_intact_bundle_goes_through(web: Web, tmp_path: Path) -> None:
    _register(web, tmp_path)
    web.login("admin")
    csrf = web.csrf(page="/admin/models")
    r = web.client.post("/admin/models/1.0.0+r1/promote", data={"csrf_token": csrf})
    assert r.status_code == 200 and "Model promoted" in r.text
    active = active_version(web.sessions)
    assert active is not None and active.version == "1.0.0+r1"
