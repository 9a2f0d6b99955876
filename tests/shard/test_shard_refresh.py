"""Shards refreshing a tree: the directory owner prunes, the content owner replaces files.

Revision N is exported by three shards and the final pass; revision N+1 (files rewritten,
removed and added, a nested catalog gone and one new, and type changes both ways) by three
shards again. Before the final pass, the tree already holds every entry of N+1 and nothing
of N (only directory metadata is the final pass's); after it, the tree equals a fresh
single-process export of N+1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.testing.command_line import run_cli_process
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import listing_tool, write_client_config
from shrinkwrap_async.testing.source_trees import (
    CHANGED_MTIME,
    build_source_tree,
    modify_for_next_revision,
    touch,
)

from .test_shard_export import content_view, export_cli, object_requests, snapshot

FQRN = "shardrefresh.test.local"
SHARDS = 3
listing = listing_tool()


def change_types(root: Path) -> None:
    """Type changes in both directions, beyond ``modify_for_next_revision``."""
    changed = root / "typechange"
    (changed / "file_becomes_dir").unlink()
    (changed / "file_becomes_dir").mkdir()
    (changed / "file_becomes_dir" / "inside.txt").write_text("now a directory\n")
    shutil.rmtree(changed / "dir_becomes_file")
    (changed / "dir_becomes_file").write_text("now a file\n")
    (root / "links" / "rel").unlink()
    (root / "links" / "rel").write_text("a symlink before\n")
    (root / "readonly.txt").unlink()
    os.symlink("README.txt", root / "readonly.txt")
    for path in (
        changed / "file_becomes_dir" / "inside.txt",
        changed / "file_becomes_dir",
        changed / "dir_becomes_file",
        changed,
        root / "links" / "rel",
        root / "links",
        root,
    ):
        touch(path, CHANGED_MTIME)
    os.utime(root / "readonly.txt", (CHANGED_MTIME, CHANGED_MTIME), follow_symlinks=False)


async def run_shards(common: list[str], dest: Path) -> list[int]:
    return list(
        await asyncio.gather(
            *(
                export_cli(*common, "-x", str(dest), "--shard", f"{k}/{SHARDS}")
                for k in range(SHARDS)
            )
        )
    )


@dataclass
class TwoRevisions:
    """Revision N published and served; :meth:`next_revision` publishes N+1."""

    source: Path
    publisher: Publisher
    server: StaticServer
    common: list[str]  # -r, -f, -t

    async def next_revision(self, fresh: Path) -> tuple[dict[str, object], set[str]]:
        """Publish N+1 and export it into the new ``fresh``: its snapshot and the objects
        that export fetched. The server's request counts start from zero again."""
        modify_for_next_revision(self.source)
        change_types(self.source)
        self.publisher.publish(self.source)
        assert await export_cli(*self.common, "-x", str(fresh)) == 0
        expected = snapshot(fresh, FQRN)
        new_objects = set(object_requests(self.server))
        self.server.requests.clear()
        return expected, new_objects


@contextlib.asynccontextmanager
async def two_revisions(tmp_path: Path) -> AsyncIterator[TwoRevisions]:
    source = build_source_tree(tmp_path / "source", FQRN, special=False)
    publisher = Publisher(tmp_path / "server", FQRN, PublishOptions(workers=1))
    publisher.publish(source)
    async with StaticServer(tmp_path / "server") as server:
        config = write_client_config(tmp_path / "client", server.url, publisher.keys_dir)
        spec = tmp_path / "all.spec"
        spec.write_text("/*\n")
        common = ["-r", FQRN, "-f", str(config), "-t", str(spec)]
        yield TwoRevisions(source, publisher, server, common)


async def test_shards_refresh_equal_a_fresh_export(tmp_path: Path) -> None:
    async with two_revisions(tmp_path) as revisions:
        common, server = revisions.common, revisions.server
        sharded = tmp_path / "sharded"
        assert await run_shards(common, sharded) == [0] * SHARDS
        assert await export_cli(*common, "-x", str(sharded)) == 0

        expected, new_objects = await revisions.next_revision(tmp_path / "fresh")
        assert await run_shards(common, sharded) == [0] * SHARDS
        problems = listing.diff(content_view(expected), content_view(snapshot(sharded, FQRN)))
        assert problems == []
        # Only what N+1 added was fetched, each object once.
        fetched = object_requests(server)
        assert set(fetched) < new_objects and max(fetched.values()) == 1

        assert await export_cli(*common, "-x", str(sharded)) == 0
        assert listing.diff(expected, snapshot(sharded, FQRN)) == []


async def test_workers_refresh_diffs_in_one_process(tmp_path: Path) -> None:
    """``--workers`` on a tree whose catalogs are recorded refreshes from the catalogs'
    differences in the parent: no shard starts, only the new objects are fetched, and the
    tree equals a fresh export of the new revision."""
    async with two_revisions(tmp_path) as revisions:
        common, server = revisions.common, revisions.server
        sharded = tmp_path / "sharded"
        first = await run_cli_process(
            "export", *common, "-x", str(sharded), "--workers", "3", "--json"
        )
        assert first.exit_code == 0 and json.loads(first.stdout)["workers"] == 3

        expected, new_objects = await revisions.next_revision(tmp_path / "fresh")
        again = await run_cli_process(
            "export", *common, "-x", str(sharded), "--workers", "3", "--json", "-v"
        )
        assert again.exit_code == 0, again.stderr
        summary = json.loads(again.stdout)
        assert "shards" not in summary and summary["files"] > 0
        assert "without shards" in again.stderr
        fetched = object_requests(server)
        assert set(fetched) < new_objects and max(fetched.values()) == 1
        assert listing.diff(expected, snapshot(sharded, FQRN)) == []
        # The parent's trust check serves the export: the manifest and whitelist are fetched
        # once, and the summary counts every request the command made.
        assert server.requests[f"cvmfs/{FQRN}/.cvmfspublished"] == 1
        assert summary["requests"] == sum(server.requests.values())
