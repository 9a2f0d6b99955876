"""Correctly signed but hostile repositories: the test publisher with hand-made catalog rows.

:class:`HostilePublisher` publishes a normal source tree, then adds arbitrary rows to any
catalog (names with ``/``, ``..``, NUL, empty names, duplicate names, absurd sizes, hard-link
groups across catalogs) and can replace the stored bytes of any catalog (not SQLite, a
decompression bomb) while every hash and signature stays right: what an exporter must
refuse even from a repository it trusts. It uses the publisher's hooks
(:meth:`Publisher.catalog_rows`, :meth:`Publisher.catalog_blob`)::

    publisher = HostilePublisher(out, fqrn)
    publisher.prepare_directories()  # objects can be stored before publish()
    digest = publisher.store_content(b"pwned\\n")
    publisher.extra_rows[""] = [file_row("/d", "../escape", digest, 6)]
    publisher.publish(base_source(tmp / "source"))
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.catalogs.schema import Flag
from shrinkwrap_async.hashing import Algorithm, Digest, ObjectSuffix
from shrinkwrap_async.testing import catalog_writer as cw
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, store_object

MTIME = 1_700_000_000

__all__ = [
    "HostilePublisher",
    "RawRow",
    "base_source",
    "bomb_blob",
    "dir_row",
    "file_row",
    "symlink_row",
]


@dataclass(slots=True)
class RawRow(cw.CatalogRow):
    """A catalog row whose parent is given explicitly (its name may contain anything)."""

    parent: str = ""

    @property
    def parent_path(self) -> str | None:  # type: ignore[override]
        return self.parent


def file_row(
    parent: str,
    name: str,
    digest: Digest,
    size: int,
    *,
    hardlinks: int = 1,
    path: str | None = None,
) -> RawRow:
    """A regular file ``name`` in ``parent`` (``path``, which names the row's own md5path,
    defaults to ``parent/name``; give another one to list a name twice)."""
    return RawRow(
        path=path or f"{parent}/{name}", name=name, mode=0o100644, size=size, mtime=MTIME,
        uid=0, gid=0, flags=int(Flag.FILE), content_hash=digest.raw, hardlinks=hardlinks,
        parent=parent,
    )  # fmt: skip


def symlink_row(parent: str, name: str, target: str, *, path: str | None = None) -> RawRow:
    return RawRow(
        path=path or f"{parent}/{name}", name=name, mode=0o120777, size=len(target),
        mtime=MTIME, uid=0, gid=0, flags=int(Flag.FILE | Flag.LINK), symlink=target,
        parent=parent,
    )  # fmt: skip


def dir_row(parent: str, name: str, *, path: str | None = None) -> RawRow:
    return RawRow(
        path=path or f"{parent}/{name}", name=name, mode=0o40755, size=4096, mtime=MTIME,
        uid=0, gid=0, flags=int(Flag.DIR), hardlinks=2, parent=parent,
    )  # fmt: skip


def bomb_blob(inflated: int = 1 << 30) -> bytes:
    """A zlib stream of ``inflated`` zero bytes (about 1 MiB per GiB)."""
    compressor = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    parts = [compressor.compress(zeros) for _ in range(inflated >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


class HostilePublisher(Publisher):
    """A :class:`Publisher` that adds ``extra_rows`` (mountpoint → rows) to catalogs, runs
    ``catalog_sql`` (mountpoint → (statement, parameters) pairs) on the finished catalog
    files (values of any SQLite type in any column), and stores ``catalog_blobs``
    (mountpoint → (stored bytes, inflated size)) in their place."""

    def __init__(self, out: Path, fqrn: str, options: PublishOptions | None = None) -> None:
        super().__init__(out, fqrn, options)
        self.extra_rows: dict[str, list[cw.CatalogRow]] = {}
        self.catalog_sql: dict[str, list[tuple[str, tuple[object, ...]]]] = {}
        self.catalog_blobs: dict[str, tuple[bytes, int]] = {}

    def store_content(self, data: bytes) -> Digest:
        """Store ``data`` as a zlib file object; returns its content hash."""
        return self.store_blob(zlib.compress(data, 6))

    def store_blob(self, blob: bytes) -> Digest:
        """Store raw stored bytes (e.g. a bomb) as a file object; returns their hash."""
        digest = Algorithm.SHA1.hash(blob)
        store_object(os.fspath(self.data_dir), digest, ObjectSuffix.NONE, blob)
        return digest

    def catalog_rows(self, mountpoint: str, rows: list[cw.CatalogRow]) -> list[cw.CatalogRow]:
        return [*rows, *self.extra_rows.get(mountpoint, ())]

    def catalog_blob(self, mountpoint: str, blob: bytes, size: int) -> tuple[bytes, int]:
        statements = self.catalog_sql.get(mountpoint)
        if statements:
            blob, size = _edited_catalog(blob, statements)
        return self.catalog_blobs.get(mountpoint, (blob, size))


def _edited_catalog(
    blob: bytes, statements: list[tuple[str, tuple[object, ...]]]
) -> tuple[bytes, int]:
    """The compressed catalog ``blob`` with ``statements`` run on it."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "catalog.db"
        path.write_bytes(zlib.decompress(blob))
        with contextlib.closing(sqlite3.connect(path)) as db:
            for statement, parameters in statements:
                db.execute(statement, parameters)
            db.commit()
        raw = path.read_bytes()
    return zlib.compress(raw, 6), len(raw)


def base_source(root: Path) -> Path:
    """A small source tree: /d/ok.txt, /n (a nested catalog) with /n/inner.txt, /keep.txt."""
    (root / "d").mkdir(parents=True, exist_ok=True)
    (root / "d" / "ok.txt").write_text("fine\n")
    (root / "n").mkdir(exist_ok=True)
    (root / "n" / ".cvmfscatalog").write_bytes(b"")
    (root / "n" / "inner.txt").write_text("inner\n")
    (root / "keep.txt").write_text("keep\n")
    return root
