"""Refresh by catalog diff: a changed catalog whose applied version is in the catalog cache
is compared row by row with it, and only what changed is touched in the tree."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shrinkwrap_async.catalogs.cache import CatalogCache
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.pipeline import refresh
from shrinkwrap_async.pipeline.blocking_calls import BlockingCalls
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.refresh import CatalogDiff, DiffListing, RowBudget, plan_refresh
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.db import ABORTED, PARTIAL, StateDB, default_state_path
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.source_trees import (
    CHANGED_MTIME,
    modify_for_next_revision,
    touch,
)

from .test_refresh_incremental import (
    FQRN,
    Repo,
    catalog_requests,
    listing,
    listing_problems,
    modify_more,
    tree_problems,
)

SENTINEL = "not-from-the-repository.txt"
UNCHANGED_DIRS = ("deep/d1", "data/set3")  # in the root and /data catalogs, both changed


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


# Budgets of preloaded difference rows: the default (every diff read whole), none (every
# directory queried), and one that some of a run's diffs fit and others do not.
PRELOAD_BUDGETS = [None, 0, 12]


@pytest.fixture(params=PRELOAD_BUDGETS, ids=["preloaded", "per-directory", "mixed"])
def preload_budget(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param is not None:
        monkeypatch.setattr(refresh, "PRELOAD_ROWS", request.param)


def linked(stats: ExportStats) -> int:
    """Files the run linked or found linked: one tree stat (at least) each."""
    return stats.linked + stats.unchanged


def plant_sentinels(dest_base: Path) -> list[Path]:
    """A file the repository does not have, in directories the next revision leaves
    alone; their mtimes are kept, so only a listing (pruning) would notice them."""
    sentinels = [dest_base / FQRN / directory / SENTINEL for directory in UNCHANGED_DIRS]
    for sentinel in sentinels:
        mtime = sentinel.parent.stat().st_mtime_ns
        sentinel.write_text("planted by the test\n")
        os.utime(sentinel.parent, ns=(mtime, mtime))
    return sentinels


def remove_sentinel(sentinel: Path) -> None:
    mtime = sentinel.parent.stat().st_mtime_ns
    sentinel.unlink()
    os.utime(sentinel.parent, ns=(mtime, mtime))


def cached_catalog(repo: Repo, server: StaticServer, cache: str, digest: Digest) -> Path:
    settings = repo.settings(server, cache)
    return CatalogCache(settings.catalog_cache_dir() / "catalogs", None).path_for(digest)  # type: ignore[arg-type]


@pytest.mark.usefixtures("preload_budget")
async def test_diff_touches_only_what_changed(repo: Repo) -> None:
    first = repo.publish()
    async with StaticServer(repo.base / "server") as server:
        initial = await repo.export(server, "dest", "cache")
        assert initial.failures == []
    sentinels = plant_sentinels(repo.base / "dest")
    modify_for_next_revision(repo.source)
    modify_more(repo.source)
    second = repo.publish()
    changed = {m for m in second.catalogs if first.catalogs.get(m) != second.catalogs[m]}
    assert changed == {"", "/data", "/sw", "/new"}
    # A run towards the new revision was killed (still "running") while it replaced an
    # entry of a directory the diff changes: its temp name is not in the diff.
    stale = repo.base / "dest" / FQRN / "dups" / ".shrinkwrap-async.0123456789abcdef.tmp"
    stale.write_text("half")
    async with await StateDB.open(default_state_path(repo.base / "dest")) as db:
        last = await db.last_export(FQRN)
        assert last is not None
        await db.begin_export(
            FQRN, root_hash=second.root_hash.hex, revision=2, spec_digest=last.spec_digest
        )
    async with StaticServer(repo.base / "server") as server:
        refreshed = await repo.export(server, "dest", "cache")
        assert refreshed.failures == []
        # The applied versions are in the cache: only the new catalogs are fetched.
        assert catalog_requests(server) == {
            f"cvmfs/{FQRN}/{second.catalogs[m].object_path('C')}" for m in changed
        }
        assert refreshed.catalogs_diffed == 3  # type: ignore[attr-defined]  # /new is new
        assert refreshed.catalogs_skipped == 2  # type: ignore[attr-defined]
        await repo.export(server, "fresh", "fresh-cache")
    # Unchanged directories of changed catalogs were neither listed nor pruned...
    assert all(sentinel.is_file() for sentinel in sentinels)
    assert not stale.exists()
    for sentinel in sentinels:
        remove_sentinel(sentinel)
    # ... and everything else is exactly a fresh export of the new revision.
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []
    dest = repo.base / "dest" / FQRN
    assert int((dest / "dups").stat().st_mtime) == CHANGED_MTIME
    assert int((dest / "data" / "set1").stat().st_mtime) == CHANGED_MTIME
    # Few files were looked at: the 9 changed ones and the 14 of the new /new catalog,
    # not the 150 of the tree.
    assert initial.files == 150
    assert linked(refreshed) == refreshed.files == 23


async def _walk_diff(diff: CatalogDiff, directory: str) -> dict[str, DiffListing]:
    """Every listing a refresh would ask ``diff`` for, from ``directory`` down."""
    listing = await diff.children(directory)
    listings = {directory: listing}
    for name in sorted(listing.descend):
        listings |= await _walk_diff(diff, f"{directory}/{name}")
    return listings


async def changed_catalogs(repo: Repo) -> dict[str, tuple[Path, Path]]:
    """Export a revision and the next (files changed, added and removed); the cached
    (applied, new) catalog files of each mountpoint whose catalog changed."""
    first = repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache")
        modify_for_next_revision(repo.source)
        modify_more(repo.source)
        second = repo.publish()
        await repo.export(server, "dest", "cache")
        paths = {
            mountpoint: (
                cached_catalog(repo, server, "cache", first.catalogs[mountpoint]),
                cached_catalog(repo, server, "cache", digest),
            )
            for mountpoint, digest in second.catalogs.items()
            if first.catalogs.get(mountpoint) not in (None, digest)
        }
    assert set(paths) == {"", "/data", "/sw"}
    return paths


async def test_a_diff_read_whole_answers_as_its_queries_do(repo: Repo) -> None:
    paths = await changed_catalogs(repo)
    spec = Spec.parse("/*\n")
    budget = RowBudget(10_000)
    compared = 0
    for mountpoint, (old, new) in paths.items():
        whole = await CatalogDiff.open(
            new, old, mountpoint, spec, can_skip=lambda *_: False, budget=budget
        )
        queried = await CatalogDiff.open(new, old, mountpoint, spec, can_skip=lambda *_: False)
        assert whole.read_whole and not queried.read_whole
        assert budget.available < 10_000
        listings = await _walk_diff(whole, mountpoint)
        assert listings == await _walk_diff(queried, mountpoint)
        nothing = DiffListing([], set(), set(), [])
        assert await whole.children(f"{mountpoint}/no-such-directory") == nothing
        compared += sum(len(entry.entries) + len(entry.removed) for entry in listings.values())
        await whole.close()
        await queried.close()
        assert budget.available == 10_000  # handed back on close
    assert compared > 20
    # A difference larger than what is left of the budget is queried directory by directory.
    old, new = paths[""]
    small = RowBudget(1)
    diff = await CatalogDiff.open(new, old, "", spec, can_skip=lambda *_: False, budget=small)
    assert not diff.read_whole and small.available == 1
    assert (await diff.children("")).entries
    await diff.close()
    assert small.available == 1


async def test_a_diff_on_the_loop_answers_as_one_on_a_worker_thread(repo: Repo) -> None:
    """The runner's diffs query through its blocking calls (inline while quick)."""
    paths = await changed_catalogs(repo)
    spec = Spec.parse("/*\n")
    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool, lambda: False)
        for mountpoint, (old, new) in paths.items():
            threaded = await CatalogDiff.open(new, old, mountpoint, spec, can_skip=lambda *_: False)
            inline = await CatalogDiff.open(
                new, old, mountpoint, spec, can_skip=lambda *_: False, calls=calls
            )
            listings = await _walk_diff(threaded, mountpoint)
            assert any(listing.entries or listing.removed for listing in listings.values())
            assert await _walk_diff(inline, mountpoint) == listings
            await threaded.close()
            await inline.close()
            assert inline.closed
        assert not calls.threaded  # every query ran on the loop


