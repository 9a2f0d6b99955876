"""Which rows of a catalog may differ from an older version, told from the files' pages.

A repository's new catalog is the old catalog file changed in place, so most of its pages
are byte for byte those of the old file. A page of the new ``catalog`` table's b-tree that
equals the page of the same number in the old file, where that page is also a leaf of
the old ``catalog`` table, holds rows that are in the old version unchanged, under the
same rowids. Only the rows of the other leaves need to be compared row by row. In the same
way a row removed from the catalog lies on a leaf of the old table that differs from the new
file's page or is not a leaf of the new table.

Two things could make equal pages hide a change, and both are checked:

* a page that is free in one file keeps the content it had when it was in use; a leaf
  must therefore be a leaf of both tables (the table's b-tree is walked in both files),
  not merely equal;
* a row too large for its page continues on overflow pages, which are not b-tree pages.
  A differing page that is neither on the new file's freelist nor a b-tree page makes
  the answer "cannot tell". An overflow page starts with the number of the next one, so
  its first byte is 0 in a file of fewer than 2**24 pages; a b-tree page starts with its
  type (2, 5, 10 or 13).

The file format is SQLite's (https://www.sqlite.org/fileformat.html): a 100-byte header,
then pages of ``page_size``; table b-tree pages of type 5 (interior) and 13 (leaf).
Anything unexpected (auto-vacuum, a file of 1 GiB or more, a page number out of range, a
loop, leaves out of order) also gives "cannot tell", and the caller compares every row.
"""

from __future__ import annotations

import mmap
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_HEADER = b"SQLite format 3\x00"
_TABLE_INTERIOR, _TABLE_LEAF = 5, 13
_BTREE_KINDS = frozenset({2, 5, 10, 13})
_U16, _U32 = struct.Struct(">H"), struct.Struct(">I")
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # where the platform has it
_MAX_DEPTH = 20  # b-trees of a few hundred million rows are far shallower


class _CannotTell(Exception):
    """The two files cannot be compared page by page."""


class _File:
    """One database file, mapped read-only."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        if len(data) < 100 or data[:16] != _HEADER:
            raise _CannotTell
        size = self._u16(16)
        self.page_size = 65536 if size == 1 else size
        self.pages = len(data) // self.page_size
        # auto-vacuum files have pointer-map pages; files of 1 GiB and more a lock page
        # (and overflow pages whose first byte is not 0, in files of 2**24 pages)
        if self._u32(52) or len(data) >= 1 << 30:
            raise _CannotTell

    def _offset(self, number: int) -> int:
        """Where page ``number`` starts in the file."""
        return (number - 1) * self.page_size

    def _start(self, number: int) -> int:
        """Where page ``number``'s b-tree header starts in the file."""
        if not 1 <= number <= self.pages:
            raise _CannotTell
        return 100 if number == 1 else self._offset(number)

    def _u16(self, at: int) -> int:
        return _U16.unpack_from(self.data, at)[0]

    def _u32(self, at: int) -> int:
        return _U32.unpack_from(self.data, at)[0]

    def kind(self, number: int) -> int:
        return self.data[self._start(number)]

    def same_page(self, other: _File, number: int) -> bool:
        start = self._offset(number)
        end = start + self.page_size
        return self.data[start:end] == other.data[start:end]

    def table_leaves(self, root: int) -> list[int]:
        """The leaves of the table b-tree at ``root``, in rowid order. A b-tree's leaves
        all lie at one depth, so one page per level tells whether it is the leaves' (each
        leaf compared is checked again, :meth:`leaf_rowids`)."""
        seen: set[int] = set()
        level = [root]
        for _ in range(_MAX_DEPTH):
            kind = self.kind(level[0])
            if kind == _TABLE_LEAF:
                return level
            if kind != _TABLE_INTERIOR:
                raise _CannotTell
            below: list[int] = []
            for number in level:
                if number in seen or self.kind(number) != _TABLE_INTERIOR:
                    raise _CannotTell
                seen.add(number)
                h, page = self._start(number), self._offset(number)
                pointers = struct.unpack_from(f">{self._u16(h + 3)}H", self.data, h + 12)
                below.extend(self._u32(page + at) for at in pointers)
                below.append(self._u32(h + 8))
            level = below
        raise _CannotTell

    def cells(self, number: int) -> int:
        return self._u16(self._start(number) + 3)

    def release(self, first: int, end: int) -> None:
        """Unmap pages ``first`` to ``end - 1`` from this process (they stay in the page
        cache), so that the pages touched stay few however large the file."""
        start, stop = self._offset(first), min(len(self.data), self._offset(end))
        start -= start % mmap.PAGESIZE
        if stop > start and _DONTNEED is not None:
            self.data.madvise(_DONTNEED, start, stop - start)

    def freelist(self) -> set[int]:
        pages: set[int] = set()
        trunk = self._u32(32)
        while trunk:
            if trunk in pages or not 1 < trunk <= self.pages:
                raise _CannotTell
            pages.add(trunk)
            start = self._offset(trunk)
            count = self._u32(start + 4)
            if 8 + 4 * count > self.page_size:
                raise _CannotTell
            pages.update(self._u32(start + 8 + 4 * i) for i in range(count))
            trunk = self._u32(start)
        return pages

    def leaf_rowids(self, number: int) -> tuple[int, int] | None:
        """The first and last rowid on table leaf ``number`` (None when it is empty)."""
        if self.kind(number) != _TABLE_LEAF:
            raise _CannotTell
        h, page = self._start(number), self._offset(number)
        cells = self._u16(h + 3)
        if not cells:
            return None
        first = page + self._u16(h + 8)
        last = page + self._u16(h + 6 + 2 * cells)
        return self._cell_rowid(first), self._cell_rowid(last)

    def _varint(self, at: int) -> tuple[int, int]:
        data = self.data
        value = 0
        for i in range(8):
            byte = data[at + i]
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                return value, at + i + 1
        return (value << 8) | data[at + 8], at + 9

    def _cell_rowid(self, at: int) -> int:
        _, at = self._varint(at)  # the payload's size
        rowid, _ = self._varint(at)
        return rowid - (1 << 64) if rowid >= 1 << 63 else rowid


