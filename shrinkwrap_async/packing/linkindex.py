"""Remembering the first archive path of each hard-linked inode, in bounded memory.

In an export every regular file is also linked from ``.data``, so almost every file has a
link count above one and has to be remembered until the end of the walk. The index keeps
the first ``memory_limit`` keys in a dict and spills the rest into a temporary SQLite file.
"""

from __future__ import annotations

import pickle
import sqlite3
import tempfile
from collections.abc import Hashable


class HardLinkIndex:
    def __init__(self, memory_limit: int = 200_000) -> None:
        self._memory: dict[Hashable, str] = {}
        self._memory_limit = memory_limit
        self._spill: sqlite3.Connection | None = None
        self._spill_dir: tempfile.TemporaryDirectory[str] | None = None

    def first_path(self, key: Hashable, path: str) -> str | None:
        """The path recorded for ``key`` earlier, or None after recording ``path`` for it."""
        found = self._memory.get(key)
        if found is not None:
            return found
        if self._spill is not None:
            blob = pickle.dumps(key, protocol=4)
            row = self._spill.execute("SELECT path FROM links WHERE key = ?", (blob,)).fetchone()
            if row is not None:
                return str(row[0])
            if len(self._memory) >= self._memory_limit:
                self._spill.execute("INSERT INTO links VALUES (?, ?)", (blob, path))
                return None
        elif len(self._memory) >= self._memory_limit:
            self._open_spill()
            assert self._spill is not None
            self._spill.execute(
                "INSERT INTO links VALUES (?, ?)", (pickle.dumps(key, protocol=4), path)
            )
            return None
        self._memory[key] = path
        return None

    def _open_spill(self) -> None:
        self._spill_dir = tempfile.TemporaryDirectory(prefix="shrinkwrap-async-links-")
        self._spill = sqlite3.connect(f"{self._spill_dir.name}/links.sqlite")
        self._spill.execute("PRAGMA journal_mode = OFF")
        self._spill.execute("PRAGMA synchronous = OFF")
        self._spill.execute("CREATE TABLE links (key BLOB PRIMARY KEY, path TEXT) WITHOUT ROWID")

    def close(self) -> None:
        self._memory.clear()
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None
