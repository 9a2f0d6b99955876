"""The mtime of an object that several paths share, as cvmfs_shrinkwrap gives it.

Paths with equal content and metadata but different mtimes are hard links to one object,
so they show one mtime. cvmfs_shrinkwrap gives the object the mtime of the path that
created it, the first in its walk: a stack of directories where a directory's files come
first (in byte order) and then its subdirectories, each completely, in reverse byte order.
This export links in whatever order the fetches complete, so it records every link of the
run here (a temporary SQLite file: it grows with the tree) and, once all are made, gives
each object created by the run the mtime of its first path in that walk order. Objects that
existed before the run (a refresh) keep their mtime, as they do with cvmfs_shrinkwrap.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from shrinkwrap_async.link.spool_file import SpoolFile
from shrinkwrap_async.link.tree_writer import RelPath

_FILE, _DIRECTORY, _END_OF_NAME = b"\x00", b"\x01", b"\xff"
_INVERT = bytes(range(255, -1, -1))  # byte b -> 255 - b

# A row: object name, walk-order key of the path, the path's mtime, created by this run.
LinkRow = tuple[str, bytes, int, bool]


def walk_order_key(rel: RelPath) -> bytes:
    """A key whose byte order is cvmfs_shrinkwrap's walk order of regular-file paths.

    At the first component two paths differ in: a file of the directory comes before
    anything in a subdirectory; two files are in byte order; two subdirectories are in
    reverse byte order (their bytes inverted; a name never holds a NUL byte, so the
    ``0xff`` that ends it sorts after every inverted byte, and a shorter name after a
    longer one it begins).
    """
    key = bytearray()
    for name in rel[:-1]:
        key += _DIRECTORY
        key += name.encode("utf-8", "surrogateescape").translate(_INVERT)
        key += _END_OF_NAME
    key += _FILE
    key += rel[-1].encode("utf-8", "surrogateescape")
    return bytes(key)


class SharedMtimes:
    def __init__(self, directory: Path | None = None) -> None:
        self._spool = SpoolFile(
            directory,
            "shrinkwrap-async-links.",
            "CREATE TABLE links (name TEXT, walk_key BLOB, mtime INTEGER, created INTEGER)",
            "linked files",
        )
        self._db = self._spool.db

    def add(self, rows: Iterable[LinkRow]) -> None:
        try:
            self._db.executemany("INSERT INTO links VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            raise self._spool.error(error) from error

    def first_in_walk(self) -> Iterable[tuple[str, int]]:
        """(object name, mtime of its first path in walk order) for each object created by
        this run whose paths do not all have one mtime."""
        try:
            self._db.execute(
                "CREATE TEMP TABLE mixed AS SELECT name FROM links GROUP BY name"
                " HAVING MAX(created) = 1 AND MIN(mtime) <> MAX(mtime)"
            )
            cursor = self._db.execute(
                "SELECT links.name, links.mtime FROM links JOIN mixed USING (name)"
                " ORDER BY links.name, links.walk_key"
            )
            previous = None
            while rows := cursor.fetchmany(1024):
                for name, mtime in rows:
                    if name != previous:
                        previous = name
                        yield name, mtime
        except sqlite3.Error as error:
            raise self._spool.error(error) from error

    def newest_uniform(self) -> int:
        """The newest mtime of the objects whose paths all have one mtime (0: none)."""
        try:
            row = self._db.execute(
                "SELECT max(m) FROM (SELECT max(mtime) AS m FROM links GROUP BY name"
                " HAVING MIN(mtime) = MAX(mtime))"
            ).fetchone()
        except sqlite3.Error as error:
            raise self._spool.error(error) from error
        return int(row[0] or 0)

    def close(self) -> None:
        self._spool.close()
