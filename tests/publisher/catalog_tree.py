"""Read a whole repository's catalogs (root and nested) with sqlite3, for comparisons."""

from __future__ import annotations

import sqlite3
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.hashing import Digest


@dataclass
class CatalogFile:
    mountpoint: str
    digest: Digest
    properties: dict[str, str]
    statistics: dict[str, int]
    rows: dict[str, dict[str, object]]  # path -> column values
    chunks: dict[str, list[tuple[int, int, bytes]]]
    nested: list[tuple[str, str, int]]
    master: list[tuple[str, str, str, str | None]] = field(default_factory=list)


def manifest_fields(repository: Path) -> dict[str, str]:
    text = (repository / ".cvmfspublished").read_bytes().split(b"\n--\n", 1)[0].decode()
    return {line[0]: line[1:] for line in text.splitlines() if line}


def open_catalog(repository: Path, digest: Digest, mountpoint: str) -> CatalogFile:
    blob = (repository / digest.object_path("C")).read_bytes()
    assert digest.matches(blob), f"catalog {digest.hex} does not match its hash"
    with tempfile.NamedTemporaryFile(suffix=".db") as handle:
        handle.write(zlib.decompress(blob))
        handle.flush()
        db = sqlite3.connect(handle.name)
        try:
            return _read(db, digest, mountpoint)
        finally:
            db.close()


def _read(db: sqlite3.Connection, digest: Digest, mountpoint: str) -> CatalogFile:
    db.row_factory = sqlite3.Row
    properties = {r["key"]: r["value"] for r in db.execute("SELECT * FROM properties")}
    statistics = {r["counter"]: r["value"] for r in db.execute("SELECT * FROM statistics")}
    names: dict[tuple[int, int], str] = {}
    raw_rows = list(db.execute("SELECT * FROM catalog"))
    by_key = {(r["md5path_1"], r["md5path_2"]): r for r in raw_rows}
    # Reconstruct paths from the parent links, starting at the catalog's root entry.
    from shrinkwrap_async.catalogs.entry import md5path

    root_key = md5path(mountpoint)
    names[root_key] = mountpoint
    pending = [root_key]
    children: dict[tuple[int, int], list[sqlite3.Row]] = {}
    for r in raw_rows:
        children.setdefault((r["parent_1"], r["parent_2"]), []).append(r)
    while pending:
        key = pending.pop()
        for child in children.get(key, ()):
            child_key = (child["md5path_1"], child["md5path_2"])
            if child_key == root_key:
                continue
            names[child_key] = f"{names[key]}/{child['name']}"
            pending.append(child_key)
    assert set(names) == set(by_key), "catalog rows not reachable from the root entry"
    rows = {names[k]: dict(r) for k, r in by_key.items()}
    chunks: dict[str, list[tuple[int, int, bytes]]] = {}
    for r in db.execute("SELECT * FROM chunks ORDER BY offset"):
        chunks.setdefault(names[(r["md5path_1"], r["md5path_2"])], []).append(
            (r["offset"], r["size"], r["hash"])
        )
    nested = [
        (r["path"], r["sha1"], r["size"]) for r in db.execute("SELECT * FROM nested_catalogs")
    ]
    master = [tuple(r) for r in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")]
    return CatalogFile(mountpoint, digest, properties, statistics, rows, chunks, nested, master)


def read_tree(repository: Path, root: Digest | None = None) -> dict[str, CatalogFile]:
    """Every catalog reachable from ``root`` (default: the manifest's), by mountpoint."""
    if root is None:
        root = Digest.from_hex(manifest_fields(repository)["C"])
    result: dict[str, CatalogFile] = {}
    pending = [("", root)]
    while pending:
        mountpoint, digest = pending.pop()
        catalog = open_catalog(repository, digest, mountpoint)
        result[mountpoint] = catalog
        pending.extend((path, Digest.from_hex(h)) for path, h, _ in catalog.nested)
    return result


def all_rows(tree: dict[str, CatalogFile]) -> dict[str, dict[str, object]]:
    """Rows of all catalogs by path; a nested root's row wins over its mountpoint row."""
    rows: dict[str, dict[str, object]] = {}
    for mountpoint in sorted(tree, key=len):
        rows.update(tree[mountpoint].rows)
    return rows


def all_chunks(tree: dict[str, CatalogFile]) -> dict[str, list[tuple[int, int, bytes]]]:
    chunks: dict[str, list[tuple[int, int, bytes]]] = {}
    for catalog in tree.values():
        chunks.update(catalog.chunks)
    return chunks
