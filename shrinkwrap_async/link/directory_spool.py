"""Directory metadata to apply once the content is complete, spilled to a temporary SQLite file.

A directory's mtime must be set after its entries are made, and a read-only directory can only
be made read-only after it is filled. Keeping the pending metadata in memory would grow with
the repository; a temporary SQLite database keeps it bounded. Applied deepest first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from shrinkwrap_async.link.spool_file import SpoolFile
from shrinkwrap_async.link.tree_writer import RelPath

_SEPARATOR = "/"


class DirectorySpool:
    def __init__(self, directory: Path | None = None) -> None:
        self._spool = SpoolFile(
            directory,
            "shrinkwrap-async-dirs.",
            "CREATE TABLE dirs (path TEXT PRIMARY KEY, depth INTEGER, mode INTEGER,"
            " uid INTEGER, gid INTEGER, mtime INTEGER)",
            "directory metadata",
        )
        self._db = self._spool.db
        self.count = 0

    def add(self, path: RelPath, mode: int, uid: int, gid: int, mtime: int) -> None:
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO dirs VALUES (?, ?, ?, ?, ?, ?)",
                (_SEPARATOR.join(path), len(path), mode, uid, gid, mtime),
            )
        except sqlite3.Error as error:
            raise self._spool.error(error) from error
        self.count += 1

    def deepest_first(self, batch: int = 1024) -> Iterator[tuple[RelPath, int, int, int, int]]:
        try:
            cursor = self._db.execute(
                "SELECT path, depth, mode, uid, gid, mtime FROM dirs ORDER BY depth DESC, path"
            )
            while rows := cursor.fetchmany(batch):
                for path, depth, mode, uid, gid, mtime in rows:
                    parts = tuple(path.split(_SEPARATOR)) if depth else ()
                    yield parts, mode, uid, gid, mtime
        except sqlite3.Error as error:
            raise self._spool.error(error) from error

    def close(self) -> None:
        self._spool.close()
