"""A refresh split between shards by catalog: the same tree as a refresh in one process.

Revision N is exported into two destinations; revision N+1 (files rewritten, removed and
added, a nested catalog two levels down gone, a new one, changes in the root catalog and
type changes) is refreshed into one of them by one process and into the other by two
shards that each take some of the changed catalogs, then the final pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shrinkwrap_async.link.tree_writer import is_temp_name
from shrinkwrap_async.pipeline import catalog_shards, shard
from shrinkwrap_async.pipeline.catalog_shards import CatalogSplit, assign
from shrinkwrap_async.state.db import StateDB
from shrinkwrap_async.testing.command_line import run_cli, run_cli_process, start_cli_process
from shrinkwrap_async.testing.faultproxy import FaultProxy
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import write_client_config

from .test_shard_export import export_cli, listing, snapshot
from .test_shard_refresh import FQRN, two_revisions


def test_assign_gives_the_largest_first_to_the_least_loaded() -> None:
    sizes = {"/a": 50, "/b": 40, "/c": 30, "/d": 20, "/e": 10}
    assert assign(sizes, 2) == {"/a": 0, "/b": 1, "/c": 1, "/d": 0, "/e": 0}
    assert set(assign(sizes, 8).values()) == {0, 1, 2, 3, 4}
    assert assign({"/x": 0, "/y": 0}, 2) == {"/x": 0, "/y": 1}
    assert assign({"/x": 5, "/y": 9, "/z": 1}, 8) == {"/y": 0, "/x": 1, "/z": 2}


async def applied_catalogs(dest: Path) -> dict[str, str]:
    db = await StateDB.for_destination(dest)
    try:
        return await db.applied_catalogs(FQRN)
    finally:
        await db.close()


async def run_statuses(dest: Path) -> list[str]:
    db = await StateDB.for_destination(dest)
    try:
        async with db._db.execute("SELECT status FROM runs ORDER BY id") as cursor:
            return [row[0] for row in await cursor.fetchall()]
    finally:
        await db.close()


async def refresh_in_two_workers(common: list[str], dest: Path, log: Path) -> list[str]:
    """``export --workers 2`` in this process (for the split's bound set here): the
    messages of its log; it must succeed."""
    code = await run_cli(
        "export", *common, "-x", str(dest), "--workers", "2", "--no-progress", "-q",
        "--log-json", str(log),
    )  # fmt: skip
    assert code == 0
    return [json.loads(line).get("message", "") for line in log.read_text().splitlines()]


async def test_a_refresh_split_by_catalog_equals_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog_shards, "SPLIT_MIN_BYTES", 0)  # split even this small one
    async with two_revisions(tmp_path) as revisions:
        common = revisions.common
        single, split = tmp_path / "single", tmp_path / "split"
        for dest in (single, split):
            assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected, _ = await revisions.next_revision(tmp_path / "fresh")

        assert await export_cli(*common, "-x", str(single), "--workers", "1") == 0
        messages = await refresh_in_two_workers(common, split, tmp_path / "split.log")
        assert any("shards, split by catalog" in message for message in messages), messages

        assert listing.diff(expected, snapshot(single, FQRN)) == []
        assert listing.diff(expected, snapshot(split, FQRN)) == []  # directory metadata too
        assert await applied_catalogs(split) == await applied_catalogs(single)
        assert await run_statuses(split) == await run_statuses(single)  # no stray record
        assert not any((split / ".data" / ".tmp").iterdir())
        again = await run_cli_process("export", *common, "-x", str(split), "--json", "-q")
        summary = json.loads(again.stdout)
        assert again.exit_code == 0 and summary["up_to_date"] and summary["requests"] == 2


async def test_what_a_shard_could_not_finish_is_done_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object of the new revision is corrupt on the server: the split refresh ends
    partial (exit 1) and records only what is complete; once the object is repaired, the
    next run completes the tree."""
    monkeypatch.setattr(catalog_shards, "SPLIT_MIN_BYTES", 0)
    async with two_revisions(tmp_path) as revisions:
        common = revisions.common
        dest = tmp_path / "dest"
        assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected, new_objects = await revisions.next_revision(tmp_path / "fresh")
        held = {  # the content hashes in the store of revision N: XX/YY/<rest>.<metadata>
            "".join(path.relative_to(dest / ".data").parts[:2]) + path.name.split(".")[0]
            for path in (dest / ".data").glob("??/??/*")
        }
        new = [p for p in sorted(new_objects) if "".join(p.split("/")[-2:]) not in held]
        damaged = tmp_path / "server" / new[0].lstrip("/")
        intact = damaged.read_bytes()
        damaged.write_bytes(bytes([intact[0] ^ 0xFF]) + intact[1:])
        argv = ("export", *common, "-x", str(dest), "--workers", "2", "--no-progress", "-q")
        assert await run_cli(*argv) == 1
        assert listing.diff(expected, snapshot(dest, FQRN)) != []
        damaged.write_bytes(intact)
        assert await run_cli(*argv) == 0
        assert listing.diff(expected, snapshot(dest, FQRN)) == []


async def test_a_split_refresh_killed_along_the_way_is_completed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL to the command at random moments of split refreshes (its shards then get
    SIGTERM from the kernel): the next run completes the tree, temp names and all."""
    monkeypatch.setenv(catalog_shards.SPLIT_MIN_BYTES_ENV, "0")  # the command's own
    async with two_revisions(tmp_path) as revisions:
        common = revisions.common
        dest = tmp_path / "dest"
        assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected, _ = await revisions.next_revision(tmp_path / "fresh")
        assert await kill_split_refreshes(common, dest, random.Random(7)) > 0
        rerun = ("export", *common, "-x", str(dest), "--workers", "2", "--no-progress", "-q")
        assert (await run_cli_process(*rerun)).exit_code == 0
        assert listing.diff(expected, snapshot(dest, FQRN)) == []
        assert not [p for p in (dest / FQRN).rglob("*") if is_temp_name(p.name)]


async def kill_split_refreshes(common: list[str], dest: Path, rng: random.Random) -> int:
    """Refreshes of ``dest`` with two workers, through a proxy with one request in flight
    per shard (a run of about 0.4 s to kill), SIGKILLed at random moments (see
    :func:`kill_runs`); how many were killed."""
    direct = Path(common[common.index("-f") + 1])
    slow = direct.with_name("slow.conf")
    async with FaultProxy() as proxy:
        proxied = f"CVMFS_HTTP_PROXY={proxy.url}"
        slow.write_text(direct.read_text().replace("CVMFS_HTTP_PROXY=DIRECT", proxied))
        argv = (
            "export", "-r", FQRN, "-f", str(slow), "-t", common[common.index("-t") + 1],
            "-x", str(dest), "--workers", "2", "-j", "2", "--no-progress", "-q",
        )  # fmt: skip
        return await kill_runs(argv, rng, times=3)


async def kill_runs(argv: tuple[str, ...], rng: random.Random, *, times: int) -> int:
    """Start ``argv`` and SIGKILL it at a random moment, up to ``times`` times (until a
    run ends on its own first); how many were killed."""
    killed = 0
    for _ in range(times):
        process = await start_cli_process(*argv)
        await asyncio.sleep(rng.uniform(0.08, 0.3))
        if process.returncode is None:
            process.kill()
        code = await process.wait()
        await process.communicate()
        if code != -signal.SIGKILL:
            assert code == 0  # it ended before its kill: nothing left to interrupt
            break
        killed += 1
    return killed


async def test_no_more_shards_start_than_there_are_catalogs_to_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(catalog_shards.SPLIT_MIN_BYTES_ENV, "0")
    async with two_revisions(tmp_path) as revisions:
        common = revisions.common
        dest = tmp_path / "dest"
        assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected, _ = await revisions.next_revision(tmp_path / "fresh")
        run = await run_cli_process("export", *common, "-x", str(dest), "--workers", "8", "--json")
        summary = json.loads(run.stdout)
        # /sw (with /sw/v1, and /sw/v2/... gone), /data and /new changed; /empty_catalog not
        assert run.exit_code == 0 and summary["workers"] == len(summary["shards"]) == 3
        assert listing.diff(expected, snapshot(dest, FQRN)) == []


async def test_a_small_refresh_stays_in_one_process(tmp_path: Path) -> None:
    """Below the size that pays for starting shards the refresh is not split."""
    async with two_revisions(tmp_path) as revisions:
        common = revisions.common
        dest = tmp_path / "dest"
        assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected, _ = await revisions.next_revision(tmp_path / "fresh")
        messages = await refresh_in_two_workers(common, dest, tmp_path / "refresh.log")
        assert any("in one process, without shards" in message for message in messages)
        assert listing.diff(expected, snapshot(dest, FQRN)) == []


def test_what_the_parent_records_after_the_shards() -> None:
    """Completed catalogs of shards on the parent's root are recorded and the ones their
    catalogs lost forgotten; everything of a shard on another root (or silent) is forgotten,
    so that the final pass walks it whole."""
    old, new = "aa" * 20, "bb" * 20
    split = CatalogSplit(
        {"/a": 0, "/b": 1, "/c": 1},
        {"": old, "/a": old, "/a/x": old, "/b": old, "/b/y": old, "/d": old},
    )
    on_root = {"root_hash": new, "catalogs_applied": {"/a": new}, "catalogs_gone": ["/a/x"]}
    elsewhere = {"root_hash": "cc" * 20, "catalogs_applied": {"/b": "dd" * 20}}
    assert catalog_shards.shards_outcome(split, [on_root, elsewhere], new) == (
        {"/a": new},
        ["/a/x", "/b", "/b/y", "/c"],
    )
    assert catalog_shards.shards_outcome(split, [on_root, {}], new)[1] == [
        "/a/x", "/b", "/b/y", "/c",
    ]  # fmt: skip


def test_a_split_is_read_back_only_under_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "split.json"
    CatalogSplit({"/a": 1}, {"/a": "ab" * 20}).write(path, FQRN)
    monkeypatch.setenv(catalog_shards.CATALOG_SHARDS_ENV, str(path))
    assert catalog_shards.split_from_parent(FQRN) is None  # not a shard of --workers
    monkeypatch.setattr(shard, "under_workers_parent", lambda: True)  # read there
    assert catalog_shards.split_from_parent(FQRN) == CatalogSplit({"/a": 1}, {"/a": "ab" * 20})
    assert catalog_shards.split_from_parent("other.test.local") is None
    path.write_text("{not json")
    assert catalog_shards.split_from_parent(FQRN) is None


def write_deep_release_tree(root: Path, revision: int) -> None:
    """A repository whose root holds little besides ``/sw``: every change lies below
    ``/sw/arch`` (``/sw`` and ``/sw/arch`` a chain of single catalogs), in package catalogs
    that each change (or come or go) with the revision, and in ``/sw`` and ``/sw/arch``
    themselves. ``/other`` never changes."""
    import shutil

    def write(relative: str, text: str) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    if root.exists():
        shutil.rmtree(root)
    write("README.txt", f"revision {revision}\n")
    write("other/.cvmfscatalog", "")
    write("other/keep.txt", "never changes\n")
    write("sw/.cvmfscatalog", "")
    write("sw/README", f"software area, revision {revision}\n")
    write("sw/arch/.cvmfscatalog", "")
    write("sw/arch/own.txt", f"arch {revision}\n")
    packages = ("pkg0", "pkg1", "pkg2", "pkg3") if revision == 1 else ("pkg0", "pkg1", "pkg3")
    for name in (*packages, *(("pkg4",) if revision == 2 else ())):
        changes = name != "pkg3"  # pkg3's catalog stays the same
        write(f"sw/arch/{name}/.cvmfscatalog", "")
        for index in range(6):
            text = f"{name} file {index}" + (f" of revision {revision}" if changes else "")
            write(f"sw/arch/{name}/lib/f{index}.txt", text + "\n")
        write(f"sw/arch/{name}/deeper/.cvmfscatalog", "")
        write(f"sw/arch/{name}/deeper/leaf.txt", f"{name} leaf {revision if changes else 0}\n")
    for directory, names, files in os.walk(root, topdown=False):
        for name in [*names, *files]:
            os.utime(os.path.join(directory, name), (1_700_000_000,) * 2)  # content differs


@dataclass
class DeepReleases:
    """:func:`write_deep_release_tree`'s revision 1 published and served."""

    source: Path
    publisher: Publisher
    common: list[str]  # -r, -f, -t

    async def next_revision(self, fresh: Path) -> dict[str, object]:
        """Publish revision 2 and export it into the new ``fresh``: its snapshot."""
        write_deep_release_tree(self.source, 2)
        self.publisher.publish(self.source)
        assert await export_cli(*self.common, "-x", str(fresh), "--workers", "1") == 0
        return snapshot(fresh, FQRN)


@contextlib.asynccontextmanager
async def deep_releases(tmp_path: Path, spec_text: str = "/*\n") -> AsyncIterator[DeepReleases]:
    source = tmp_path / "source"
    write_deep_release_tree(source, 1)
    publisher = Publisher(tmp_path / "server", FQRN, PublishOptions(workers=1))
    publisher.publish(source)
    async with StaticServer(tmp_path / "server") as server:
        config = write_client_config(tmp_path / "client", server.url, publisher.keys_dir)
        spec = tmp_path / "partial.spec"
        spec.write_text(spec_text)
        yield DeepReleases(source, publisher, ["-r", FQRN, "-f", str(config), "-t", str(spec)])


@pytest.mark.parametrize(
    ("spec_text", "message"),
    [
        ("/*\n", "refreshing 3 catalogs below /sw/arch in 2 shards, split by catalog"),
        (  # the changed catalogs the spec does not reach are not given out
            "/sw/arch/pkg0/*\n/sw/arch/pkg4/*\n/other/*\n",
            "refreshing 2 catalogs below /sw/arch in 2 shards, split by catalog",
        ),
        (
            "/sw/arch/pkg0/*\n",
            "refreshing from the catalogs' differences in one process, without shards",
        ),
    ],
)
async def test_a_split_looks_down_a_chain_of_single_changed_catalogs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec_text: str, message: str
) -> None:
    """Every change lies below ``/sw/arch``: the parent looks through ``/sw`` and
    ``/sw/arch``, gives out the changed package catalogs the spec reaches, and the tree
    (directory metadata, the catalogs recorded, the run records) equals that of a refresh
    in one process."""
    monkeypatch.setattr(catalog_shards, "SPLIT_MIN_BYTES", 0)
    async with deep_releases(tmp_path, spec_text) as releases:
        common = releases.common
        single, split = tmp_path / "single", tmp_path / "split"
        for dest in (single, split):
            assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected = await releases.next_revision(tmp_path / "fresh")

        assert await export_cli(*common, "-x", str(single), "--workers", "1") == 0
        messages = await refresh_in_two_workers(common, split, tmp_path / "split.log")
        assert message in messages, messages

        assert listing.diff(expected, snapshot(single, FQRN)) == []
        assert listing.diff(expected, snapshot(split, FQRN)) == []
        applied = await applied_catalogs(split)
        assert applied == await applied_catalogs(single)
        assert "/sw/arch/pkg2" not in applied and "/sw/arch/pkg0/deeper" in applied
        assert await run_statuses(split) == await run_statuses(single)
        again = await run_cli_process("export", *common, "-x", str(split), "--json", "-q")
        assert again.exit_code == 0 and json.loads(again.stdout)["requests"] == 2


