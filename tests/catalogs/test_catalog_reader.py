"""Catalog reader behaviour on hand-made catalogs: refusals, schema variants, ordering,
non-UTF-8 names, chunk validation, hidden entries and bind mountpoints."""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from catalog_testlib import build_catalog, inflate_catalog, root_digest

from shrinkwrap_async.catalogs.entry import CatalogError, DirEntry
from shrinkwrap_async.catalogs.reader import PAGE_CACHE_KIB, Catalog, content_share_of
from shrinkwrap_async.catalogs.schema import CATALOG_DDL

ROOT = {"path": ""}
FILE = 0o100644


async def test_not_sqlite_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(CatalogError, match="is not a CernVM-FS catalog"):
        await Catalog.open(junk)
    with pytest.raises(CatalogError, match="is not a CernVM-FS catalog: no such file"):
        await Catalog.open(tmp_path / "missing")


async def test_sqlite_without_catalog_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE properties (key TEXT, value TEXT)")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="is not a CernVM-FS catalog: no catalog table"):
        await Catalog.open(path)


async def test_truncated_catalog_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    digest = root_digest(fixtures_dir, "fix1.test.local", 2)
    full = inflate_catalog(fixtures_dir, "fix1.test.local", digest, tmp_path)
    cut = tmp_path / "cut.db"
    cut.write_bytes(full.read_bytes()[: 3 * 4096])
    with pytest.raises(CatalogError):
        catalog = await Catalog.open(cut)
        try:
            async for _ in catalog.iter_entries():
                pass
        finally:
            await catalog.close()


@pytest.mark.parametrize("schema", ["3.0", "2.6", "1.0", ""])
async def test_unsupported_schema_is_refused(tmp_path: Path, schema: str) -> None:
    path = build_catalog(tmp_path / "c.db", [ROOT], properties={"schema": schema})
    with pytest.raises(CatalogError, match="unsupported schema"):
        await Catalog.open(path)


async def test_old_schemas_are_read(tmp_path: Path) -> None:
    no_xattr = tuple(s.replace("xattr BLOB,", "") for s in CATALOG_DDL)
    old = build_catalog(
        tmp_path / "old.db",
        [ROOT, {"path": "/f", "mode": FILE, "flags": 4, "hash": b"\1" * 20, "size": 3}],
        properties={"schema": "2.5", "schema_revision": "1"},
        ddl=no_xattr,
    )
    async with await Catalog.open(old) as catalog:
        entry = await catalog.lookup("/f")
        assert entry is not None and entry.xattrs == () and entry.size == 3
        assert catalog.schema == "2.5" and catalog.schema_revision == 1
    two_four = build_catalog(
        tmp_path / "24.db", [ROOT], properties={"schema": "2.4", "schema_revision": "0"}
    )
    async with await Catalog.open(two_four) as catalog:
        assert catalog.schema == "2.4"
    with_mtimens = tuple(
        s.replace("mtime INTEGER,", "mtime INTEGER, mtimens INTEGER,") for s in CATALOG_DDL
    )
    rev7 = build_catalog(
        tmp_path / "7.db",
        [ROOT, {"path": "/d"}],
        properties={"schema_revision": "7"},
        ddl=with_mtimens,
    )
    async with await Catalog.open(rev7) as catalog:
        assert [e.name async for e in catalog.list_directory("")] == ["d"]
    broken = build_catalog(
        tmp_path / "broken.db", [ROOT], properties={"schema_revision": "6"}, ddl=no_xattr
    )
    with pytest.raises(CatalogError, match="without an xattr column"):
        await Catalog.open(broken)


async def test_listing_is_in_name_byte_order_and_keeps_non_utf8_names(tmp_path: Path) -> None:
    names = [b"b", b"a", b"B", "é".encode(), b"caf\xe9", b"z", b".hidden", b"A long name"]
    path = build_catalog(tmp_path / "c.db", [ROOT] + [{"path": b"/" + n} for n in names])
    async with await Catalog.open(path) as catalog:
        listed = [e async for e in catalog.list_directory("")]
        raw = [e.name.encode("utf-8", "surrogateescape") for e in listed]
        assert raw == sorted(names)
        odd = next(e for e in listed if e.name.encode("utf-8", "surrogateescape") == b"caf\xe9")
        assert odd.path == "/" + odd.name
        found = await catalog.lookup(odd.path)
        assert found == odd