def with_rows_reversed(catalog: Path, copy: Path) -> Path:
    """A copy of ``catalog`` with the same rows under other rowids (the last row first)."""
    shutil.copyfile(catalog, copy)
    db = sqlite3.connect(copy)
    with db:
        db.executescript(
            "CREATE TEMP TABLE reversed AS SELECT * FROM catalog ORDER BY rowid DESC;"
            "DELETE FROM catalog; INSERT INTO catalog SELECT * FROM temp.reversed;"
        )
    db.close()
    return copy


async def test_a_diff_does_not_depend_on_rowids(repo: Repo) -> None:
    """Rows that keep their rowid are compared by rowid first; a version whose rows all
    moved (a rebuilt file) gives the same differences."""
    paths = await changed_catalogs(repo)
    spec = Spec.parse("/*\n")
    for mountpoint, (old, new) in paths.items():
        moved = with_rows_reversed(new, repo.base / f"moved{mountpoint.replace('/', '-')}")
        in_place = await CatalogDiff.open(new, old, mountpoint, spec, can_skip=lambda *_: False)
        rebuilt = await CatalogDiff.open(moved, old, mountpoint, spec, can_skip=lambda *_: False)
        listings = await _walk_diff(in_place, mountpoint)
        assert any(listing.entries or listing.removed for listing in listings.values())
        assert await _walk_diff(rebuilt, mountpoint) == listings
        await in_place.close()
        await rebuilt.close()