async def test_a_split_below_the_root_killed_along_the_way_is_completed_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for a split below the root catalog: SIGKILL at random moments, then one run
    completes the tree (the catalogs passed through are diffed again by it)."""
    monkeypatch.setenv(catalog_shards.SPLIT_MIN_BYTES_ENV, "0")
    async with deep_releases(tmp_path) as releases:
        dest = tmp_path / "dest"
        assert await export_cli(*releases.common, "-x", str(dest), "--workers", "1") == 0
        expected = await releases.next_revision(tmp_path / "fresh")
        assert await kill_split_refreshes(releases.common, dest, random.Random(11)) > 0
        rerun = ("export", *releases.common, "-x", str(dest), "--workers", "2", "-q")
        assert (await run_cli_process(*rerun, "--no-progress")).exit_code == 0
        assert listing.diff(expected, snapshot(dest, FQRN)) == []
        assert not [p for p in (dest / FQRN).rglob("*") if is_temp_name(p.name)]


@pytest.mark.parametrize(("damage", "exit_code"), [("corrupt", 3), ("missing", 1)])
async def test_a_catalog_the_split_cannot_open_ends_the_run_as_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, exit_code: int
) -> None:
    """The parent looks into ``/sw`` of revision 2, which is corrupt (the run ends with
    exit 3, a trust failure) or missing on the server (the refresh goes on without it and
    ends partial, exit 1): the same exit and error as a refresh in one process; once the
    catalog is back, the next run completes the tree."""
    monkeypatch.setenv(catalog_shards.SPLIT_MIN_BYTES_ENV, "0")
    async with deep_releases(tmp_path) as releases:
        common = releases.common
        single, split = tmp_path / "single", tmp_path / "split"
        for dest in (single, split):
            assert await export_cli(*common, "-x", str(dest), "--workers", "1") == 0
        expected = await releases.next_revision(tmp_path / "fresh")
        digest = (await applied_catalogs(tmp_path / "fresh"))["/sw"]
        name = digest[2:] + "C"
        stored = tmp_path / "server" / "cvmfs" / FQRN / "data" / digest[:2] / name
        intact = stored.read_bytes()
        for cached in [p for p in tmp_path.rglob(name) if p != stored]:
            cached.unlink()  # the fresh export's copy in the shared catalog cache
        if damage == "corrupt":
            stored.write_bytes(intact[:-8] + bytes(8))
        else:
            stored.unlink()

        outcomes = []
        for dest, workers in ((single, "1"), (split, "2")):
            run = await run_cli_process(
                "export", *common, "-x", str(dest), "--workers", workers, "--no-progress"
            )
            errors = [line for line in run.stderr.splitlines() if "/sw" in line]
            outcomes.append((run.exit_code, errors[-1:]))
        assert outcomes[0] == outcomes[1] and outcomes[0][0] == exit_code, outcomes
        stored.write_bytes(intact)
        assert await export_cli(*common, "-x", str(split), "--workers", "2") == 0
        assert listing.diff(expected, snapshot(split, FQRN)) == []
