"""Shards: N concurrent ``export --shard K/N`` processes make exactly the single-process export."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shrinkwrap_async.exitcodes import UsageError
from shrinkwrap_async.hashing import Algorithm
from shrinkwrap_async.pipeline.shard import Shard
from shrinkwrap_async.pipeline.shard_process import SPAWN_ENV
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.pipeline.workers import merge_summaries
from shrinkwrap_async.state.db import StateDB, default_state_path
from shrinkwrap_async.state.shard_marks import ShardMarks
from shrinkwrap_async.testing.command_line import run_cli, run_cli_process, source_arguments
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import data_requests, listing_tool
from shrinkwrap_async.testing.synthetic import Profile, build_tree

listing = listing_tool()

SYNTHETIC = "shard.bench.local"
SMALL = Profile(400, 2, 3, 2, 2048, 8192, big_files=1, extras=True)


def store_objects(dest: Path) -> set[str]:
    root = dest / ".data"
    return {
        str(Path(d, f).relative_to(root))
        for d, _dirs, files in os.walk(root)
        if Path(d).relative_to(root).parts[:1] != (".tmp",)
        for f in files
    }


def snapshot(dest: Path, fqrn: str) -> dict[str, object]:
    tree = listing.dump(str(dest), fqrn)
    entries = tree["entries"]
    sizes: dict[str, int] = {}
    for entry in entries.values():
        if entry["type"] == "f":
            sizes[entry["group"]] = sizes.get(entry["group"], 0) + 1
    for entry in entries.values():
        if entry["type"] == "f" and sizes[entry["group"]] > 1:
            entry.pop("mtime")  # one inode, one mtime: which member's does not matter
    return tree


def content_view(tree: dict[str, object]) -> dict[str, object]:
    """A snapshot without directory metadata, which only the final pass sets."""
    entries = {
        rel: {k: v for k, v in entry.items() if entry["type"] != "d" or k == "type"}
        for rel, entry in tree["entries"].items()  # type: ignore[attr-defined]
    }
    return {**tree, "entries": entries}


def object_requests(server: StaticServer) -> collections.Counter[str]:
    """Requests per data object path (file contents and chunks, as ``data_requests``)."""
    return collections.Counter(
        {
            path: count
            for path, count in server.requests.items()
            if "/data/" in path and not path.endswith(("C", "X", "H", "M"))
        }
    )


async def export_cli(*argv: str) -> int:
    result = await run_cli_process("export", *argv, "--no-progress", "-q")
    return result.exit_code


def test_shard_parse_and_partition() -> None:
    assert Shard.parse("3/4") == Shard(3, 4)
    for bad in ("4/4", "-1/4", "1", "a/b", "0/0"):
        with pytest.raises(UsageError):
            Shard.parse(bad)
    shards = [Shard(k, 4) for k in range(4)]
    for number in range(200):
        digest = Algorithm.SHA1.hash(str(number).encode())
        assert sum(s.owns_object(digest) for s in shards) == 1
        rel = ("a", str(number))
        assert sum(s.owns_directory(rel) for s in shards) == 1
    spread = [sum(s.owns_directory(("d", str(n))) for n in range(400)) for s in shards]
    assert min(spread) > 50


def test_the_summary_adds_up_what_each_process_did() -> None:
    """Objects and requests add up; a skipped device node is counted by the shard that owns
    its directory, or again by a final pass that walked everything: never twice."""
    final = ExportStats(files=10, data_files=1, requests=3, skipped_devices=0).as_dict()
    shards = [{"data_files": 4, "requests": 5, "skipped_devices": 1}, {"data_files": 5}]
    merged = merge_summaries(final, shards)
    assert (merged.data_files, merged.requests, merged.skipped_devices) == (10, 8, 1)
    assert merged.dedup_files == 0
    walked_again = dict(final, skipped_devices=1)
    assert merge_summaries(walked_again, shards).skipped_devices == 1


def test_shards_start_their_walks_in_different_subdirectories() -> None:
    names = [f"release-{n:02d}" for n in range(10)]
    orders = [Shard(k, 4).walk_order(names) for k in range(4)]
    assert orders[0] == names
    for order in orders:
        assert (
            sorted(order) == names
            and order == names[names.index(order[0]) :] + names[: names.index(order[0])]
        )
    # The walk takes the last pushed first: every shard begins somewhere else.
    assert len({order[-1] for order in orders}) == 4
    assert Shard(1, 4).walk_order(["only"]) == ["only"] and Shard(3, 4).walk_order([]) == []


@pytest.fixture(scope="module")
def synthetic_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published")
    Publisher(out, SYNTHETIC, PublishOptions(workers=1)).publish(build_tree(SMALL, 3))
    return out


@pytest.fixture
async def synthetic_server(synthetic_repository: Path) -> AsyncIterator[StaticServer]:
    async with StaticServer(synthetic_repository) as server:
        yield server


@pytest.mark.parametrize("source", ["fixture", "synthetic"])
async def test_four_shards_equal_one_export(
    source: str,
    fixture_server: StaticServer,
    synthetic_server: StaticServer,
    synthetic_repository: Path,
    fixtures_dir: Path,
    tmp_path: Path,
) -> None:
    if source == "fixture":
        server, fqrn, keys = fixture_server, "fix1.test.local", fixtures_dir / "keys"
    else:
        server, fqrn, keys = synthetic_server, SYNTHETIC, synthetic_repository / "keys"
    common = source_arguments(tmp_path, server.url, keys, fqrn)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert await export_cli(*common, "-x", str(single)) == 0
    single_objects = object_requests(server)
    server.requests.clear()

    codes = await asyncio.gather(
        *(export_cli(*common, "-x", str(sharded), "--shard", f"{k}/4") for k in range(4))
    )
    assert codes == [0, 0, 0, 0]
    assert not (sharded / ".provenance" / fqrn / "export.json").exists()  # final pass writes it
    # Each object fetched by one shard only: together they request every object exactly as
    # often as one export (once; a chunk that repeats inside a file once per occurrence).
    # Every file is in place already.
    assert object_requests(server) == single_objects
    expected = content_view(snapshot(single, fqrn))
    assert listing.diff(expected, content_view(snapshot(sharded, fqrn))) == []
    marks = ShardMarks(sharded, fqrn)
    assert len(list(marks.directory.glob("*/*-of-4"))) == 4  # each shard left its mark
    before_final = data_requests(server)
    final = await run_cli_process("export", *common, "-x", str(sharded), "--no-progress")
    assert final.exit_code == 0
    assert "all 4 shards ended complete" in final.stderr  # so it walked directories only
    assert b"workers|" not in final.stdout  # the default started no shards of its own
    assert data_requests(server) == before_final  # the final pass downloads no data object
    assert (sharded / ".provenance" / fqrn / "export.json").is_file()
    assert not marks.directory.exists()  # a complete export removes the marks
    assert listing.diff(snapshot(single, fqrn), snapshot(sharded, fqrn)) == []
    assert store_objects(sharded) == store_objects(single)

    # A shard rerun alone is harmless and has nothing left to fetch.
    assert await export_cli(*common, "-x", str(sharded), "--shard", "2/4") == 0
    assert data_requests(server) == before_final
    assert listing.diff(snapshot(single, fqrn), snapshot(sharded, fqrn)) == []


async def test_workers_two_same_tree(
    synthetic_server: StaticServer,
    synthetic_repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = synthetic_repository / "keys"
    common = source_arguments(tmp_path, synthetic_server.url, keys, SYNTHETIC)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    alone = await run_cli_process("export", *common, "-x", str(single), "--json", "--no-progress")
    assert alone.exit_code == 0, alone.stderr
    single_objects = object_requests(synthetic_server)
    synthetic_server.requests.clear()
    argv = ["export", *common, "-x", str(parallel), "--workers", "2", "--json", "--no-progress"]
    assert await run_cli(*argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["workers"] == 2 and len(summary["shards"]) == 2
    # The final pass lists only directories and counts the rest: the same totals.
    counted = ("files", "bytes", "dirs", "symlinks", "specials")
    single_summary = json.loads(alone.stdout)
    assert {k: summary[k] for k in counted} == {k: single_summary[k] for k in counted}
    assert single_summary["files"] > 0 and single_summary["symlinks"] > 0
    assert summary["data_files"] == len(store_objects(single))
    assert summary["failures"] == []
    # No object downloaded twice across the shards (nor by the final pass).
    assert max(single_objects.values()) == 1
    assert object_requests(synthetic_server) == single_objects
    assert listing.diff(snapshot(single, SYNTHETIC), snapshot(parallel, SYNTHETIC)) == []
    assert store_objects(parallel) == store_objects(single)


async def test_workers_progress_lines_while_the_shards_run(
    synthetic_server: StaticServer, synthetic_repository: Path, tmp_path: Path
) -> None:
    """Not on a terminal, ``-p`` sets how often the one progress line of all shards is
    printed; the command ends when its last shard has, whatever the period."""
    keys = synthetic_repository / "keys"
    common = source_arguments(tmp_path, synthetic_server.url, keys, SYNTHETIC)
    argv = [*common, "-x", str(tmp_path / "dest"), "--workers", "2", "-p", "0.05"]
    result = await run_cli_process("export", *argv)
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "shards done" in line]
    assert lines, result.stderr
    assert all(line.split(" ", 1)[0] in ("0/2", "1/2", "2/2") for line in lines)
    slow = await run_cli_process(
        "export", *common, "-x", str(tmp_path / "slow"), "--workers", "2", "-p", "3600"
    )
    assert slow.exit_code == 0
    assert "shards done" not in slow.stderr


def test_stat_period_zero_disables_progress() -> None:
    """cvmfs_shrinkwrap's ``-p 0`` disables its statistics lines: no reporter is started
    (before, 0 meant every 10 s)."""
    from shrinkwrap_async.cli import build_parser
    from shrinkwrap_async.pipeline.progress import shows_progress

    def parsed(*extra: str) -> bool:
        return shows_progress(build_parser().parse_args(["export", "-r", "a.b", *extra]))

    assert parsed("-p", "0.5") and parsed()
    assert not parsed("-p", "0") and not parsed("-q") and not parsed("--no-progress")


async def test_final_pass_after_a_missing_shard_checks_every_file(
    synthetic_server: StaticServer, synthetic_repository: Path, tmp_path: Path
) -> None:
    """Without the mark of every shard (one never ran, or ended partial) the ordinary export
    after them is a full one: it fetches what the missing shard owns and checks every file."""
    keys = synthetic_repository / "keys"
    common = source_arguments(tmp_path, synthetic_server.url, keys, SYNTHETIC)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    assert await export_cli(*common, "-x", str(single)) == 0
    assert await export_cli(*common, "-x", str(sharded), "--shard", "0/2") == 0
    assert len(list(ShardMarks(sharded, SYNTHETIC).directory.glob("*/0-of-2"))) == 1
    final = await run_cli_process("export", *common, "-x", str(sharded), "--no-progress")
    assert final.exit_code == 0
    assert "shards ended complete" not in final.stderr
    assert listing.diff(snapshot(single, SYNTHETIC), snapshot(sharded, SYNTHETIC)) == []
    assert store_objects(sharded) == store_objects(single)


async def test_shards_remove_temp_names_a_killed_run_left(
    synthetic_server: StaticServer, synthetic_repository: Path, tmp_path: Path
) -> None:
    """Shards keep temp names another shard may be about to rename, and the step after
    them lists no directory: a temp name older than the shards (a killed run's) is removed
    by the shard that writes its directory."""
    common = source_arguments(
        tmp_path, synthetic_server.url, synthetic_repository / "keys", SYNTHETIC
    )
    argv = ["export", *common, "-x", str(tmp_path / "dest"), "--workers", "2", "--no-progress"]
    argv.append("--json")
    assert (await run_cli_process(*argv)).exit_code == 0
    tree = tmp_path / "dest" / SYNTHETIC
    directory = next(path for path in sorted(tree.rglob("*")) if path.is_dir())
    stale = directory / ".shrinkwrap-async.0123456789abcdef0123456789abcdef.tmp"
    stale.write_text("half")
    (tmp_path / "dest" / ".provenance" / "state.db").unlink()  # a whole walk again, by shards
    await asyncio.sleep(1.2)  # older than the shards by more than their margin
    again = await run_cli_process(*argv)
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["workers"] == 2  # the walk was the shards'
    assert not stale.exists()


@pytest.mark.parametrize("started", ["forked", "spawned"])
async def test_workers_resume_a_first_export_in_shards_that_skip_recorded_catalogs(
    synthetic_server: StaticServer,
    synthetic_repository: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    started: str,
) -> None:
    """A first export stopped half-way (no export completed here, one nested catalog
    recorded complete) resumes with shards, not in one process; they skip the recorded
    catalog, as the final pass does, and complete the rest: forked shards and shards
    started as new programs alike."""
    monkeypatch.setenv(SPAWN_ENV, "1" if started == "spawned" else "0")
    common = source_arguments(
        tmp_path, synthetic_server.url, synthetic_repository / "keys", SYNTHETIC
    )
    single, resumed = tmp_path / "single", tmp_path / "resumed"
    assert await export_cli(*common, "-x", str(single)) == 0
    assert await export_cli(*common, "-x", str(resumed)) == 0
    db = await StateDB.for_destination(resumed)
    try:
        last = await db.last_export(SYNTHETIC)
        assert last is not None
        nested = sorted(m for m in await db.applied_catalogs(SYNTHETIC) if m)
        assert len(nested) >= 2
        kept, redone = nested[0], nested[1:]
        await db.forget_catalogs(SYNTHETIC, ["", *redone])
        await db.begin_export(
            SYNTHETIC,
            root_hash=last.root_hash,
            revision=last.revision,
            spec_digest=last.spec_digest,
        )
    finally:
        await db.close()
    with sqlite3.connect(default_state_path(resumed)) as state:  # never completed here
        state.execute("DELETE FROM exports")
    tree = resumed / SYNTHETIC
    for mountpoint in redone:  # the part the stopped run had not done
        shutil.rmtree(tree / mountpoint.lstrip("/"))
    sentinel = tree / kept.lstrip("/") / "not-from-the-repository.txt"
    mtime = sentinel.parent.stat().st_mtime_ns
    sentinel.write_text("a walk of this catalog would prune it\n")
    os.utime(sentinel.parent, ns=(mtime, mtime))

    result = await run_cli_process(
        "export", *common, "-x", str(resumed), "--workers", "2", "--json", "--no-progress"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["workers"] == 2 and len(summary["shards"]) == 2
    assert sentinel.is_file()  # the recorded catalog was skipped by shards and final pass
    sentinel.unlink()
    os.utime(sentinel.parent, ns=(mtime, mtime))
    assert listing.diff(snapshot(single, SYNTHETIC), snapshot(resumed, SYNTHETIC)) == []
    db = await StateDB.for_destination(resumed)
    try:
        done = await db.last_export(SYNTHETIC)
        assert done is not None and done.root_hash == last.root_hash
        assert set(await db.applied_catalogs(SYNTHETIC)) == {"", *nested}
    finally:
        await db.close()
