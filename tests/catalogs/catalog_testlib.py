"""Helpers for the catalog tests: inflate fixture catalogs and walk whole repository trees."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.catalogs.entry import Chunk, DirEntry
from shrinkwrap_async.catalogs.reader import Catalog
from shrinkwrap_async.hashing import Digest


def object_bytes(fixtures_dir: Path, fqrn: str, digest: Digest, suffix: str = "") -> bytes:
    """A stored object of a fixture repository, checked against its hash."""
    data = (fixtures_dir / fqrn / digest.object_path(suffix)).read_bytes()
    assert digest.matches(data), f"fixture object {digest.hex}{suffix} does not match its hash"
    return data


def root_digest(fixtures_dir: Path, fqrn: str, revision: int) -> Digest:
    text = (fixtures_dir / "revisions" / fqrn / str(revision) / "root_hash").read_text()
    return Digest.from_hex(text)


def inflate_catalog(fixtures_dir: Path, fqrn: str, digest: Digest, directory: Path) -> Path:
    target = directory / f"{digest.hex}.sqlite"
    if not target.exists():
        target.write_bytes(zlib.decompress(object_bytes(fixtures_dir, fqrn, digest, "C")))
    return target


@dataclass
class RepositoryTree:
    """Everything a full walk saw: entries by path (no leading slash), chunks, catalogs."""

    entries: dict[str, DirEntry] = field(default_factory=dict)
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    catalogs: dict[str, Digest] = field(default_factory=dict)
    statistics: dict[str, dict[str, int]] = field(default_factory=dict)


async def walk_repository(
    fixtures_dir: Path, fqrn: str, revision: int, workdir: Path
) -> RepositoryTree:
    """Walk every directory of a fixture revision, following nested catalogs."""
    tree = RepositoryTree()

    async def walk_catalog(digest: Digest, mountpoint: str) -> None:
        tree.catalogs[mountpoint] = digest
        path = inflate_catalog(fixtures_dir, fqrn, digest, workdir)
        async with await Catalog.open(path, mountpoint) as catalog:
            tree.statistics[mountpoint] = await catalog.statistics()
            root = await catalog.lookup(mountpoint)
            assert root is not None
            tree.entries[mountpoint.lstrip("/")] = root
            pending = [mountpoint]
            nested: list[tuple[Digest, str]] = []
            while pending:
                directory = pending.pop()
                async for entry in catalog.list_directory(directory):
                    tree.entries[entry.path.lstrip("/")] = entry
                    if entry.is_chunked:
                        tree.chunks[entry.path.lstrip("/")] = await catalog.chunks(entry)
                    if entry.is_nested_mountpoint:
                        ref = await catalog.nested_catalog(entry.path)
                        assert ref is not None, entry.path
                        nested.append((ref.digest, entry.path))
                    elif entry.is_directory and not entry.is_bind_mountpoint:
                        pending.append(entry.path)
            assert sorted(p for _, p in nested) == [r.path for r in await catalog.nested_catalogs()]
        for child_digest, child_mountpoint in nested:
            await walk_catalog(child_digest, child_mountpoint)

    await walk_catalog(root_digest(fixtures_dir, fqrn, revision), "")
    return tree