def _table_root(db: sqlite3.Connection, schema: str, table: str) -> int | None:
    rows = db.execute(
        f"SELECT rootpage FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",
        (table,),
    ).fetchall()
    return int(rows[0][0]) if len(rows) == 1 and rows[0][0] else None


@contextmanager
def _mapped(path: Path) -> Iterator[_File]:
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield _File(data)


@dataclass(frozen=True)
class RowsToCompare:
    """Rowid ranges (first, last; ascending) of the table's rows in the new file that may
    differ from the old file's: every other row of the new file is in the old one,
    unchanged, under the same rowid. The same for the old file (``old_ranges``): every
    other row of the old file is in the new one (removed rows are among those in range).
    And how many rows each file's table has."""

    ranges: list[tuple[int, int]]
    new_rows: int
    old_rows: int
    old_ranges: list[tuple[int, int]]


def rows_to_compare(
    db: sqlite3.Connection, new_path: Path, old_path: Path, table: str = "catalog"
) -> RowsToCompare | None:
    """Which rows of ``table`` to compare; None when the files cannot be compared page by
    page. ``db`` has the new file as ``main`` and the old one as ``old``."""
    try:
        new_root, old_root = _table_root(db, "main", table), _table_root(db, "old", table)
        if new_root is None or old_root is None:
            return None
        with _mapped(new_path) as new, _mapped(old_path) as old:
            if new.page_size != old.page_size or new.data[20] != old.data[20]:
                return None
            return _compare(new, old, new.table_leaves(new_root), old.table_leaves(old_root))
    except (_CannotTell, OSError, ValueError, IndexError, struct.error, sqlite3.Error):
        return None


WINDOW_PAGES = 256  # pages compared between two releases of the mapped pages


def _compare(new: _File, old: _File, leaves: list[int], old_leaves: list[int]) -> RowsToCompare:
    """One pass over both files, a window of pages at a time: the rows of the leaves to
    compare in each file, and the rows of each file."""
    new_leaf, old_leaf = set(leaves), set(old_leaves)
    free = new.freelist()
    common = min(new.pages, old.pages)
    new_bounds: dict[int, tuple[int, int] | None] = {}  # leaf to compare -> first, last rowid
    old_bounds: dict[int, tuple[int, int] | None] = {}
    new_rows = old_rows = 0
    last = max(new.pages, old.pages)
    for first in range(1, last + 1, WINDOW_PAGES):
        end = first + WINDOW_PAGES
        for number in range(first, min(end, last + 1)):
            # page 1 is the schema table's root
            differs = number > common or (number > 1 and not new.same_page(old, number))
            if number <= new.pages:
                if differs and number not in free and new.kind(number) not in _BTREE_KINDS:
                    raise _CannotTell  # an overflow page (or another) changed: compare all
                if number in new_leaf:
                    new_rows += new.cells(number)
                    if differs or number not in old_leaf:
                        new_bounds[number] = new.leaf_rowids(number)
            if number in old_leaf:
                old_rows += old.cells(number)
                if differs or number not in new_leaf:
                    old_bounds[number] = old.leaf_rowids(number)
        new.release(first, end)
        old.release(first, end)
    return RowsToCompare(
        _ranges(leaves, new_bounds), new_rows, old_rows, _ranges(old_leaves, old_bounds)
    )


def _ranges(leaves: list[int], bounds: dict[int, tuple[int, int] | None]) -> list[tuple[int, int]]:
    """The rowid ranges of the leaves in ``bounds``, one for each run of them in ``leaves``."""
    ranges: list[tuple[int, int]] = []
    last = None  # the last rowid of the leaves compared so far
    extend = False  # whether the previous leaf is compared too: one range
    for number in leaves:
        if number not in bounds:
            extend = False
            continue
        rowids = bounds[number]
        if rowids is None:
            continue
        if last is not None and rowids[0] <= last:
            raise _CannotTell  # leaves out of order: not a b-tree as expected
        last = rowids[1]
        if extend:
            ranges[-1] = (ranges[-1][0], rowids[1])
        else:
            ranges.append(rowids)
            extend = True
    return ranges
