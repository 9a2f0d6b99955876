"""Machine-readable logs: ``--log-json FILE`` (or ``-`` for stderr), one JSON object a line.

Every line carries a stable ``event`` id (``export.start``, ``object.failed``, …) that
monitoring can match on whatever the wording of ``message``, plus ``time`` (UTC, ISO 8601),
``ts`` (seconds since the epoch), ``level``, ``logger`` and the event's own fields. Plain
log calls that are not events get the id ``log.message``.

The pipeline logs events with :func:`log_event`; the same call also produces the ordinary
human-readable line on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

GENERIC_EVENT = "log.message"
_EVENT_ATTR = "shrinkwrap_event"
_FIELDS_ATTR = "shrinkwrap_fields"

# The stable ids. Add new ones here (never rename one: dashboards match on them).
EVENTS: Mapping[str, str] = {
    "export.start": "an export run starts (fqrn, revision, root_hash, spec_digest)",
    "export.up_to_date": "the destination already holds this root hash and spec",
    "export.kept_newer": "the destination holds a newer revision than the server offers: kept",
    "export.finish": "an export run ended (fqrn, revision, exit_code, files, bytes, seconds)",
    "catalog.applied": "a catalog is fully applied to the tree (fqrn, mountpoint, digest)",
    "object.failed": "an object could not be exported (fqrn, name, reason)",
    "lock.waiting": "another run holds the lock; waiting (lock_file, holder)",
    "gc.start": "garbage collection starts (data_dir, dry_run)",
    "gc.remove": "an object or temporary file is (or would be) removed (kind, name, size)",
    "gc.finish": "garbage collection ended (objects_removed, bytes_removed, …)",
    GENERIC_EVENT: "any other log message",
}


def log_event(
    logger: logging.Logger,
    event_id: str,
    message: str,
    /,
    *,
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """Log ``message`` as the event ``event_id`` with ``fields`` (JSON-serialisable, or str)."""
    logger.log(level, message, extra={_EVENT_ATTR: event_id, _FIELDS_ATTR: fields})


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        document: dict[str, Any] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, _EVENT_ATTR, GENERIC_EVENT),
            "message": record.getMessage(),
        }
        fields = getattr(record, _FIELDS_ATTR, None)
        if fields:
            for key, value in fields.items():
                document.setdefault(key, value)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, ensure_ascii=False, default=str, separators=(",", ":"))


class _LineFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Appends to a file, flushing after every line (a crash loses nothing)."""

    def __init__(self, path: str) -> None:
        super().__init__(open(path, "a", encoding="utf-8", buffering=1))  # noqa: SIM115

    def close(self) -> None:
        try:
            self.flush()
            stream: TextIO = self.stream
            stream.close()
        finally:
            super().close()


def install_json_log(target: str, *, level: int = logging.INFO) -> logging.Handler:
    """Send log records as JSON lines to ``target`` (a file path, or ``-`` for stderr).

    The JSON log keeps INFO events even when ``--quiet`` silences the human-readable
    output: existing handlers keep the root logger's previous level. With ``-`` the JSON
    lines replace the human-readable ones on stderr. Returns the handler (to remove it).
    """
    root = logging.getLogger()
    previous_level = root.level
    for handler in list(root.handlers):
        if target == "-" and _writes_to_stderr(handler):
            root.removeHandler(handler)
        elif handler.level == logging.NOTSET:
            handler.setLevel(previous_level)
    json_handler: logging.Handler
    if target == "-":
        json_handler = logging.StreamHandler(sys.stderr)
    else:
        try:
            json_handler = _LineFileHandler(target)
        except OSError as error:
            from shrinkwrap_async.exitcodes import UsageError

            raise UsageError(f"cannot open --log-json file {target}: {error.strerror}") from error
    json_handler.setFormatter(JsonFormatter())
    json_handler.setLevel(level)
    root.addHandler(json_handler)
    root.setLevel(min(previous_level, level))
    return json_handler


def _writes_to_stderr(handler: logging.Handler) -> bool:
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler | _LineFileHandler)
        and getattr(handler, "stream", None) in (sys.stderr, sys.__stderr__)
    )


def add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-json",
        metavar="FILE",
        default=None,
        help="also write one JSON object per event to FILE (appended); '-' writes them to "
        "stderr instead of the usual messages",
    )
