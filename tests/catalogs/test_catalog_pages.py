"""Rows to compare, told from the pages of two versions of a catalog file: the diff that
compares only the rows of differing pages finds exactly what the diff of every row finds,
for versions changed in place by SQLite (as the real server tools change them) and
rewritten whole (as the test publisher writes them)."""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from shrinkwrap_async.catalogs import pages
from shrinkwrap_async.catalogs.pages import RowsToCompare, rows_to_compare
from shrinkwrap_async.catalogs.schema import Flag
from shrinkwrap_async.pipeline import refresh
from shrinkwrap_async.testing import catalog_writer as cw

STATS = dict.fromkeys(cw.STATISTICS_KINDS, 0)
COLUMNS = (
    "md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, flags, name,"
    " symlink, uid, gid, xattr"
)
PROPERTIES = cw.catalog_properties(
    root_prefix=None, revision=1, previous_revision=None, last_modified=1, ttl=None
)


def file_row(directory: int, index: int, *, symlink_size: int = 0) -> cw.CatalogRow:
    name = f"file{index:05d}"
    common = {"mtime": 1_700_000_000 + index, "uid": 0, "gid": 0, "size": 100 + index}
    if symlink_size:
        target = (f"/target/{index}/" * symlink_size)[:symlink_size]
        return cw.CatalogRow(
            f"/d{directory}/{name}", name, 0o120777, flags=int(Flag.LINK), symlink=target, **common
        )
    digest = index.to_bytes(20, "big")
    return cw.CatalogRow(
        f"/d{directory}/{name}", name, 0o100644, flags=int(Flag.FILE), content_hash=digest, **common
    )


def write_version(path: Path, files: int = 3000, long_symlinks: int = 0) -> Path:
    """A catalog of ``files`` files spread over 30 directories (3,000 files: about 75 leaves)."""
    rows = [cw.CatalogRow("", "", 0o40755, 4096, 1, 0, 0, int(Flag.DIR))]
    rows += [
        cw.CatalogRow(f"/d{d}", f"d{d}", 0o40755, 4096, 1, 0, 0, int(Flag.DIR)) for d in range(30)
    ]
    rows += [
        file_row(i % 30, i, symlink_size=6000 if i < long_symlinks else 0) for i in range(files)
    ]
    cw.write_catalog(path, rows, [], PROPERTIES, STATS, STATS)
    return path


def changed_in_place(old: Path, new: Path, change: Callable[[sqlite3.Connection], object]) -> Path:
    """A copy of ``old`` changed by SQL, pages freed without being cleared (as a SQLite
    built without secure delete leaves them)."""
    shutil.copyfile(old, new)
    db = sqlite3.connect(new, isolation_level=None)
    try:
        db.execute("PRAGMA secure_delete = OFF")
        db.execute("BEGIN")
        change(db)
        db.execute("COMMIT")
    finally:
        db.close()
    return new


def differences(new: Path, old: Path, *, by_pages: bool) -> set[tuple[object, ...]]:
    db = refresh._connect(new, old, "")
    try:
        if by_pages:
            refresh._find_changes(db, new, old)
        else:
            refresh._find_changes(db)
        return set(db.execute("SELECT m1, m2, p1, p2, kind FROM temp.changes"))
    finally:
        db.close()


def compare(new: Path, old: Path) -> tuple[set[tuple[object, ...]], RowsToCompare | None]:
    """The differences found both ways (asserted equal) and the rows compared by pages
    (their counts of rows asserted right)."""
    everything = differences(new, old, by_pages=False)
    assert differences(new, old, by_pages=True) == everything
    db = refresh._connect(new, old, "")
    try:
        rows = rows_to_compare(db, new, old)
        if rows is not None:
            counts = [
                db.execute(f"SELECT count(*) FROM {s}.catalog").fetchone()[0]
                for s in ("main", "old")
            ]
            assert [rows.new_rows, rows.old_rows] == counts
        return everything, rows
    finally:
        db.close()


def compared_rows(rows: RowsToCompare) -> int:
    return sum(last - first + 1 for first, last in rows.ranges)


