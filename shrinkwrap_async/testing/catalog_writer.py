"""Write file catalogs (SQLite, schema 2.5 revision 6) as the CernVM-FS publisher does.

The publisher builds a list of :class:`CatalogRow` per catalog; :func:`write_catalog` turns
it into a database file with the exact upstream DDL, the properties the real tools set and
all 24 statistics counters. :func:`catalog_fingerprint` summarises the rows so that a
republish can tell whether a catalog changed (unchanged catalogs keep their hash).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.catalogs.entry import md5path
from shrinkwrap_async.catalogs.schema import (
    CATALOG_DDL,
    SCHEMA_REVISION,
    SCHEMA_VERSION,
    STATISTICS_COUNTERS,
    STATISTICS_KINDS,
    Flag,
)

NULL_HASH_HEX = "0" * 40  # previous_revision of a catalog that did not exist before


@dataclass(slots=True)
class CatalogRow:
    """One ``catalog`` row; ``path`` is ``""`` for the repository root, else ``/a/b``."""

    path: str
    name: str
    mode: int
    size: int
    mtime: int
    uid: int
    gid: int
    flags: int
    content_hash: bytes | None = None
    symlink: str = ""
    hardlinks: int = 1  # (group << 32) | linkcount
    xattr: bytes | None = None
    chunks: list[tuple[int, int, bytes]] = field(default_factory=list)  # offset, size, hash

    @property
    def parent_path(self) -> str | None:
        if self.path == "":
            return None
        return self.path.rsplit("/", 1)[0]


@dataclass(frozen=True, slots=True)
class NestedRef:
    path: str
    hash_hex: str  # with algorithm suffix, without "C"
    size: int  # uncompressed catalog size


def pack_hardlinks(group: int, linkcount: int) -> int:
    value = (group << 32) | linkcount
    return value - (1 << 64) if value >= 1 << 63 else value


def self_counters(rows: Iterable[CatalogRow], nested_count: int) -> dict[str, int]:
    """The ``self_*`` statistics of one catalog (without the ``self_`` prefix)."""
    counts = dict.fromkeys(STATISTICS_KINDS, 0)
    counts["nested"] = nested_count
    for row in rows:
        flags = row.flags
        if flags & Flag.DIR:
            counts["dir"] += 1
        elif flags & Flag.LINK:
            counts["symlink"] += 1
        elif flags & Flag.FILE_SPECIAL:
            counts["special"] += 1
        else:
            counts["regular"] += 1
            counts["file_size"] += row.size
            if flags & Flag.FILE_CHUNK:
                counts["chunked"] += 1
                counts["chunks"] += len(row.chunks)
                counts["chunked_size"] += row.size
            if flags & Flag.FILE_EXTERNAL:
                counts["external"] += 1
                counts["external_file_size"] += row.size
        if row.xattr is not None:
            counts["xattr"] += 1
    return counts


def add_counters(total: dict[str, int], other: Mapping[str, int]) -> None:
    for kind in STATISTICS_KINDS:
        total[kind] += other[kind]


def catalog_fingerprint(rows: Sequence[CatalogRow], nested: Sequence[NestedRef]) -> str:
    """A stable digest of a catalog's content (rows, chunks, nested references)."""
    digest = hashlib.sha1()
    for row in sorted(rows, key=lambda r: r.path):
        digest.update(
            repr(
                (
                    row.path,
                    row.mode,
                    row.size,
                    row.mtime,
                    row.uid,
                    row.gid,
                    row.flags,
                    row.content_hash,
                    row.symlink,
                    row.hardlinks,
                    row.xattr,
                    row.chunks,
                )
            ).encode("utf-8", "surrogateescape")
        )
    for ref in sorted(nested, key=lambda r: r.path):
        digest.update(repr((ref.path, ref.hash_hex, ref.size)).encode())
    return digest.hexdigest()


def catalog_properties(
    *,
    root_prefix: str | None,
    revision: int,
    previous_revision: str | None,
    last_modified: int,
    ttl: int | None,
) -> dict[str, str]:
    """Properties in the order the real tools write them (root: TTL; nested: root_prefix)."""
    properties = {"schema": SCHEMA_VERSION, "schema_revision": str(SCHEMA_REVISION)}
    if root_prefix is not None:
        properties["root_prefix"] = root_prefix
    if ttl is not None:
        properties["TTL"] = str(ttl)
    properties["last_modified"] = str(last_modified)
    properties["revision"] = str(revision)
    if previous_revision is not None:
        properties["previous_revision"] = previous_revision
    return properties


def write_catalog(
    path: Path,
    rows: Sequence[CatalogRow],
    nested: Sequence[NestedRef],
    properties: Mapping[str, str],
    self_stats: Mapping[str, int],
    subtree_stats: Mapping[str, int],
) -> None:
    """Create the SQLite catalog file at ``path`` (replacing any existing file)."""
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("BEGIN")
        for statement in CATALOG_DDL:
            db.execute(statement)
        db.executemany("INSERT INTO properties (key, value) VALUES (?, ?)", properties.items())
        db.executemany(
            "INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, "
            "size, mode, mtime, flags, name, symlink, uid, gid, xattr) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_catalog_values(row) for row in rows),
        )
        db.executemany(
            "INSERT INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?, ?, ?, ?, ?)",
            (
                (*md5path(row.path), offset, size, digest)
                for row in rows
                for offset, size, digest in row.chunks
            ),
        )
        db.executemany(
            "INSERT INTO nested_catalogs (path, sha1, size) VALUES (?, ?, ?)",
            ((ref.path, ref.hash_hex, ref.size) for ref in nested),
        )
        statistics = [(f"self_{k}", self_stats[k]) for k in STATISTICS_KINDS]
        statistics += [(f"subtree_{k}", subtree_stats[k]) for k in STATISTICS_KINDS]
        assert tuple(name for name, _ in statistics) == STATISTICS_COUNTERS
        db.executemany("INSERT INTO statistics (counter, value) VALUES (?, ?)", statistics)
        db.execute("COMMIT")
    finally:
        db.close()


def _catalog_values(row: CatalogRow) -> tuple[object, ...]:
    parent = row.parent_path
    parent_1, parent_2 = (0, 0) if parent is None else md5path(parent)
    return (
        *md5path(row.path),
        parent_1,
        parent_2,
        row.hardlinks,
        row.content_hash,
        row.size,
        row.mode,
        row.mtime,
        row.flags,
        row.name,
        row.symlink,
        row.uid,
        row.gid,
        row.xattr,
    )
