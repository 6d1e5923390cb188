"""Helpers for tests that talk to an in-process node (``start_node`` in the node conftest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from dicom_node.scu import RemoteAE
from storage.schema import Instance


def remote(node: Any) -> RemoteAE:
    """The node's listener as a peer to associate with."""
    return RemoteAE("XRAYD", "127.0.0.1", node.scp.port)


def rows(node: Any, model: Any) -> list[Any]:
    """Every row of ``model`` in the node's database."""
    with node.storage.sessions() as session:
        return list(session.scalars(select(model)))


def stored_file(node: Any, sop_uid: str) -> Path:
    """Where the node's spool keeps the instance ``sop_uid``."""
    with node.storage.sessions() as session:
        inst = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one()
        path: Path = node.storage.spool.absolute(inst.spool_path)
        return path