async def test_full_walk_when_the_applied_version_left_the_cache(repo: Repo) -> None:
    first = repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache")
        old_root = cached_catalog(repo, server, "cache", first.catalogs[""])
    sentinels = plant_sentinels(repo.base / "dest")
    assert old_root.is_file()
    old_root.unlink()  # the root catalog's applied version is gone; /data's is still there
    modify_for_next_revision(repo.source)
    modify_more(repo.source)
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        refreshed = await repo.export(server, "dest", "cache")
        assert refreshed.failures == []
        assert refreshed.catalogs_diffed == 2  # type: ignore[attr-defined]  # /data and /sw
        await repo.export(server, "fresh", "fresh-cache")
    root_sentinel, data_sentinel = sentinels
    assert not root_sentinel.exists()  # the root catalog was walked in full: pruned
    assert data_sentinel.is_file()  # /data was diffed: set3 untouched
    remove_sentinel(data_sentinel)
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []
    # Every file of the root catalog was looked at (41), and those of the new /new (14).
    assert linked(refreshed) == 55


def restructure(root: Path) -> None:
    """Catalog moves: a directory split off into a new catalog, a nested catalog moved,
    one merged into its parent (with an entry added and one removed on the way)."""
    (root / "data" / "set2" / ".cvmfscatalog").write_bytes(b"")
    (root / "new").rename(root / "renamed_new")
    (root / "sw" / "v1" / ".cvmfscatalog").unlink()
    (root / "sw" / "v1" / "lib" / "libbar_new.so").write_bytes(b"\x7fELF new")
    (root / "sw" / "v1" / "include" / "foo.h").unlink()
    for path in ("data/set2", "sw/v1", "sw/v1/lib", "sw/v1/include", "sw/v1/lib/libbar_new.so"):
        touch(root / path, CHANGED_MTIME + 1)
    touch(root, CHANGED_MTIME + 1)


@pytest.mark.usefixtures("preload_budget")
async def test_diff_follows_catalogs_split_moved_and_merged(repo: Repo) -> None:
    repo.publish()
    modify_for_next_revision(repo.source)
    second = repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache")
    merged_sentinel = repo.base / "dest" / FQRN / "sw" / "v1" / "lib" / SENTINEL
    merged_sentinel.write_text("walked in full when its catalog merges: pruned\n")
    restructure(repo.source)
    third = repo.publish()
    assert set(third.catalogs) - set(second.catalogs) == {"/data/set2", "/renamed_new"}
    assert set(second.catalogs) - set(third.catalogs) == {"/new", "/sw/v1"}
    async with StaticServer(repo.base / "server") as server:
        refreshed = await repo.export(server, "dest", "cache")
        assert refreshed.failures == []
        assert refreshed.catalogs_diffed == 3  # type: ignore[attr-defined]  # /, /data, /sw
        await repo.export(server, "fresh", "fresh-cache")
    assert not merged_sentinel.exists()
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []
    db = await StateDB.for_destination(repo.base / "dest")
    try:
        applied = await db.applied_catalogs(FQRN)
    finally:
        await db.close()
    assert applied == {m: d.hex for m, d in third.catalogs.items()}


async def test_spec_applies_to_the_diff(repo: Repo) -> None:
    spec = "/*\n!/data/set0\n!/README.txt\n"
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache", spec=spec)
    modify_for_next_revision(repo.source)  # changes /data/set0 and README.txt, both excluded
    modify_more(repo.source)
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        refreshed = await repo.export(server, "dest", "cache", spec=spec)
        assert refreshed.catalogs_diffed == 3  # type: ignore[attr-defined]
        await repo.export(server, "fresh", "fresh-cache", spec=spec)
    dest = repo.base / "dest" / FQRN
    assert not (dest / "README.txt").exists() and not (dest / "data" / "set0").exists()
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []


