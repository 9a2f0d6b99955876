"""What a destination holds and how its last runs ended (``shrinkwrap-async status``).

Read from the state database (opened read-only, so that a running export is not disturbed
and no lock is taken: probing the lock could make a starting export find it held) and the
provenance record of each repository. A run still marked running is told apart by its
process: alive on this host (running now), gone (interrupted: the next run resumes it), or
on another host (not known from here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any

from shrinkwrap_async.exitcodes import UsageError
from shrinkwrap_async.state.db import (
    ABORTED,
    PARTIAL,
    RUNNING,
    SUCCEEDED,
    StateReader,
    default_state_path,
)
from shrinkwrap_async.state.provenance import PROVENANCE_DIR, read_export_record, utc_stamp
from shrinkwrap_async.store.data_store import process_alive

# What a repository's state says about it.
OK = "ok"  # the last run succeeded
RUNNING_NOW = "running"  # a run is going on this host
NEEDS_RERUN = "needs-rerun"  # the last run failed objects, stopped, or was killed
ELSEWHERE = "running-elsewhere"  # a run of another host is marked running
UNRECORDED = "unrecorded"  # exported without run records (by cvmfs_shrinkwrap)
HEALTHY = (OK, RUNNING_NOW, ELSEWHERE, UNRECORDED)

FAILURES_SHOWN = 5


@dataclasses.dataclass
class LastRun:
    status: str  # succeeded, partial, aborted, running
    revision: int
    started_at: str
    finished_at: str | None
    exit_code: int | None
    files: int | None
    bytes: int | None
    pid: int | None
    host: str | None
    failures: int
    first_failures: list[tuple[str, str]]


@dataclasses.dataclass
class RepositoryStatus:
    fqrn: str
    state: str
    revision: int | None = None  # of the tree (the last completed export)
    root_hash: str | None = None
    exported_at: str | None = None
    publish_time: str | None = None
    pinned_by: str | None = None
    spec: list[str] = dataclasses.field(default_factory=list)
    last_run: LastRun | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def destination_status(dest_base: Path, fqrn: str | None = None) -> list[RepositoryStatus]:
    """The status of ``fqrn`` (default: every repository) exported into ``dest_base``."""
    path = default_state_path(dest_base)
    if not path.is_file():
        unrecorded = _unrecorded(dest_base, fqrn)
        if not unrecorded:
            raise UsageError(f"nothing was exported into {dest_base} ({path} is missing)")
        return unrecorded
    try:
        with contextlib.closing(StateReader(path)) as reader:
            names = [fqrn] if fqrn else reader.repositories()
            found = [_repository(reader, dest_base, name) for name in names]
    except sqlite3.Error as error:
        raise UsageError(f"cannot read {path}: {error}") from error
    if fqrn and found[0].last_run is None and found[0].revision is None:
        raise UsageError(f"{fqrn} was never exported into {dest_base}")
    return found


def _unrecorded(dest_base: Path, fqrn: str | None) -> list[RepositoryStatus]:
    """Exports with provenance but no state database: made by cvmfs_shrinkwrap (or with the
    database removed). Nothing is known of their runs; the next export walks the tree."""
    provenance = dest_base / PROVENANCE_DIR
    try:
        names = sorted(p.name for p in provenance.iterdir() if (p / "src.info").is_file())
    except OSError:
        return []
    return [RepositoryStatus(name, UNRECORDED) for name in names if fqrn in (None, name)]


def _repository(reader: StateReader, dest_base: Path, fqrn: str) -> RepositoryStatus:
    run = _last_run(reader, fqrn)
    status = RepositoryStatus(fqrn, _state(run), last_run=run)
    exported = reader.last_export(fqrn)
    if exported is not None:
        status.revision, status.root_hash = exported.revision, exported.root_hash
    try:
        record = read_export_record(dest_base, fqrn)
    except UsageError:  # no provenance record (yet): the database says what it knows
        return status
    if exported is not None:
        status.exported_at = record.get("exported_at")
    publish_time = record.get("publish_time")
    if isinstance(publish_time, int):
        status.publish_time = utc_stamp(publish_time)
    status.pinned_by = record.get("pinned_by")
    spec = record.get("spec")
    status.spec = spec.splitlines() if isinstance(spec, str) else []
    return status


def _last_run(reader: StateReader, fqrn: str) -> LastRun | None:
    run = reader.latest_run(fqrn)
    if run is None:
        return None
    count, first = reader.failures(run.id, FAILURES_SHOWN)
    return LastRun(
        status=run.status,
        revision=run.revision,
        started_at=utc_stamp(run.started_at),
        finished_at=None if run.finished_at is None else utc_stamp(run.finished_at),
        exit_code=run.exit_code,
        files=run.files,
        bytes=run.bytes_total,
        pid=run.pid,
        host=run.host,
        failures=count,
        first_failures=[(failure.name, failure.reason) for failure in first],
    )


def _state(run: LastRun | None) -> str:
    if run is None or run.status == SUCCEEDED:
        return OK
    if run.status in (PARTIAL, ABORTED):
        return NEEDS_RERUN
    if run.status == RUNNING:
        if run.host not in (None, os.uname().nodename):  # the name the database records
            return ELSEWHERE
        return RUNNING_NOW if run.pid is not None and process_alive(run.pid) else NEEDS_RERUN
    return NEEDS_RERUN


def describe(status: RepositoryStatus) -> list[str]:
    """Lines for a terminal: the tree, then the last run."""
    if status.revision is not None:
        head = f"{status.fqrn}: revision {status.revision} (root catalog {status.root_hash})"
        if status.exported_at:
            head += f", exported {status.exported_at}"
        if status.publish_time:
            head += f", published {status.publish_time}"
        if status.pinned_by:
            head += f", pinned by {status.pinned_by}"
    elif status.state == UNRECORDED:
        head = (
            f"{status.fqrn}: exported without run records (by cvmfs_shrinkwrap, or the state "
            "database was removed); the next export walks the tree and records it"
        )
    else:
        head = f"{status.fqrn}: no complete export yet"
    lines = [head]
    if status.spec:
        shown = ", ".join(status.spec[:4]) + (", ..." if len(status.spec) > 4 else "")
        count = len(status.spec)
        lines.append(f"  spec: {shown} ({count} line{'' if count == 1 else 's'})")
    run = status.last_run
    if run is not None:
        lines.append("  last run: " + _run_line(status.state, run))
        for name, reason in run.first_failures:
            lines.append(f"    failed: {name}: {reason}")
        if run.failures > len(run.first_failures):
            lines.append(f"    ... and {run.failures - len(run.first_failures)} more")
    return lines


def _run_line(state: str, run: LastRun) -> str:
    where = f"pid {run.pid} on {run.host}"
    if state == RUNNING_NOW:
        return f"running since {run.started_at} towards revision {run.revision} ({where})"
    if state == ELSEWHERE:
        return (
            f"marked running since {run.started_at} ({where}; cannot tell from here whether "
            "it still runs)"
        )
    if run.status == RUNNING:  # its process is gone
        return f"interrupted (started {run.started_at}, {where}); the next run resumes it"
    counts = ""
    if run.files is not None:
        counts = f", {run.files:,} files, {run.bytes or 0:,} bytes"
    text = (
        f"{run.status} at {run.finished_at or run.started_at} (revision {run.revision}, "
        f"exit code {run.exit_code}{counts})"
    )
    if run.failures:
        text += f", {run.failures} object(s) failed; the next run fetches them again"
    elif run.status == ABORTED:
        text += "; the next run resumes it"
    return text
