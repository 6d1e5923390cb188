"""``--config`` before or after the subcommand names the same file; twice with different files is
refused. Before, ``xrayd --config FILE users add ...`` ignored FILE and wrote a new database
under the home directory, silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

XRAYD = str(Path(sys.executable).parent / "xrayd")


def _config(tmp_path: Path, name: str) -> Path:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / name}"\n')
    return cfg


def _xrayd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    env["HOME"] = str(home)  # a default database would land here
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    return subprocess.run([XRAYD, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_is_honoured_before_or_after_the_subcommand(tmp_path: Path, where: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cfg = _config(tmp_path, "site")
    secret = tmp_path / "password"
    secret.write_text("a long enough password 123\n")
    add = ["users", "add", "alice", "--role", "admin", "--password-file", str(secret)]
    argv = ["--config", str(cfg), *add] if where == "before" else [*add, "--config", str(cfg)]
    out = _xrayd(home, *argv)
    assert out.returncode == 0, out.stderr
    listed = _xrayd(home, "users", "list", "--config", str(cfg))
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout
    assert (tmp_path / "site").is_dir()
    assert (tmp_path / "site" / "xrayd.sqlite3").is_file()
    assert not list(home.rglob("xrayd.sqlite3")), "a database was created under the home directory"


def test_two_different_config_files_are_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    one, two = _config(tmp_path, "one"), _config(tmp_path, "two")
    out = _xrayd(home, "--config", str(one), "users", "list", "--config", str(two))
    assert out.returncode == 2
    assert "--config given twice" in out.stderr
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()