async def test_a_run_stopped_on_the_way_elsewhere_forgets_applied_catalogs(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    async with await StateDB.open(tmp_path / "state.db") as db:
        await db.begin_export(FQRN, root_hash="a" * 40, revision=1, spec_digest="s")
        await db.record_catalogs_applied(FQRN, {"": "a" * 40, "/data": "d" * 40})
        await db.finish_export(FQRN)
        # A run towards b stopped half-way (SIGKILL: still "running").
        await db.begin_export(FQRN, root_hash="b" * 40, revision=2, spec_digest="s")
        resumed = await plan_refresh(
            db, FQRN, root_hash="b" * 40, revision=2, spec_digest="s", tree_root=tree
        )
        assert resumed.applied == {"": "a" * 40, "/data": "d" * 40}
        assert resumed.after_unfinished  # its temp names may be in the directories it changed
        assert resumed.previous("/data", "e" * 40) == "d" * 40
        elsewhere = await plan_refresh(
            db, FQRN, root_hash="c" * 40, revision=3, spec_digest="s", tree_root=tree
        )
        assert elsewhere.applied == {} and not elsewhere.spec_changed
        assert await db.applied_catalogs(FQRN) == {}
        # A run that finished with failures forgot its failed catalogs itself: kept.
        await db.finish_export(FQRN, status=ABORTED, exit_code=143)
        await db.begin_export(FQRN, root_hash="c" * 40, revision=3, spec_digest="s")
        await db.record_catalogs_applied(FQRN, {"/sw": "f" * 40})
        await db.finish_export(FQRN, status=PARTIAL, exit_code=1)
        after_partial = await plan_refresh(
            db, FQRN, root_hash="e" * 40, revision=4, spec_digest="s", tree_root=tree
        )
        assert after_partial.applied == {"/sw": "f" * 40}


async def test_failed_catalogs_are_forgotten_so_the_next_run_walks_them(repo: Repo) -> None:
    first = repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache")
    modify_for_next_revision(repo.source)
    second = repo.publish()
    # The rewritten /data/set0/file0000.txt is missing on the server for one run.
    obj = next(
        path
        for path in (repo.base / "server" / "cvmfs" / FQRN / "data").rglob("*")
        if path.is_file() and path.stat().st_size < 64 and b"rewritten" in _inflate(path)
    )
    away = obj.with_name(obj.name + ".away")
    obj.rename(away)
    async with StaticServer(repo.base / "server") as server:
        partial = await repo.export(server, "dest", "cache")
        assert [f.path for f in partial.failures] == ["/data/set0/file0000.txt"]
        db = await StateDB.for_destination(repo.base / "dest")
        try:
            applied = await db.applied_catalogs(FQRN)
        finally:
            await db.close()
        assert "/data" not in applied and "" not in applied  # not left at the old hash
        assert applied["/sw/v1"] == first.catalogs["/sw/v1"].hex
        assert applied["/new"] == second.catalogs["/new"].hex
        away.rename(obj)
        again = await repo.export(server, "dest", "cache")
        assert again.failures == []
        await repo.export(server, "fresh", "fresh-cache")
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []


def _inflate(path: Path) -> bytes:
    try:
        return zlib.decompress(path.read_bytes())
    except zlib.error:
        return b""


# -- the real fixtures: fix1 revision A, then B into the same destination ------------------


def fixture_settings(server: StaticServer, fixtures: Path, tmp: Path) -> ClientSettings:
    idmap = tmp / "idmap"
    idmap.write_text("* 0\n")
    config = tmp / "fix1.conf"
    config.write_text(
        f"CVMFS_SERVER_URL={server.url}/cvmfs/@fqrn@\n"
        "CVMFS_HTTP_PROXY=DIRECT\n"
        f"CVMFS_KEYS_DIR={fixtures / 'keys'}\n"
        f"CVMFS_CACHE_BASE={tmp / 'cache'}\n"
        "CVMFS_SHARED_CACHE=no\nCVMFS_MOUNT_DIR=/cvmfs\nCVMFS_CLAIM_OWNERSHIP=no\n"
        f"CVMFS_USER=root\nCVMFS_UID_MAP={idmap}\nCVMFS_GID_MAP={idmap}\n"
    )
    return ClientSettings.load([config], "fix1.test.local")


@pytest.mark.skipif(os.geteuid() != 0, reason="the fixtures' owners need the uid map as root")
async def test_fixture_a_to_b_by_diff_gives_the_b_tree(
    fixture_server: StaticServer, fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    fqrn = "fix1.test.local"
    dest = tmp_path / "dest"
    results = []
    for revision in (2, 3):
        shutil.copy(
            fixtures_dir / "revisions" / fqrn / str(revision) / ".cvmfspublished",
            fixture_docroot / "cvmfs" / fqrn / ".cvmfspublished",
        )
        settings = fixture_settings(fixture_server, fixtures_dir, tmp_path)
        options = ExportOptions(dest_base=dest, max_in_flight=8)
        results.append(await export_repository(settings, Spec.parse("/*\n"), options))
    stats = results[1]
    assert stats.failures == [] and stats.removed > 0
    # /, /sw (its /sw/v1 merged in, /sw/v2 removed) and /data are diffed; /new is walked.
    assert stats.catalogs_diffed == 3  # type: ignore[attr-defined]
    expected = json.loads((fixtures_dir / "expected" / fqrn / "all_B.json").read_text())
    assert listing_problems(expected, listing.dump(str(dest), fqrn)) == []
