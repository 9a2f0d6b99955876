"""The state database: round trip, reopening, runs, failures, schema version."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.state import db as state_db
from shrinkwrap_async.state.db import PARTIAL, SCHEMA_VERSION, StateDB, default_state_path

FQRN = "fix1.test.local"
ROOT_A = "2c0a532d053941a164e5166a0e5e4e50086f27c0"
ROOT_B = "33b8ca8ba43e54c03d90f309dbc51b95ee94cd20"


async def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = default_state_path(tmp_path)
    db = await StateDB.open(path)
    assert await db.last_export(FQRN) is None
    assert await db.applied_catalogs(FQRN) == {}
    run_id = await db.begin_export(FQRN, root_hash=ROOT_A, revision=2, spec_digest="s1")
    await db.record_catalog_applied(FQRN, "", ROOT_A)
    await db.record_catalogs_applied(FQRN, {"/data": "d" * 40, "/sw": "e" * 40})
    await db.finish_export(FQRN, files=166, bytes_total=7_000_000)
    await db.close()

    assert path.is_file()
    async with await StateDB.open(path) as db:
        record = await db.last_export(FQRN)
        assert record is not None
        assert (record.root_hash, record.revision, record.spec_digest) == (ROOT_A, 2, "s1")
        assert record.finished_at > 0
        assert await db.applied_catalogs(FQRN) == {"": ROOT_A, "/data": "d" * 40, "/sw": "e" * 40}
        run = await db.latest_run(FQRN)
        assert run is not None and run.id == run_id and run.status == "succeeded"
        assert (run.files, run.bytes_total) == (166, 7_000_000)
        assert await db.unfinished_run(FQRN) is None
        assert await db.repositories() == [FQRN]
        assert await db.schema_version() == SCHEMA_VERSION


async def test_crashed_run_is_resumable_and_keeps_last_export(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = await StateDB.open(path)
    await db.begin_export(FQRN, root_hash=ROOT_A, revision=2, spec_digest="s1")
    await db.record_catalogs_applied(FQRN, {"": ROOT_A, "/sw": "a" * 40, "/sw/v1": "b" * 40})
    await db.finish_export(FQRN)
    # The next run starts towards B, applies one catalog, then "crashes" (no finish).
    await db.begin_export(FQRN, root_hash=ROOT_B, revision=3, spec_digest="s1")
    await db.record_catalog_applied(FQRN, "/sw", "c" * 40)
    await db.forget_catalogs(FQRN, ["/sw/v1"])
    await db.close()  # commits the batch, as a clean checkpoint would

    async with await StateDB.open(path) as db:
        record = await db.last_export(FQRN)
        assert record is not None and record.root_hash == ROOT_A  # B was never completed
        unfinished = await db.unfinished_run(FQRN)
        assert unfinished is not None
        assert (unfinished.root_hash, unfinished.revision, unfinished.status) == (
            ROOT_B,
            3,
            "running",
        )
        assert await db.applied_catalogs(FQRN) == {"": ROOT_A, "/sw": "c" * 40}
        # The resumed run marks the crashed one aborted.
        await db.begin_export(FQRN, root_hash=ROOT_B, revision=3, spec_digest="s1")
        await db.record_failures(FQRN, [("data/ab/cdef", "404 on every host")])
        await db.finish_export(FQRN, status=PARTIAL, exit_code=1)
        assert [f.name for f in await db.failures(FQRN)] == ["data/ab/cdef"]
        last = await db.last_export(FQRN)
        assert last is not None and last.root_hash == ROOT_A  # partial: no short cut
        assert (await db.latest_run(FQRN)).status == "partial"  # type: ignore[union-attr]


async def test_failures_require_a_run(tmp_path: Path) -> None:
    async with await StateDB.open(tmp_path / "state.db") as db:
        with pytest.raises(RuntimeError):
            await db.record_failures(FQRN, [("x", "y")])


async def test_batched_rows_become_durable_by_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_db, "COMMIT_EVERY_ROWS", 3)
    monkeypatch.setattr(state_db, "COMMIT_EVERY_SECONDS", 1e9)
    path = tmp_path / "state.db"
    db = await StateDB.open(path)
    await db.begin_export(FQRN, root_hash=ROOT_A, revision=2, spec_digest="s")
    for index in range(4):
        await db.record_catalog_applied(FQRN, f"/c{index}", "f" * 40)
    # Another connection sees the committed batch of 3 but not the 4th row yet.
    other = sqlite3.connect(path)
    try:
        (count,) = other.execute("SELECT count(*) FROM applied_catalogs").fetchone()
    finally:
        other.close()
    assert count == 3
    await db.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await (await StateDB.open(path)).close()
    connection = sqlite3.connect(path)
    connection.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    connection.commit()
    connection.close()
    with pytest.raises(StorageError, match="newer"):
        await StateDB.open(path)


async def test_not_a_database_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="unusable: file is not a database; move it aside"):
        await StateDB.open(path)


async def test_a_migration_stopped_halfway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed while it creates the schema must not leave tables without their
    version: the next run would create them again and find the destination unusable."""
    path = tmp_path / "state.db"
    first, *rest = state_db.MIGRATIONS[0]
    broken = ((first, "CREATE TABLE oops (", *rest), *state_db.MIGRATIONS[1:])
    monkeypatch.setattr(state_db, "MIGRATIONS", broken)
    with pytest.raises(StorageError):
        await StateDB.open(path)
    monkeypatch.undo()
    db = await StateDB.open(path)
    assert await db.schema_version() == SCHEMA_VERSION
    await db.close()


async def test_two_processes_creating_the_database_at_once(tmp_path: Path) -> None:
    """Shards and a concurrent run may open a new destination's state together: one
    creates the schema, the other finds it made."""
    path = tmp_path / "state.db"
    opened = await asyncio.gather(*(StateDB.open(path) for _ in range(4)))
    for db in opened:
        assert await db.schema_version() == SCHEMA_VERSION
        await db.close()