def test_an_unchanged_copy_has_no_rows_to_compare(tmp_path: Path) -> None:
    old = write_version(tmp_path / "old")
    new = shutil.copyfile(old, tmp_path / "new")
    found, rows = compare(new, old)
    assert found == set()
    assert rows is not None and rows.ranges == [] and rows.new_rows == rows.old_rows == 3031


def test_a_few_changed_rows_compare_only_their_pages(tmp_path: Path) -> None:
    old = write_version(tmp_path / "old")
    new = changed_in_place(
        old,
        tmp_path / "new",
        lambda db: db.execute("UPDATE catalog SET mtime = mtime + 1 WHERE name = 'file01234'"),
    )
    found, rows = compare(new, old)
    assert len(found) == 1
    assert rows is not None and 0 < compared_rows(rows) < 200  # one leaf of 3,031 rows


def random_change(db: sqlite3.Connection, rng: random.Random, step: int) -> None:
    """One of the changes a publish makes in place, on random rows."""
    (top,) = db.execute("SELECT max(rowid) FROM catalog").fetchone()
    some = [rng.randrange(1, top + 1) for _ in range(rng.randrange(1, 40))]
    marks = ",".join("?" * len(some))
    kind = rng.choice(["touch", "grow", "shrink", "delete", "insert", "long link"])
    if kind == "touch":  # new content: same row size
        db.execute(
            f"UPDATE catalog SET mtime = mtime + 1, hash = randomblob(20) WHERE rowid IN ({marks})",
            some,
        )
    elif kind == "grow":  # cells that no longer fit where they were
        db.execute(f"UPDATE catalog SET name = name || '-renamed' WHERE rowid IN ({marks})", some)
    elif kind == "shrink":
        db.execute(f"UPDATE catalog SET name = substr(name, 1, 3) WHERE rowid IN ({marks})", some)
    elif kind == "delete":
        db.execute(f"DELETE FROM catalog WHERE rowid IN ({marks})", some)
    elif kind == "insert":
        for i in range(len(some)):
            row = file_row(rng.randrange(30), 100_000 + step * 100 + i)
            values = cw._catalog_values(row)
            marks = ", ".join("?" * len(values))
            db.execute(f"INSERT INTO catalog ({COLUMNS}) VALUES ({marks})", values)
    else:  # a row that spills onto overflow pages
        db.execute("UPDATE catalog SET symlink = hex(randomblob(3000)) WHERE rowid = ?", some[:1])


