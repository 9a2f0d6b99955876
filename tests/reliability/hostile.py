"""Correctly signed but hostile repositories: the publisher with hand-made catalog rows.

:class:`HostilePublisher` publishes a normal source tree, then adds arbitrary rows to any
catalog (names with ``/``, ``..``, NUL, empty names, duplicate names, absurd sizes, hard-link
groups across catalogs) and can replace the stored blob of any catalog (not SQLite, a
decompression bomb) while keeping every hash and signature right. It belongs next to the
publisher (``shrinkwrap_async/testing/hostile.py``) once that module settles.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.catalogs.entry import md5path
from shrinkwrap_async.catalogs.schema import Flag
from shrinkwrap_async.hashing import Algorithm, Digest, ObjectSuffix
from shrinkwrap_async.testing import catalog_writer as cw
from shrinkwrap_async.testing.publish import Publisher, store_object

MTIME = 1_700_000_000


@dataclass(slots=True)
class RawRow(cw.CatalogRow):
    """A catalog row whose parent is given explicitly (its name may contain anything)."""

    parent: str = ""

    @property
    def parent_path(self) -> str | None:  # type: ignore[override]
        return self.parent


def file_row(parent: str, name: str, digest: Digest, size: int, *, hardlinks: int = 1) -> RawRow:
    return RawRow(
        path=f"{parent}/{name}", name=name, mode=0o100644, size=size, mtime=MTIME, uid=0,
        gid=0, flags=int(Flag.FILE), content_hash=digest.raw, hardlinks=hardlinks, parent=parent,
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
    """``HostilePublisher(out, fqrn, options)``; set ``extra_rows`` / ``catalog_blobs``."""

    def __init__(self, out: Path, fqrn: str, options: object = None) -> None:
        super().__init__(out, fqrn, options)  # type: ignore[arg-type]
        self.extra_rows: dict[str, list[cw.CatalogRow]] = {}
        self.catalog_blobs: dict[str, tuple[bytes, int]] = {}  # mountpoint -> blob, size

    def store_content(self, data: bytes) -> Digest:
        """Store ``data`` as a zlib file object; returns its content hash."""
        blob = zlib.compress(data, 6)
        digest = Algorithm.SHA1.hash(blob)
        store_object(os.fspath(self.data_dir), digest, ObjectSuffix.NONE, blob)
        return digest

    def store_blob(self, blob: bytes) -> Digest:
        """Store raw stored bytes (e.g. a bomb) as a file object."""
        digest = Algorithm.SHA1.hash(blob)
        store_object(os.fspath(self.data_dir), digest, ObjectSuffix.NONE, blob)
        return digest

    def _build_catalogs(self, tree, stored):  # type: ignore[no-untyped-def]
        root = super()._build_catalogs(tree, stored)
        builds, stack = {}, [root]
        while stack:
            build = stack.pop()
            builds[build.mountpoint] = build
            stack += build.children
        for mountpoint, rows in self.extra_rows.items():
            builds[mountpoint].rows.extend(rows)
        return root

    def _store_catalog(self, rows, nested, properties, self_stats, subtree):  # type: ignore[no-untyped-def]
        mountpoint = properties.get("root_prefix", "")
        if properties.get("revision") != "0" and mountpoint in self.catalog_blobs:
            blob, size = self.catalog_blobs[mountpoint]
            digest = Algorithm.SHA1.hash(blob)
            store_object(os.fspath(self.data_dir), digest, ObjectSuffix.CATALOG, blob)
            return digest, size
        return super()._store_catalog(rows, nested, properties, self_stats, subtree)


def base_source(root: Path) -> Path:
    """/d/ok.txt, /n (nested catalog) with /n/inner.txt, /keep.txt."""
    (root / "d").mkdir(parents=True, exist_ok=True)
    (root / "d" / "ok.txt").write_text("fine\n")
    (root / "n").mkdir(exist_ok=True)
    (root / "n" / ".cvmfscatalog").write_bytes(b"")
    (root / "n" / "inner.txt").write_text("inner\n")
    (root / "keep.txt").write_text("keep\n")
    return root


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


__all__ = ["HostilePublisher", "RawRow", "base_source", "bomb_blob", "dir_row", "file_row",
           "md5path", "symlink_row"]  # fmt: skip
