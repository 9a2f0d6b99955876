"""A temporary SQLite file that keeps what a run must remember until its end.

Held in memory, such lists would grow with the repository; on disk (beside ``.data``,
without journal or sync: it dies with the run) they cost a few MB of page cache.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.store.errors import storage_error


class SpoolFile:
    """``db`` is the connection; ``what`` names the contents in error messages."""

    def __init__(self, directory: Path | None, prefix: str, schema: str, what: str) -> None:
        self.what = what
        try:
            self._file = tempfile.NamedTemporaryFile(  # noqa: SIM115 (lives as long as this)
                prefix=prefix, suffix=".sqlite", dir=directory, delete=True
            )
            self.db = sqlite3.connect(self._file.name, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=OFF")
            self.db.execute("PRAGMA synchronous=OFF")
            self.db.execute(schema)
        except (OSError, sqlite3.Error) as error:
            raise self.error(error) from error

    def error(self, error: OSError | sqlite3.Error) -> StorageError:
        """The disk holding the spool is full or unusable: a local storage failure."""
        if isinstance(error, OSError):
            return storage_error(error, f"cannot create the spool of {self.what}")
        return StorageError(f"cannot spool {self.what} below the object store: {error}")

    def close(self) -> None:
        self.db.close()
        self._file.close()
