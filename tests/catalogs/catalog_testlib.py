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


def build_catalog(
    path: Path,
    entries: list[dict[str, object]],
    *,
    properties: dict[str, str] | None = None,
    chunks: list[tuple[str, int, int, bytes]] = (),  # type: ignore[assignment]
    ddl: tuple[str, ...] | None = None,
    nested: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
    bind: list[tuple[str, str, int]] = (),  # type: ignore[assignment]
) -> Path:
    """Write a small catalog with sqlite3. Entries need ``path``; the rest has defaults.

    A ``path`` given as bytes is stored as TEXT holding those exact bytes.
    """
    import hashlib
    import sqlite3
    import struct

    from shrinkwrap_async.catalogs.schema import CATALOG_DDL

    def pair(raw: bytes) -> tuple[int, int]:
        return struct.unpack("<qq", hashlib.md5(raw).digest())

    db = sqlite3.connect(path)
    for statement in ddl if ddl is not None else CATALOG_DDL:
        db.execute(statement)
    props = {"schema": "2.5", "schema_revision": "6", "revision": "1"}
    props.update(properties or {})
    db.executemany("INSERT INTO properties VALUES (?, ?)", list(props.items()))
    columns = {row[1] for row in db.execute("PRAGMA table_info(catalog)")}
    for entry in entries:
        raw_path = entry["path"]
        raw = raw_path if isinstance(raw_path, bytes) else str(raw_path).encode()
        parent_raw, _, name = raw.rpartition(b"/")
        parent = pair(parent_raw) if raw else (0, 0)
        values = {
            "md5path_1": pair(raw)[0],
            "md5path_2": pair(raw)[1],
            "parent_1": parent[0],
            "parent_2": parent[1],
            "hardlinks": 1,
            "hash": None,
            "size": 0,
            "mode": 0o40755,
            "mtime": 1700000000,
            "flags": 1,
            "name": name,
            "symlink": "",
            "uid": 0,
            "gid": 0,
            "xattr": None,
        }
        values.update({k: v for k, v in entry.items() if k != "path"})
        names = [c for c in values if c in columns]
        marks = ", ".join("CAST(? AS TEXT)" if c == "name" else "?" for c in names)
        db.execute(
            f"INSERT INTO catalog ({', '.join(names)}) VALUES ({marks})",
            [values[c] for c in names],
        )
    for file_path, offset, size, digest in chunks:
        md5 = pair(file_path.encode())
        db.execute("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", (*md5, offset, size, digest))
    db.executemany("INSERT INTO nested_catalogs VALUES (?, ?, ?)", nested)
    if bind:
        db.executemany("INSERT INTO bind_mountpoints VALUES (?, ?, ?)", bind)
    db.commit()
    db.close()
    return path
