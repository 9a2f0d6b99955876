"""Incremental refresh against publisher-made revisions N and N+1 (real HTTP, real catalogs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.db import StateDB
from shrinkwrap_async.testing.chunking import ChunkSizes
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, PublishResult
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import listing_tool
from shrinkwrap_async.testing.source_trees import (
    CHANGED_MTIME,
    build_source_tree,
    modify_for_next_revision,
    touch,
)

FQRN = "refresh.test.local"
listing = listing_tool()


def tree_problems(expected_base: Path, actual_base: Path) -> list[str]:
    """listing.diff of two exports; a shared inode's mtime may be any member's."""
    expected = listing.dump(str(expected_base), FQRN)
    actual = listing.dump(str(actual_base), FQRN)
    return listing_problems(expected, actual)


def listing_problems(expected: dict, actual: dict) -> list[str]:  # type: ignore[type-arg]
    """listing.diff of two dumps, allowing a shared inode the mtime of any of its paths."""
    groups: dict[object, set[int]] = {}
    for entry in expected["entries"].values():
        if "group" in entry:
            groups.setdefault(entry["group"], set()).add(entry["mtime"])
    kept = []
    for problem in listing.diff(expected, actual):
        if problem.startswith("mtime differs at "):
            rel = problem.split("'")[1]
            entry = expected["entries"][rel]
            if entry.get("type") == "f" and actual["entries"][rel]["mtime"] in groups.get(
                entry.get("group"), ()
            ):
                continue
        kept.append(problem)
    return kept


def modify_more(root: Path) -> None:
    """Beyond modify_for_next_revision: a file added, one moved, one in a nested catalog."""
    (root / "added_at_top.txt").write_text("new in N+1\n")
    (root / "dups" / "sub" / "copy3.txt").rename(root / "moved_copy3.txt")
    (root / "data" / "set1" / "file0001.txt").unlink()
    for path in ("added_at_top.txt", "dups/sub", "dups", "data/set1"):  # a move keeps mtime
        touch(root / path, CHANGED_MTIME)
    touch(root, CHANGED_MTIME)


class Repo:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.source = build_source_tree(
            base / "source", FQRN, chunk_min=64 << 10, large_size=600_000, zeros_size=300_000
        )
        options = PublishOptions(chunk_sizes=ChunkSizes(64 << 10, 128 << 10, 256 << 10), workers=1)
        self.publisher = Publisher(base / "server", FQRN, options)

    def publish(self) -> PublishResult:
        return self.publisher.publish(self.source)

    def settings(self, server: StaticServer, cache: str) -> ClientSettings:
        return ClientSettings.for_repository(
            FQRN,
            server.repository_url(FQRN),
            self.publisher.keys_dir / f"{FQRN}.pub",
            cache_base=self.base / cache,
        )

    async def export(
        self, server: StaticServer, dest: str, cache: str, spec: str = "/*\n"
    ) -> ExportStats:
        options = ExportOptions(dest_base=self.base / dest, max_in_flight=8)
        return await export_repository(self.settings(server, cache), Spec.parse(spec), options)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def catalog_requests(server: StaticServer) -> set[str]:
    return {path for path in server.requests if path.endswith("C")}


async def test_unchanged_repository_costs_two_requests(repo: Repo) -> None:
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        first = await repo.export(server, "dest", "cache")
        assert first.failures == [] and first.files > 100
        server.requests.clear()
        again = await repo.export(server, "dest", "cache")
        assert sorted(server.requests) == [
            f"cvmfs/{FQRN}/.cvmfspublished",
            f"cvmfs/{FQRN}/.cvmfswhitelist",
        ]
        assert server.total_requests == 2
        assert again.up_to_date  # type: ignore[attr-defined]
        # A changed spec is not up to date: the run walks, and prunes what is excluded now.
        server.requests.clear()
        narrowed = await repo.export(server, "dest", "cache", spec="/*\n!/data\n")
        assert not narrowed.up_to_date  # type: ignore[attr-defined]
        assert not (repo.base / "dest" / FQRN / "data").exists()
        assert (repo.base / "dest" / FQRN / "sw" / "v1" / "lib" / "libfoo.so").is_file()
        widened = await repo.export(server, "dest", "cache", spec="/*\n")
        assert widened.failures == []
    assert tree_problems(repo.base / "dest", repo.base / "dest") == []
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "fresh", "fresh-cache")
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []


async def test_refresh_equals_fresh_export_and_fetches_only_changed_catalogs(
    repo: Repo,
) -> None:
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        first = await repo.export(server, "dest", "cache")
        assert first.failures == []
    modify_for_next_revision(repo.source)
    modify_more(repo.source)
    second = repo.publish()
    assert "/new" in second.catalogs and "/sw/v2/nested/deeper" not in second.catalogs
    # A temp name a killed run left at the tree's root.
    stale = ".shrinkwrap-async.0123456789abcdef0123456789abcdef.tmp"
    (repo.base / "dest" / FQRN / stale).write_text("half")
    unchanged = {"/sw/v1", "/empty_catalog"}
    assert unchanged.isdisjoint(second.rewritten_catalogs)
    async with StaticServer(repo.base / "server") as server:
        # A new, empty catalog cache: every catalog the refresh walks costs a request.
        refreshed = await repo.export(server, "dest", "refresh-cache")
        fetched = catalog_requests(server)
        assert refreshed.failures == []
        assert refreshed.catalogs_skipped == 2  # type: ignore[attr-defined]
        expected = {
            f"cvmfs/{FQRN}/{second.catalogs[m].object_path('C')}"
            for m in second.catalogs
            if m not in unchanged
        }
        assert fetched == expected
        server.requests.clear()
        await repo.export(server, "fresh", "fresh-cache")
        assert len(catalog_requests(server)) == len(second.catalogs)
    assert tree_problems(repo.base / "fresh", repo.base / "dest") == []
    dest = repo.base / "dest" / FQRN
    assert (dest / "new" / "many" / "f011").is_file()
    assert not (dest / "sw" / "v2").exists()
    assert not (dest / "etc" / "conf.ini").exists()
    assert (dest / "moved_copy3.txt").is_file() and not (dest / "dups/sub/copy3.txt").exists()
    assert (dest / "README.txt").read_text() == "A test repository, revision B.\n"
    assert not (dest / stale).exists()
    # Directory mtimes follow the new revision (the real tool leaves them stale).
    assert int((dest / "dups").stat().st_mtime) == CHANGED_MTIME
    db = await StateDB.for_destination(repo.base / "dest")
    try:
        applied = await db.applied_catalogs(FQRN)
        last = await db.last_export(FQRN)
    finally:
        await db.close()
    assert applied == {m: d.hex for m, d in second.catalogs.items()}  # stale rows forgotten
    assert last is not None and last.root_hash == second.root_hash.hex


def object_of(dest_base: Path, relative: str) -> str:
    """The content hash (hex) of the .data object a tree file is linked to."""
    inode = (dest_base / FQRN / relative).stat().st_ino
    for path in (dest_base / ".data").rglob("*"):
        if path.is_file() and path.stat().st_ino == inode:
            name = path.relative_to(dest_base / ".data").as_posix()
            return name[:2] + name[3:5] + name[6:].split(".")[0]
    raise AssertionError(f"{relative} is not linked into .data")


async def test_failed_objects_keep_their_catalog_unrecorded(repo: Repo) -> None:
    published = repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "probe", "probe-cache")
    content = object_of(repo.base / "probe", "data/set2/file0002.txt")
    stored = repo.base / "server" / "cvmfs" / FQRN / "data" / content[:2] / content[2:]
    moved = stored.with_name(stored.name + ".away")
    stored.rename(moved)  # the server answers 404 for this one object
    async with StaticServer(repo.base / "server") as server:
        first = await repo.export(server, "dest", "cache")
        assert len(first.failures) == 1
        assert first.exit_code == 1  # type: ignore[attr-defined]
        db = await StateDB.for_destination(repo.base / "dest")
        try:
            applied = await db.applied_catalogs(FQRN)
        finally:
            await db.close()
        # The failed file's catalog and its ancestor are not recorded; the others are.
        assert "/data" not in applied and "" not in applied
        assert applied["/sw/v1"] == published.catalogs["/sw/v1"].hex
        moved.rename(stored)
        second = await repo.export(server, "dest", "cache")
        assert second.failures == [] and not second.up_to_date  # type: ignore[attr-defined]
        assert second.data_files == 1  # only the missing object is downloaded
    assert tree_problems(repo.base / "probe", repo.base / "dest") == []


async def test_a_lost_state_database_is_rebuilt_without_downloading_objects(repo: Repo) -> None:
    """What the error for a damaged state database advises: moved aside, the next run walks
    the tree again, finds every object in .data and records the export anew."""
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache")
        provenance = repo.base / "dest" / ".provenance"
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            (provenance / name).unlink(missing_ok=True)
        server.requests.clear()
        again = await repo.export(server, "dest", "cache")
        assert again.failures == [] and not again.up_to_date  # type: ignore[attr-defined]
        assert again.data_files == 0
        objects = [path for path in server.requests if "/data/" in path and path[-1] != "C"]
        assert objects == []
        server.requests.clear()
        assert (await repo.export(server, "dest", "cache")).up_to_date  # type: ignore[attr-defined]
        assert server.total_requests == 2