async def test_root_entry_and_prefix_are_checked(tmp_path: Path, fixtures_dir: Path) -> None:
    no_root = build_catalog(tmp_path / "noroot.db", [{"path": "/x"}])
    with pytest.raises(CatalogError, match="no root directory entry"):
        await Catalog.open(no_root)
    digest = root_digest(fixtures_dir, "fix1.test.local", 2)
    root = inflate_catalog(fixtures_dir, "fix1.test.local", digest, tmp_path)
    async with await Catalog.open(root) as catalog:
        sw = await catalog.nested_catalog("/sw")
        assert sw is not None and sw.size > 0
        assert await catalog.nested_catalog("/bin") is None
        assert catalog.revision == 2 and "root_prefix" not in catalog.properties
    nested = inflate_catalog(fixtures_dir, "fix1.test.local", sw.digest, tmp_path)
    with pytest.raises(CatalogError, match="root_prefix"):
        await Catalog.open(nested)
    with pytest.raises(CatalogError, match="root_prefix"):
        await Catalog.open(nested, "/data")
    async with await Catalog.open(nested, "/sw") as catalog:
        assert catalog.properties["root_prefix"] == "/sw"
        entries = [e async for e in catalog.iter_entries()]
        assert entries[0].path == "/sw" and entries[0].is_nested_root
        assert len(entries) == 16
        assert {e.path for e in entries} >= {"/sw/.cvmfscatalog", "/sw/v1"}


async def test_chunks_must_cover_the_file(tmp_path: Path) -> None:
    d = b"\2" * 20
    entries = [
        ROOT,
        {"path": "/good", "mode": FILE, "flags": 68, "size": 30},
        {"path": "/gap", "mode": FILE, "flags": 68, "size": 30},
        {"path": "/short", "mode": FILE, "flags": 68, "size": 30},
        {"path": "/none", "mode": FILE, "flags": 68, "size": 30},
        {"path": "/badhash", "mode": FILE, "flags": 68, "size": 20},
    ]
    chunks = [
        ("/good", 10, 20, d),
        ("/good", 0, 10, d),
        ("/gap", 0, 10, d),
        ("/gap", 11, 19, d),
        ("/short", 0, 10, d),
        ("/short", 10, 10, d),
        ("/badhash", 0, 10, d),
        ("/badhash", 10, 10, b"\1" * 16),
    ]
    path = build_catalog(tmp_path / "c.db", entries, chunks=chunks)
    async with await Catalog.open(path) as catalog:
        good = await catalog.chunks("/good")
        assert [(c.offset, c.size) for c in good] == [(0, 10), (10, 20)]
        for bad in ("/gap", "/short", "/none", "/badhash"):
            with pytest.raises(CatalogError):
                await catalog.chunks(bad)
        with pytest.raises(CatalogError):
            await catalog.chunks("/missing")


async def test_hidden_and_bind_mountpoints(tmp_path: Path) -> None:
    snapshot = "0" * 40
    path = build_catalog(
        tmp_path / "c.db",
        [
            ROOT,
            {"path": "/.cvmfs", "flags": 0x8003},
            {"path": "/snap", "flags": 0x4001},
            {"path": "/nested", "flags": 3},
        ],
        nested=[("/.cvmfs", "1" * 40, 10), ("/nested", "2" * 40 + "-rmd160", 10)],
        bind=[("/snap", snapshot, 10)],
    )
    async with await Catalog.open(path) as catalog:
        assert [e.name async for e in catalog.list_directory("")] == ["nested", "snap"]
        everything = [e.name async for e in catalog.list_directory("", include_hidden=True)]
        assert everything == [".cvmfs", "nested", "snap"]
        snap = await catalog.lookup("/snap")
        assert snap is not None and snap.is_bind_mountpoint
        assert await catalog.nested_catalog("/snap") is None
        refs = await catalog.nested_catalogs()
        assert [r.path for r in refs] == ["/.cvmfs", "/nested"]
        assert refs[1].digest.hex == "2" * 40 + "-rmd160"
        assert [e.path async for e in catalog.iter_entries()] == ["", "/.cvmfs", "/nested", "/snap"]


async def test_bad_xattr_blob_in_a_row_is_a_catalog_error(tmp_path: Path) -> None:
    path = build_catalog(
        tmp_path / "c.db", [ROOT, {"path": "/f", "mode": FILE, "flags": 4, "xattr": b"\2\0"}]
    )
    async with await Catalog.open(path) as catalog:
        with pytest.raises(CatalogError, match="version"):
            await catalog.lookup("/f")


def test_fixture_catalog_objects_are_zlib(fixtures_dir: Path) -> None:
    digest = root_digest(fixtures_dir, "fix3.test.local", 2)
    data = (fixtures_dir / "fix3.test.local" / digest.object_path("C")).read_bytes()
    assert zlib.decompress(data).startswith(b"SQLite format 3\0")


async def test_an_open_catalog_keeps_a_small_page_cache(tmp_path: Path) -> None:
    """Dozens of catalogs are open during a walk: each holds at most PAGE_CACHE_KIB of pages
    (SQLite's default would let memory grow with the catalogs' size)."""
    path = build_catalog(tmp_path / "c.db", [ROOT])
    async with await Catalog.open(path) as catalog:
        row = catalog._db.execute("PRAGMA cache_size").fetchone()
    assert row is not None and row[0] == -PAGE_CACHE_KIB


