"""The CLI started by hand (no systemd UMask=0077): what xrayd creates is for its user only;
API tokens with an expiry; a new password revokes tokens; a lock-out can be lifted."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from retrain.atomic import new_partial_dir, write_file_atomic

XRAYD = str(Path(sys.executable).parent / "xrayd")
LOOSE = 0o022  # a common login shell's umask: group and others could read


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "xrayd.toml"
    cfg.write_text(
        '[node]\nae_title = "XRAYD"\nhost = "127.0.0.1"\nport = 0\nmin_free_mb = 0\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\n'
    )
    return cfg


def _xrayd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    out = subprocess.run(
        [XRAYD, *args], capture_output=True, text=True, timeout=120, env=env, umask=LOOSE
    )
    assert out.returncode == 0, out.stderr
    return out


def _loose(root: Path) -> list[str]:
    """Everything under ``root`` (itself included) that group or others may use."""
    return [
        f"{p.relative_to(root.parent)} {stat.filemode(p.stat().st_mode)}"
        for p in [root, *root.rglob("*")]
        if p.stat().st_mode & 0o077
    ]


def test_files_made_by_hand_are_private_and_tokens_follow_the_password(tmp_path: Path) -> None:
    cfg = str(_config(tmp_path))
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    _xrayd("users", "add", "boss", "--role", "admin", "--password-file", str(pw), "--config", cfg)
    data = tmp_path / "data"
    assert any(data.rglob("*.sqlite3")) and (data / "spool").is_dir()
    assert _loose(data) == []

    out = _xrayd("users", "token", "boss", "--days", "7", "--config", cfg)
    assert out.stdout.strip().startswith("xrd_") and "expires in 7 day(s)" in out.stderr
    listed = _xrayd("users", "tokens", "--config", cfg).stdout
    assert "active" in listed and " expires 20" in listed

    pw.write_text("another long password\n")
    out = _xrayd("users", "passwd", "boss", "--password-file", str(pw), "--config", cfg)
    assert "1 API token(s) revoked" in out.stdout
    assert "revoked" in _xrayd("users", "tokens", "--config", cfg).stdout
    assert "0 counted failed login(s)" in _xrayd("users", "unlock", "boss", "--config", cfg).stdout
    assert _loose(data) == []


def test_bundles_are_written_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(LOOSE)
    try:
        partial = new_partial_dir(tmp_path / "models", "1.2.3")
        write_file_atomic(partial / "metadata.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(partial.stat().st_mode) == 0o700
    assert stat.S_IMODE((partial / "metadata.json").stat().st_mode) == 0o600
