"""Log format: one JSON object per line (journald), text on a terminal, "auto" choosing."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from config.settings import LoggingSettings
from xrayd.logging_setup import configure_logging, resolve_format, under_journald


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[TextIO]:
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as fh:
        yield fh
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_xrayd", False):
            root.removeHandler(handler)


def journal_stream_of(fh: TextIO) -> str:
    st = os.fstat(fh.fileno())
    return f"{st.st_dev}:{st.st_ino}"


def lines(fh: TextIO) -> list[str]:
    fh.flush()
    fh.seek(0)
    return fh.read().splitlines()


def test_json_lines_carry_time_level_logger_message_and_extra(stream: TextIO) -> None:
    configure_logging("INFO", "json", stream=stream)
    log = logging.getLogger("xrayd.test")
    log.info("stored %s", "abc123", extra={"study_id": 7, "sop": "abc123", "ok": True})
    log.warning("two\nlines", extra={"path": Path("/x")})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"job_id": 3})
    log.debug("not at INFO")
    out = lines(stream)
    assert len(out) == 3  # a multi-line message or a traceback stays on its line
    first, second, third = (json.loads(line) for line in out)
    assert set(first) == {"time", "level", "logger", "message", "study_id", "sop", "ok"}
    assert first["level"] == "INFO" and first["logger"] == "xrayd.test"
    assert first["message"] == "stored abc123"
    assert (first["study_id"], first["ok"]) == (7, True)
    assert first["time"].endswith("+00:00")  # ISO 8601, UTC
    assert second["message"] == "two\nlines" and second["path"] == "/x"
    assert third["job_id"] == 3 and "ValueError: boom" in third["exception"]


def test_auto_is_json_under_journald_and_text_elsewhere(stream: TextIO) -> None:
    env = {"JOURNAL_STREAM": journal_stream_of(stream)}
    assert under_journald(stream, env)
    assert resolve_format("auto", stream, env) == "json"
    assert resolve_format("auto", stream, {}) == "text"
    # A child whose stderr was redirected keeps the variable: it names another file.
    assert resolve_format("auto", stream, {"JOURNAL_STREAM": "1:2"}) == "text"
    assert resolve_format("auto", stream, {"JOURNAL_STREAM": "garbage"}) == "text"
    assert resolve_format("text", stream, env) == "text"
    assert resolve_format("json", stream, {}) == "json"


def test_configure_auto_under_journald_writes_json(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(stream))
    configure_logging("INFO", "auto", stream=stream)
    logging.getLogger("xrayd.x").info("hello")
    assert json.loads(lines(stream)[0])["message"] == "hello"


def test_configure_auto_without_journald_writes_text(
    stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging("INFO", "auto", stream=stream)
    logging.getLogger("xrayd.x").info("hello")
    [line] = lines(stream)
    assert line.endswith("INFO    xrayd.x: hello")


def test_auto_is_the_default() -> None:
    assert LoggingSettings().format == "auto"
