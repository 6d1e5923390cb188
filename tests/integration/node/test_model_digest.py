"""The model registry's recorded sha256 is checked whenever a registered bundle is loaded or made
active: at start, when the analysis workers switch, and before a promotion or rollback.

Bundles are copies of the phantom bundle in the test's directory; "tampering" rewrites one the
way someone with write access would (other weights, and metadata naming their sha256), so the
bundle is self-consistent and only the registry's record can tell.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from models.bundle import load_bundle, phantom_bundle_path, save_bundle
from storage.model_versions import (
    RegistryError,
    active_version,
    promote,
    register_version,
    rollback,
)
from xrayd.runtime.model_holder import ModelHolder
from xrayd.runtime.node import Node, open_storage
from xrayd.runtime.served_model import (
    active_bundle_reader,
    register_configured_model,
    verify_active_model,
    verify_version,
)

from helpers import make_settings

NEW = "1.0.0+t2"


def _copy(directory: Path) -> Path:
    shutil.copytree(phantom_bundle_path(), directory)
    return directory


def _tamper(directory: Path) -> None:
    model = load_bundle(directory)
    with torch.no_grad():
        model.network.fracture_head.bias.add_(3.0)
    save_bundle(directory, model.network, model.metadata)


class Env:
    """A registry (SQLite) whose first active version is a copy of the phantom bundle, and a
    second registered version (a candidate that passed the gate) with other weights."""

    def __init__(self, tmp_path: Path) -> None:
        self.first = _copy(tmp_path / "models" / "first")
        self.settings = make_settings(tmp_path / "data", model={"bundle": str(self.first)})
        self.storage = open_storage(self.settings, create_if_empty=True, require_current=True)
        self.sessions = self.storage.sessions
        self.original = register_configured_model(self.settings, self.sessions)
        self.second = tmp_path / "models" / "second"
        model = load_bundle(self.first)
        with torch.no_grad():
            model.network.fracture_head.bias.add_(0.75)
        info = save_bundle(
            self.second, model.network, dataclasses.replace(model.metadata, version=NEW)
        )
        with self.sessions.begin() as session:
            register_version(
                session,
                name=info.name,
                version=NEW,
                sha256=info.sha256,
                path=str(self.second.resolve()),
                state="candidate",
                actor="test",
                gate={"verdict": "passed"},
            )

    def holder(self) -> ModelHolder:
        return ModelHolder(
            self.settings.model, active=active_bundle_reader(self.sessions), check_seconds=0
        )

    def active(self) -> str:
        row = active_version(self.sessions)
        assert row is not None
        return row.version


@pytest.fixture
def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    yield e
    e.storage.engine.dispose()


def test_the_workers_keep_their_model_when_the_promoted_bundle_was_altered(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    holder = env.holder()
    assert holder.get().model.info.version == env.original.version
    promote(env.sessions, NEW, actor="test")  # e.g. promoted before the file was altered
    _tamper(env.second)
    holder.refresh()
    with caplog.at_level(logging.ERROR, logger="xrayd.runtime.model_holder"):
        ready = holder.get()
    assert ready.model.info.version == env.original.version  # the previous model serves on
    assert "model switch refused" in caplog.text
    assert "not the ones the model registry recorded" in caplog.text
    # the refused bundle is not loaded again at every job
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="xrayd.runtime.model_holder"):
        assert holder.get() is ready
    assert caplog.text == ""


def test_the_workers_switch_to_an_intact_promoted_bundle(env: Env) -> None:
    holder = env.holder()
    assert holder.get().model.info.version == env.original.version
    promote(env.sessions, NEW, actor="test", check=verify_version)
    holder.refresh()
    assert holder.get().model.info.version == NEW


def test_a_first_load_of_an_altered_bundle_is_refused(env: Env) -> None:
    _tamper(env.first)
    with pytest.raises(Exception, match="not the ones the model registry recorded"):
        env.holder().get()


def test_promotion_of_an_altered_bundle_is_refused(env: Env) -> None:
    _tamper(env.second)
    with pytest.raises(RegistryError, match="cannot be served") as err:
        promote(env.sessions, NEW, actor="test", check=verify_version)
    assert "registry sha256" in str(err.value)
    assert env.active() == env.original.version  # nothing changed


def test_rollback_to_an_altered_bundle_is_refused(env: Env) -> None:
    promote(env.sessions, NEW, actor="test", check=verify_version)
    _tamper(env.first)
    with pytest.raises(RegistryError, match="cannot be served"):
        rollback(env.sessions, actor="test", check=verify_version)
    assert env.active() == NEW
    shutil.rmtree(env.first)
    _copy(env.first)  # restored: the rollback goes through
    assert rollback(env.sessions, actor="test", check=verify_version).version == (
        env.original.version
    )


def test_the_node_does_not_start_on_an_altered_active_bundle(env: Env) -> None:
    verify_active_model(env.sessions)  # intact: nothing to say
    _tamper(env.first)
    with pytest.raises(RegistryError) as err:
        verify_active_model(env.sessions)
    assert "xrayd models rollback" in str(err.value)
    node = Node(env.settings, env.storage)
    with pytest.raises(RegistryError, match="cannot be served"):
        node.start()
    assert not any(t.ident is not None for t in node.threads)