@pytest.mark.parametrize("seed", range(12))
def test_random_changes_in_place_give_the_differences_of_every_row(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if seed % 2:  # the files compared a few pages at a time (released in between)
        monkeypatch.setattr(pages, "WINDOW_PAGES", 7)
    rng = random.Random(seed)
    versions = [write_version(tmp_path / "v0", long_symlinks=3 if seed % 3 == 0 else 0)]
    by_pages = 0
    for step in range(1, 6):
        changes = rng.randrange(1, 4)
        versions.append(
            changed_in_place(
                versions[-1],
                tmp_path / f"v{step}",
                lambda db, step=step, changes=changes: [
                    random_change(db, rng, step * 10 + i) for i in range(changes)
                ],
            )
        )
        # against the version before and an older one (several publishes in between)
        for old in {versions[-2], versions[0]}:
            found, rows = compare(versions[-1], old)
            assert found
            by_pages += rows is not None
    assert by_pages  # not every comparison fell back to every row


def test_a_changed_overflow_page_means_every_row_is_compared(tmp_path: Path) -> None:
    """Only the end of a long symlink changes: the row's leaf page is the same, the change
    is on its overflow page."""
    old = write_version(tmp_path / "old", long_symlinks=5)
    new = changed_in_place(
        old,
        tmp_path / "new",
        lambda db: db.execute(
            "UPDATE catalog SET symlink = substr(symlink, 1, 5990) || 'elsewhere!'"
            " WHERE name = 'file00002'"
        ),
    )
    found, rows = compare(new, old)
    assert len(found) == 1
    assert rows is None


def free_leaf_pages(path: Path) -> set[int]:
    """Pages on the file's freelist that are not trunk pages (their content is unused)."""
    data = path.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    trunks, trunk = set(), int.from_bytes(data[32:36], "big")
    while trunk:
        trunks.add(trunk)
        trunk = int.from_bytes(data[(trunk - 1) * size : (trunk - 1) * size + 4], "big")
    with pages._mapped(path) as mapped:
        return mapped.freelist() - trunks


def copy_pages(source: Path, target: Path, numbers: list[int]) -> None:
    """Pages of ``source`` written over the same pages of ``target``."""
    data, copied = bytearray(target.read_bytes()), source.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    for number in numbers:
        at = (number - 1) * size
        data[at : at + size] = copied[at : at + size]
    target.write_bytes(data)
    db = sqlite3.connect(target)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def table_leaves(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'catalog'").fetchone()
    db.close()
    with pages._mapped(path) as mapped:
        return mapped.table_leaves(root)


@pytest.mark.parametrize("free_in", ["old", "new"])
def test_a_free_page_left_as_it_was_is_not_taken_for_the_same_page(
    tmp_path: Path, free_in: str
) -> None:
    """One version lacks the last rows of the other, and their pages are free in it; a
    free page keeps what it held (SQLite built without secure delete does not clear it),
    here the very leaf the other version has at that number. Its rows were added (free in
    the old version) or removed (free in the new one), which equal pages alone would hide."""
    full = write_version(tmp_path / "full")
    (top,) = sqlite3.connect(full).execute("SELECT max(rowid) FROM catalog").fetchone()
    shorter = changed_in_place(
        full,
        tmp_path / "shorter",
        lambda db: db.execute("DELETE FROM catalog WHERE rowid > ?", (top - 300,)),
    )
    stale = [n for n in table_leaves(full) if n in free_leaf_pages(shorter)]
    assert stale  # the case is real: leaves of one version, free leaf pages of the other
    copy_pages(full, shorter, stale)
    new, old = (full, shorter) if free_in == "old" else (shorter, full)
    found, rows = compare(new, old)
    assert len(found) == 300
    assert {kind for *_, kind in found} == {
        refresh._ADDED if free_in == "old" else refresh._REMOVED
    }
    assert rows is not None
    ranges = rows.ranges if free_in == "old" else rows.old_ranges
    assert sum(last - first + 1 for first, last in ranges) >= 300


def test_a_rewritten_file_gives_the_differences_of_every_row(tmp_path: Path) -> None:
    """The test publisher writes each version whole; equal rows written in the same order
    make equal pages there too."""
    old = write_version(tmp_path / "old")
    new = changed_in_place(
        old,
        tmp_path / "changed",
        lambda db: db.execute("UPDATE catalog SET mtime = 7 WHERE rowid % 97 = 0"),
    )
    db = sqlite3.connect(new)
    db.execute("VACUUM INTO ?", (str(tmp_path / "rewritten"),))
    db.close()
    found, rows = compare(tmp_path / "rewritten", old)
    assert len(found) == 3031 // 97
    assert rows is not None


@pytest.mark.parametrize("kind", ["page size", "auto-vacuum"])
def test_files_that_cannot_be_compared_page_by_page(tmp_path: Path, kind: str) -> None:
    first = write_version(tmp_path / "first")
    other = tmp_path / "other"
    db = sqlite3.connect(first)
    db.execute("PRAGMA page_size = 8192" if kind == "page size" else "PRAGMA auto_vacuum = FULL")
    db.execute("VACUUM INTO ?", (str(other),))
    db.close()
    change = lambda db: db.execute("UPDATE catalog SET mtime = 7 WHERE name = 'file00005'")  # noqa: E731
    # another page size than the old version's; both versions with pointer-map pages
    new = changed_in_place(first if kind == "page size" else other, tmp_path / "new", change)
    found, rows = compare(new, other)
    assert len(found) == 1
    assert rows is None
