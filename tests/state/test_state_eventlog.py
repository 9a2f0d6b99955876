"""JSON event log: one parseable object per line, with stable ids and fields."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrinkwrap_async.state.eventlog import (
    EVENTS,
    GENERIC_EVENT,
    install_json_log,
    log_event,
)


@pytest.fixture
def clean_root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def test_events_as_json_lines(tmp_path: Path, clean_root_logger: logging.Logger) -> None:
    clean_root_logger.setLevel(logging.WARNING)  # as with --quiet
    target = tmp_path / "events.jsonl"
    install_json_log(str(target))
    logger = logging.getLogger("shrinkwrap_async.test")
    log_event(logger, "export.start", "export of fix1 r2", fqrn="fix1.test.local", revision=2)
    log_event(
        logger,
        "object.failed",
        "object missing",
        level=logging.WARNING,
        fqrn="fix1.test.local",
        name="data/ab/cdef",
        reason="404",
        path=Path("/x"),
    )
    logger.info("a plain message with %d args", 2)
    logger.debug("below the JSON level: not written")
    log_event(logger, "export.finish", "done", exit_code=0, files=166, bytes=7_000_000)

    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [line["event"] for line in lines] == [
        "export.start",
        "object.failed",
        GENERIC_EVENT,
        "export.finish",
    ]
    assert all(line["event"] in EVENTS for line in lines)
    start, failed, plain, finish = lines
    assert start["fqrn"] == "fix1.test.local" and start["revision"] == 2
    assert start["level"] == "INFO" and start["message"] == "export of fix1 r2"
    assert start["time"].endswith("Z") and isinstance(start["ts"], float)
    assert failed["level"] == "WARNING" and failed["reason"] == "404" and failed["path"] == "/x"
    assert plain["message"] == "a plain message with 2 args"
    assert finish["files"] == 166 and finish["exit_code"] == 0


def test_json_to_stderr_replaces_text_lines(
    capsys: pytest.CaptureFixture[str], clean_root_logger: logging.Logger
) -> None:
    import sys

    text_handler = logging.StreamHandler(sys.stderr)
    clean_root_logger.addHandler(text_handler)
    clean_root_logger.setLevel(logging.INFO)
    install_json_log("-")
    assert text_handler not in clean_root_logger.handlers
    log_event(logging.getLogger("t"), "gc.finish", "gc done", objects_removed=3)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert json.loads(err[0])["objects_removed"] == 3


def test_gc_command_writes_json_events(
    tmp_path: Path, clean_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    from shrinkwrap_async.cli import main

    (tmp_path / ".data" / "00" / "00").mkdir(parents=True)
    (tmp_path / ".data" / "00" / "00" / "orphan.meta").write_bytes(b"1234")
    log_file = tmp_path / "gc.jsonl"
    assert main(["gc", "-x", str(tmp_path), "-q", "--log-json", str(log_file)]) == 0
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    finish = [e for e in events if e["event"] == "gc.finish"]
    assert events[0]["event"] == "gc.start"
    assert finish and finish[0]["objects_removed"] == 1 and finish[0]["bytes_removed"] == 4
    assert capsys.readouterr().out == ""  # quiet on success
