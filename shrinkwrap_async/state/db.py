"""The state database of a destination: what was exported, and what a resumed run needs.

``<dest-base>/.provenance/state.db`` (SQLite through aiosqlite: one writer connection,
WAL, batched commits). Per repository (fqrn) it holds:

- ``exports``: the last *completed* export: root hash, revision, spec digest, finish time.
  A destination holds one tree per repository, so there is one row per fqrn; a changed
  spec shows as a different ``spec_digest``.
- ``applied_catalogs``: mountpoint → digest of every catalog whose entries are fully in the
  tree. Updated catalog by catalog during a run, so after a crash it tells the next run
  which catalogs are already at the new revision (skip) and which are still at the old one
  (diff old → new). A row is only ever written *after* its catalog was applied, so losing
  the uncommitted tail of a batch costs a re-apply, never a skipped catalog.
- ``runs``: one row per run (begun, finished or never finished), with the target root
  hash and revision, status, exit code, counts; an unfinished newest run is what a resume
  continues.
- ``failures``: objects that failed in a run (name, reason).

The schema is versioned in ``meta`` (key ``schema_version``); :data:`MIGRATIONS` lists the
steps from each version to the next, applied in order when an older database is opened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import aiosqlite

from shrinkwrap_async.exitcodes import StorageError

STATE_DB_NAME = "state.db"
PROVENANCE_DIR = ".provenance"

# Each entry upgrades the schema from version i to i + 1 (index i). Append, never edit.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE exports (
            fqrn TEXT PRIMARY KEY,
            root_hash TEXT NOT NULL,
            revision INTEGER NOT NULL,
            spec_digest TEXT NOT NULL,
            finished_at REAL NOT NULL,
            run_id INTEGER
        )""",
        """CREATE TABLE applied_catalogs (
            fqrn TEXT NOT NULL,
            mountpoint TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (fqrn, mountpoint)
        ) WITHOUT ROWID""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            fqrn TEXT NOT NULL,
            root_hash TEXT NOT NULL,
            revision INTEGER NOT NULL,
            spec_digest TEXT NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            status TEXT NOT NULL DEFAULT 'running',
            exit_code INTEGER,
            files INTEGER,
            bytes INTEGER,
            pid INTEGER,
            host TEXT
        )""",
        "CREATE INDEX runs_by_fqrn ON runs (fqrn, id)",
        """CREATE TABLE failures (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (run_id, name)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Statuses of a run.
RUNNING = "running"
SUCCEEDED = "succeeded"
PARTIAL = "partial"  # finished with failed objects
ABORTED = "aborted"  # stopped by an error or a signal

# Batched writes are committed after this many rows or this many seconds.
COMMIT_EVERY_ROWS = 512
COMMIT_EVERY_SECONDS = 2.0


_LAST_EXPORT = (
    "SELECT fqrn, root_hash, revision, spec_digest, finished_at FROM exports WHERE fqrn = ?"
)
_REPOSITORIES = "SELECT fqrn FROM exports UNION SELECT fqrn FROM runs ORDER BY 1"
_LATEST_RUN = (
    "SELECT id, fqrn, root_hash, revision, spec_digest, started_at, finished_at, status, "
    "exit_code, files, bytes, pid, host FROM runs WHERE fqrn = ? ORDER BY id DESC LIMIT 1"
)
_FAILURES = "SELECT name, reason FROM failures WHERE run_id = ? ORDER BY name"


def default_state_path(dest_base: str | os.PathLike[str]) -> Path:
    """``<dest-base>/.provenance/state.db``."""
    return Path(dest_base) / PROVENANCE_DIR / STATE_DB_NAME


def read_last_export(dest_base: str | os.PathLike[str], fqrn: str) -> ExportRecord | None:
    """The last completed export of ``fqrn``, read without opening the database for writing
    (a ``--shard`` run, beside other shards); None when there is none or it cannot be read."""
    path = default_state_path(dest_base)
    if not path.is_file():
        return None
    try:
        with contextlib.closing(StateReader(path)) as reader:
            return reader.last_export(fqrn)
    except sqlite3.Error:
        return None


class StateReader:
    """The state database opened read-only, without its writer's migrations or batching
    (``status``, a ``--shard`` run): a running export is not disturbed. Raises
    ``sqlite3.Error``."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)

    def close(self) -> None:
        self._db.close()

    def repositories(self) -> list[str]:
        return [row[0] for row in self._db.execute(_REPOSITORIES)]

    def last_export(self, fqrn: str) -> ExportRecord | None:
        row = self._db.execute(_LAST_EXPORT, (fqrn,)).fetchone()
        return ExportRecord(*row) if row else None

    def latest_run(self, fqrn: str) -> RunRecord | None:
        row = self._db.execute(_LATEST_RUN, (fqrn,)).fetchone()
        return RunRecord(*row) if row else None

    def failures(self, run_id: int, limit: int = -1) -> tuple[int, list[Failure]]:
        """How many objects run ``run_id`` failed, and the first ``limit`` of them."""
        (count,) = self._db.execute(
            "SELECT count(*) FROM failures WHERE run_id = ?", (run_id,)
        ).fetchone()
        rows = self._db.execute(f"{_FAILURES} LIMIT ?", (run_id, limit))
        return count, [Failure(*row) for row in rows]


