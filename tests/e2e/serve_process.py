"""``xrayd serve`` as a subprocess for the systemd-facing tests: config, start, log lines."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from helpers import PHANTOM

XRAYD = str(Path(sys.executable).parent / "xrayd")


def write_config(tmp_path: Path, database_url: str = "", extra: str = "") -> Path:
    """A node on a free port with the web UI on a free loopback port (as tests/e2e/test_cli)."""
    cfg = tmp_path / "xrayd.toml"
    cfg.write_text(
        '[node]\nae_title = "XRAYD"\nhost = "127.0.0.1"\nport = 0\nmin_free_mb = 0\n'
        '[[node.callers]]\nae_title = "MODALITY"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\ndatabase_url = "{database_url}"\n'
        f'[model]\nruntime = "eager"\nbundle = "{PHANTOM}"\n'
        '[web]\nhost = "127.0.0.1"\nport = 0\n' + extra
    )
    return cfg


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    env.pop("NOTIFY_SOCKET", None)
    env.update(extra)
    return env


def threads_taking_stop_signals(pid: int) -> list[int]:
    """The threads of ``pid`` other than the main one that do not block SIGTERM or SIGINT."""
    stop_mask = (1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))
    open_to_them = []
    for task in (Path("/proc") / str(pid) / "task").iterdir():
        if int(task.name) == pid:
            continue  # the main thread: in sigwait(), which unblocks them while it waits
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        blocked = next(line for line in status.splitlines() if line.startswith("SigBlk:"))
        if int(blocked.split()[1], 16) & stop_mask != stop_mask:
            open_to_them.append(int(task.name))
    return open_to_them


class ServeProcess:
    """``xrayd serve --config CFG`` (or ``command``: ``listener``, ``worker --queues ...``);
    stdout's start lines parsed, stderr kept line by line. A worker prints one start line
    ("xrayd: worker for ..."): ``port`` and ``web_port`` are then 0."""

    def __init__(
        self, cfg: Path, env: dict[str, str] | None = None, command: tuple[str, ...] = ("serve",)
    ) -> None:
        self.proc = subprocess.Popen(
            [XRAYD, *command, "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env() if env is None else env,
        )
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "xrayd: listening as XRAYD on port N"
        self.port = self.web_port = 0
        if command[0] == "worker":
            assert "worker for" in line, line + self.stderr_text()
            return
        assert "listening" in line, line + self.stderr_text()
        self.port = int(line.rsplit(" ", 1)[1])
        line = self.proc.stdout.readline()  # "xrayd: web UI on 127.0.0.1 port N"
        assert "web UI" in line, line
        self.web_port = int(line.rsplit(" ", 1)[1])

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_for_log(self, text: str, timeout: float = 120) -> str:
        """Block until a stderr line contains ``text`` (the process's own progress report)."""
        for line in self.stderr_lines:
            if text in line:
                return line
        while True:
            line = self._lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"xrayd exited before logging {text!r}:\n{self.stderr_text()}")
            if text in line:
                return line

    def stderr_text(self) -> str:
        if self.proc.poll() is not None:
            self._reader.join(timeout=10)
        return "".join(self.stderr_lines)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