async def fixture_directories(
    tmp_path: Path, fixtures_dir: Path, fqrn: str
) -> AsyncIterator[tuple[Catalog, str, list[DirEntry]]]:
    """(catalog, directory, its full listing) for every directory of a fixture's root
    catalog, nested mountpoints not entered."""
    digest = root_digest(fixtures_dir, fqrn, 2)
    path = inflate_catalog(fixtures_dir, fqrn, digest, tmp_path)
    async with await Catalog.open(path) as catalog:
        pending = [""]
        while pending:
            directory = pending.pop()
            children = [e async for e in catalog.list_directory(directory)]
            yield catalog, directory, children
            pending += [e.path for e in children if e.is_directory and not e.is_nested_mountpoint]


@pytest.mark.parametrize("fqrn", ["fix1.test.local", "fix2.test.local", "fix3.test.local"])
async def test_subdirectories_and_counts_agree_with_the_full_listing(
    tmp_path: Path, fixtures_dir: Path, fqrn: str
) -> None:
    """Every directory of the real catalogs: the directories-only listing and the counts of
    the other children give what the full listing gives (hidden entries left out)."""
    totals = {"files": 0, "symlinks": 0, "specials": 0}
    async for catalog, directory, children in fixture_directories(tmp_path, fixtures_dir, fqrn):
        subdirectories = [e async for e in catalog.list_directory(directory, directories_only=True)]
        assert subdirectories == [e for e in children if e.is_directory]
        others = [e for e in children if not e.is_directory]
        counts = await catalog.count_other_children(directory)
        assert counts.files == sum(e.is_regular for e in others)
        assert counts.file_bytes == sum(e.size for e in others if e.is_regular)
        assert counts.symlinks == sum(e.is_symlink for e in others)
        assert counts.specials == sum(e.is_special for e in others)
        totals["files"] += counts.files
        totals["symlinks"] += counts.symlinks
        totals["specials"] += counts.specials
    assert totals["files"] > 0 and totals["symlinks"] > 0


@pytest.mark.parametrize("fqrn", ["fix1.test.local", "fix2.test.local", "fix3.test.local"])
@pytest.mark.parametrize("count", [2, 3, 5])
async def test_a_content_share_listing_leaves_out_only_other_shares_plain_files(
    tmp_path: Path, fixtures_dir: Path, fqrn: str, count: int
) -> None:
    """SQLite's share of a content hash is Python's (``content_share_of``): every plain
    regular file is in exactly one share's listing, every other entry in all of them."""
    shared = 0
    async for catalog, directory, children in fixture_directories(tmp_path, fixtures_dir, fqrn):
        for index in range(count):
            listed = catalog.list_directory(directory, content_share=(index, count))
            expected = [
                e
                for e in children
                if not (e.is_regular and not e.is_chunked and not e.is_external)
                or e.content_hash is None
                or content_share_of(e.content_hash.raw, count) == index
            ]
            assert [e async for e in listed] == expected
        shared += sum(e.is_regular and e.content_hash is not None for e in children)
    assert shared > 0


def test_content_shares_are_the_first_two_bytes() -> None:
    assert content_share_of(bytes([0x01, 0x02]) + bytes(18), 7) == 0x0102 % 7
    assert content_share_of(bytes([0xFF, 0x00]) + bytes(18), 2) == 0
    assert content_share_of(bytes([0x00, 0xFF]) + bytes(18), 2) == 1


async def test_hidden_children_are_neither_listed_nor_counted(tmp_path: Path) -> None:
    path = build_catalog(
        tmp_path / "c.db",
        [
            ROOT,
            {"path": "/.cvmfs", "flags": 0x8003},
            {"path": "/dir", "flags": 1},
            {"path": "/hidden-file", "flags": 0x8004, "mode": 0o100644, "size": 7},
            {"path": "/file", "flags": 4, "mode": 0o100644, "size": 5},
        ],
        nested=[("/.cvmfs", "1" * 40, 10)],
    )
    async with await Catalog.open(path) as catalog:
        listed = catalog.list_directory("", directories_only=True)
        assert [e.name async for e in listed] == ["dir"]
        counts = await catalog.count_other_children("")
        assert (counts.files, counts.file_bytes, counts.symlinks) == (1, 5, 0)


async def test_values_of_another_sqlite_type_are_catalog_errors(tmp_path: Path) -> None:
    """SQLite keeps the type a value was written with, whatever the declared column type:
    a nested catalog's size, a statistics counter or a numeric property that is no number
    is a CatalogError, not a ValueError or OverflowError from ``int``."""
    path = build_catalog(
        tmp_path / "c.db",
        [ROOT, {"path": "/nested", "flags": 3}],
        nested=[("/nested", "2" * 40, "big")],  # type: ignore[list-item]
    )
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO statistics VALUES ('self_regular', 'many')")
    async with await Catalog.open(path) as catalog:
        with pytest.raises(CatalogError, match="size that is not an integer"):
            await catalog.nested_catalogs()
        with pytest.raises(CatalogError, match="self_regular"):
            await catalog.statistics()
    infinite = build_catalog(tmp_path / "inf.db", [ROOT], properties={"revision": "1e999"})
    with pytest.raises(CatalogError, match="property revision is not a number"):
        await Catalog.open(infinite)