@dataclasses.dataclass(frozen=True, slots=True)
class ExportRecord:
    """The last completed export of a repository into this destination."""

    fqrn: str
    root_hash: str
    revision: int
    spec_digest: str
    finished_at: float  # seconds since the epoch


@dataclasses.dataclass(frozen=True, slots=True)
class RunRecord:
    """One run, finished or not."""

    id: int
    fqrn: str
    root_hash: str
    revision: int
    spec_digest: str
    started_at: float
    finished_at: float | None
    status: str
    exit_code: int | None
    files: int | None
    bytes_total: int | None
    pid: int | None = None
    host: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """An object that could not be exported, and why."""

    name: str
    reason: str


class StateDB:
    """The state database; open with ``await StateDB.open(path)``, end with ``close()``.

    All writes go through this one connection. Row-by-row records (catalogs applied,
    failures) are committed in batches; ``begin_export``/``finish_export`` commit at once.
    Reads see uncommitted writes of this connection.
    """

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._pending_rows = 0
        self._last_commit = time.monotonic()
        self._current_run: dict[str, int] = {}

    # -- opening and closing ------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> StateDB:
        """Open (creating and migrating as needed) the state database at ``path``."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = await aiosqlite.connect(path)
        except (OSError, sqlite3.Error) as error:
            raise StorageError(f"cannot open state database {path}: {error}") from error
        db = cls(connection, path)
        try:
            await db._configure()
            await db._migrate()
        except sqlite3.DatabaseError as error:
            await connection.close()
            hint = ""
            if not isinstance(error, sqlite3.OperationalError):  # damaged, not busy or full
                hint = (
                    f"; move it aside with any {path.name}-wal and {path.name}-shm beside it "
                    "and run again: the run rebuilds it, and objects already in .data are "
                    "not downloaded again"
                )
            raise StorageError(f"state database {path} is unusable: {error}{hint}") from error
        except BaseException:
            await connection.close()
            raise
        return db

    @classmethod
    async def for_destination(cls, dest_base: str | os.PathLike[str]) -> StateDB:
        return await cls.open(default_state_path(dest_base))

    async def close(self) -> None:
        """Commit what is pending and close."""
        try:
            await self.flush()
        finally:
            await self._db.close()

    async def __aenter__(self) -> StateDB:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _configure(self) -> None:
        # WAL keeps readers (e.g. `verify` or a status query) off the writer's back. Some
        # network file systems cannot do WAL's shared memory; SQLite then keeps its
        # rollback journal, which is correct too, only slower.
        with contextlib.suppress(sqlite3.OperationalError):
            await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA foreign_keys=ON")
        await self._db.execute("PRAGMA busy_timeout=10000")

    async def _migrate(self) -> None:
        """Bring the schema to ``SCHEMA_VERSION``, one step per transaction.

        Python's sqlite3 runs DDL outside any transaction unless one is begun, so a step is
        begun explicitly: a process killed halfway leaves the step undone, not tables
        without their version (which the next run would try to create again). The version
        is read again under the write lock, as another process may have just migrated.
        """
        await self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        if self._check_version(await self.schema_version()) == SCHEMA_VERSION:
            return
        while True:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._check_version(await self.schema_version())
                if version == SCHEMA_VERSION:
                    await self._db.commit()
                    return
                for statement in MIGRATIONS[version]:
                    await self._db.execute(statement)
                await self._db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(version + 1),),
                )
                await self._db.commit()
            except BaseException:
                await self._db.rollback()
                raise

    def _check_version(self, version: int) -> int:
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"state database {self.path} has schema version {version}, newer than this "
                f"program's {SCHEMA_VERSION}; upgrade shrinkwrap-async"
            )
        return version

    async def schema_version(self) -> int:
        async with self._db.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    # -- committing ---------------------------------------------------------------------

    async def flush(self) -> None:
        """Commit every pending write now."""
        await self._db.commit()
        self._pending_rows = 0
        self._last_commit = time.monotonic()

    async def _written(self, rows: int) -> None:
        self._pending_rows += rows
        if (
            self._pending_rows >= COMMIT_EVERY_ROWS
            or time.monotonic() - self._last_commit >= COMMIT_EVERY_SECONDS
        ):
            await self.flush()

    # -- last export --------------------------------------------------------------------

    async def last_export(self, fqrn: str) -> ExportRecord | None:
        """The last completed export of ``fqrn``, or None if it was never exported here."""
        async with self._db.execute(_LAST_EXPORT, (fqrn,)) as cursor:
            row = await cursor.fetchone()
        return ExportRecord(*row) if row else None

    async def repositories(self) -> list[str]:
        """Every fqrn with a completed export or a run in this destination."""
        async with self._db.execute(_REPOSITORIES) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    # -- a run --------------------------------------------------------------------------

    async def begin_export(
        self, fqrn: str, *, root_hash: str, revision: int, spec_digest: str
    ) -> int:
        """Record the start of a run towards ``root_hash``; returns the run id.

        A previous run of ``fqrn`` that never finished (crash, SIGKILL) is marked aborted.
        """
        await self._db.execute(
            "UPDATE runs SET status = ? WHERE fqrn = ? AND status = ?",
            (ABORTED, fqrn, RUNNING),
        )
        cursor = await self._db.execute(
            "INSERT INTO runs (fqrn, root_hash, revision, spec_digest, started_at, status, "
            "pid, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fqrn,
                root_hash,
                int(revision),
                spec_digest,
                time.time(),
                RUNNING,
                os.getpid(),
                os.uname().nodename,
            ),
        )
        run_id = cursor.lastrowid
        await cursor.close()
        assert run_id is not None
        self._current_run[fqrn] = run_id
        await self.flush()
        return run_id

    async def discard_running(self, fqrn: str) -> None:
        """Drop the record of a run of ``fqrn`` still marked running, whose work the next
        run takes over: the final pass after the shards of a refresh split by catalog
        (otherwise its start would mark it aborted)."""
        await self._db.execute("DELETE FROM runs WHERE fqrn = ? AND status = ?", (fqrn, RUNNING))
        await self.flush()

    async def unfinished_run(self, fqrn: str) -> RunRecord | None:
        """The newest run of ``fqrn`` if it did not complete successfully, else None.

        That is the run a resume continues: its target root hash and spec, with
        :meth:`applied_catalogs` telling which catalogs are already done.
        """
        run = await self.latest_run(fqrn)
        return run if run is not None and run.status != SUCCEEDED else None

    async def latest_run(self, fqrn: str) -> RunRecord | None:
        async with self._db.execute(_LATEST_RUN, (fqrn,)) as cursor:
            row = await cursor.fetchone()
        return RunRecord(*row) if row else None

    async def record_catalog_applied(self, fqrn: str, mountpoint: str, digest: str) -> None:
        """The catalog ``digest`` at ``mountpoint`` (``""`` = root) is fully in the tree."""
        await self._db.execute(
            "INSERT OR REPLACE INTO applied_catalogs (fqrn, mountpoint, digest) VALUES (?, ?, ?)",
            (fqrn, mountpoint, digest),
        )
        await self._written(1)

    async def record_catalogs_applied(self, fqrn: str, catalogs: Mapping[str, str]) -> None:
        """Several catalogs at once (mountpoint → digest)."""
        await self._db.executemany(
            "INSERT OR REPLACE INTO applied_catalogs (fqrn, mountpoint, digest) VALUES (?, ?, ?)",
            [(fqrn, mountpoint, digest) for mountpoint, digest in catalogs.items()],
        )
        await self._written(len(catalogs))

    async def forget_catalogs(self, fqrn: str, mountpoints: Iterable[str]) -> None:
        """Catalogs removed from the tree (nested catalog deleted, merged, or excluded)."""
        rows = [(fqrn, mountpoint) for mountpoint in mountpoints]
        await self._db.executemany(
            "DELETE FROM applied_catalogs WHERE fqrn = ? AND mountpoint = ?", rows
        )
        await self._written(len(rows))

    async def applied_catalogs(self, fqrn: str) -> dict[str, str]:
        """mountpoint → digest of every catalog fully applied to the tree of ``fqrn``."""
        async with self._db.execute(
            "SELECT mountpoint, digest FROM applied_catalogs WHERE fqrn = ?", (fqrn,)
        ) as cursor:
            return {mountpoint: digest for mountpoint, digest in await cursor.fetchall()}

    async def record_failures(self, fqrn: str, failures: Iterable[tuple[str, str]]) -> None:
        """Objects of the current run of ``fqrn`` that failed: (name, reason) pairs."""
        run_id = self._run_id(fqrn)
        rows = [(run_id, name, reason) for name, reason in failures]
        await self._db.executemany(
            "INSERT OR REPLACE INTO failures (run_id, name, reason) VALUES (?, ?, ?)", rows
        )
        await self._written(len(rows))

    async def failures(self, fqrn: str, run_id: int | None = None) -> list[Failure]:
        """Failures of ``run_id``, by default of the newest run of ``fqrn``."""
        if run_id is None:
            run = await self.latest_run(fqrn)
            if run is None:
                return []
            run_id = run.id
        async with self._db.execute(_FAILURES, (run_id,)) as cursor:
            return [Failure(*row) for row in await cursor.fetchall()]

    async def finish_export(
        self,
        fqrn: str,
        *,
        status: str = SUCCEEDED,
        exit_code: int = 0,
        files: int | None = None,
        bytes_total: int | None = None,
    ) -> None:
        """End the current run of ``fqrn``.

        With ``status=SUCCEEDED`` the run's root hash, revision and spec become the
        :meth:`last_export`. Any other status (``PARTIAL``, ``ABORTED``) leaves the last
        export as it was, so the next run does not take the short cut and redoes what is
        missing.
        """
        if status not in (SUCCEEDED, PARTIAL, ABORTED):
            raise ValueError(f"unknown run status {status!r}")
        run_id = self._run_id(fqrn)
        now = time.time()
        await self._db.execute(
            "UPDATE runs SET finished_at = ?, status = ?, exit_code = ?, files = ?, bytes = ? "
            "WHERE id = ?",
            (now, status, int(exit_code), files, bytes_total, run_id),
        )
        if status == SUCCEEDED:
            await self._db.execute(
                "INSERT OR REPLACE INTO exports (fqrn, root_hash, revision, spec_digest, "
                "finished_at, run_id) SELECT fqrn, root_hash, revision, spec_digest, ?, id "
                "FROM runs WHERE id = ?",
                (now, run_id),
            )
        self._current_run.pop(fqrn, None)
        await self.flush()

    async def forget_repository(self, fqrn: str) -> None:
        """Drop every record of ``fqrn`` (its tree was removed from the destination)."""
        for table in ("exports", "applied_catalogs", "runs"):
            await self._db.execute(f"DELETE FROM {table} WHERE fqrn = ?", (fqrn,))
        await self.flush()

    def _run_id(self, fqrn: str) -> int:
        run_id = self._current_run.get(fqrn)
        if run_id is None:
            raise RuntimeError(f"no run of {fqrn} was begun with begin_export()")
        return run_id
