"""What a killed process leaves, and what processes starting together race for:

* the image a SIGKILLed worker was reading from the object store (patient data in its
  ``tmp/fetch-<pid>/``) is removed by the next xrayd start on that host, and only a dead
  process's folder is;
* workers starting at once on an empty model registry all get the one active model (there is
  no row to lock yet: the losers of the race read the winner's).
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from storage.bytestore import fetch_dir, remove_orphaned_fetches
from storage.model_versions import ModelVersionRow, ensure_active
from storage.spool import Spool


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_dead_processs_downloads_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    dead = fetch_dir(spool, _dead_pid())
    mine = fetch_dir(spool, os.getpid())
    for folder in (dead, mine):
        folder.mkdir(parents=True)
        (folder / "xrayd-abc.fetch").write_bytes(b"DICM pixels of a patient")
    unrelated = spool.tmp_dir() / "upload.part"
    unrelated.write_bytes(b"a transfer in progress")

    assert remove_orphaned_fetches(spool) == 1
    assert not dead.exists()
    assert (mine / "xrayd-abc.fetch").exists()
    assert unrelated.exists()  # not ours to judge: the listener's cleanup handles .part files
    assert remove_orphaned_fetches(spool) == 0


def test_workers_starting_together_on_an_empty_registry_agree(
    sm: sessionmaker[Session],
) -> None:
    barrier = threading.Barrier(4)
    rows: list[ModelVersionRow] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            rows.append(
                ensure_active(
                    sm, name="m", version="1.0.0", sha256="ab" * 32, path="/b", actor="system"
                )
            )
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(rows) == 4 and len({row.id for row in rows}) == 1
    assert all(row.state == "active" for row in rows)
