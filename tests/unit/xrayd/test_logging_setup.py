"""Log format: one JSON object per line (journald), text on a terminal, "auto" choosing."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from config.settings import LoggingSettings
from dicom_node.received import uid_log_tag
from xrayd.runtime.logging_setup import (
    configure_logging,
    reset_logging,
    resolve_format,
    under_journald,
)


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[TextIO]:
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as fh:
        yield fh
    reset_logging()


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


UID = "1.2.826.0.1.3680043.8.498.9988776655443322"
BIRTH_DATE = "1987" + "1345"  # built here: no source line in a traceback holds it


def test_failures_are_logged_without_the_values_they_quote(
    stream: TextIO, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("INFO", "json", stream=stream)
    own = logging.getLogger("xrayd.test")
    try:
        raise ValueError(f"Invalid value for VR DA: {BIRTH_DATE!r}.")
    except ValueError as exc:
        own.exception("job %d failed", 7)
        own.error("refusing C-STORE %s: %s", "ab12", exc)
    logging.getLogger("pydicom").warning("Invalid value for VR PN: %r", "Doe^Jane")
    logging.getLogger("xrayd.test").error(KeyError(f"no {BIRTH_DATE}"))  # an exception as msg
    logging.getLogger("highdicom.base").warning('copy attributes from dataset "%s"', UID)
    own.info("stored %s from %r", UID, "MODALITY")
    first, second, third, as_msg, fourth, fifth = (json.loads(line) for line in lines(stream))
    assert as_msg["message"] == "KeyError: '***'"
    assert first["message"] == "job 7 failed"
    assert first["exception"].startswith("Traceback (most recent call last):")
    assert "test_logging_setup.py" in first["exception"]  # the frames stay
    assert first["exception"].endswith("ValueError: Invalid value for VR DA (withheld).")
    assert (
        second["message"]
        == "refusing C-STORE ab12: ValueError: Invalid value for VR DA (withheld)."
    )
    assert third["message"] == "Invalid value for VR PN (withheld)."
    assert fourth["message"] == f'copy attributes from dataset "uid:{uid_log_tag(UID)}"'
    assert fifth["message"] == f"stored uid:{uid_log_tag(UID)} from 'MODALITY'"  # own words kept
    everything = stream.getvalue() if hasattr(stream, "getvalue") else "\n".join(lines(stream))
    for secret in (BIRTH_DATE, "Doe", UID):
        assert secret not in everything
    # Any other handler (here pytest's) gets the same safe records: made so when created.
    for record in caplog.records:
        assert record.exc_info is None
        rendered = logging.Formatter().format(record)
        assert BIRTH_DATE not in rendered and "Doe" not in rendered and UID not in rendered
    assert any("Traceback" in (record.exc_text or "") for record in caplog.records)


def test_python_warnings_are_logged_redacted(stream: TextIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR DA: {BIRTH_DATE!r}.", UserWarning, stacklevel=1)
    [*_, line] = [x for x in lines(stream) if "py.warnings" in x]
    assert "UserWarning: Invalid value for VR DA (withheld)." in line
    assert BIRTH_DATE not in "\n".join(lines(stream))


def test_a_record_whose_arguments_do_not_fit_is_still_written(stream: TextIO) -> None:
    configure_logging("INFO", "text", stream=stream)
    logging.getLogger("xrayd.test").info("two %s %s", "only-one")
    [line] = lines(stream)
    assert "two %s %s (arguments withheld" in line and "only-one" not in line


def test_reset_logging_restores_the_record_factory(stream: TextIO) -> None:
    before = logging.getLogRecordFactory()
    configure_logging("INFO", "text", stream=stream)
    configure_logging("INFO", "text", stream=stream)  # idempotent: wrapped once
    assert logging.getLogRecordFactory() is not before
    reset_logging()
    assert logging.getLogRecordFactory() is before
    assert not [h for h in logging.getLogger().handlers if getattr(h, "_xrayd", False)]
