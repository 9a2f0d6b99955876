"""What a run changed in the tree, one line per path (``export --changes FILE``).

A nightly refresh can then say what it brought (new releases, removed ones) without a
second walk of the tree. Lines are ``A <path>`` (added), ``M <path>`` (replaced: new content,
metadata or type) and ``D <path>`` (removed; a removed directory is one line, ending in
``/``, for its whole subtree). A directory whose own metadata changed is not listed. Paths
are the repository's, with ``\\``, newline, tab and other control bytes escaped C-style
(``\\\\``, ``\\n``, ``\\t``, ``\\x01``), so that every line is one path whatever its name.

The lines come in the order the run made the changes, which with shards or concurrent
directories is not sorted (``sort -k2`` sorts them). Every process of a run (the shards
and the final pass) appends whole lines to the same file with ``O_APPEND``, so their lines
never interleave within a line; the command empties the file when the run starts.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from shrinkwrap_async.exitcodes import StorageError

ADDED = "A"
REPLACED = "M"
REMOVED = "D"

_FLUSH_BYTES = 64 << 10
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_NEEDS_QUOTING = re.compile(r"[\\\x00-\x1f\x7f]")


def quote_path(path: str) -> str:
    """``path`` with backslash and control characters escaped (a plain path is unchanged)."""
    if not _NEEDS_QUOTING.search(path):
        return path
    return _NEEDS_QUOTING.sub(lambda m: _ESCAPES.get(m[0]) or f"\\x{ord(m[0]):02x}", path)


def start_change_log(path: Path) -> None:
    """Create or empty the change list for a new run (before any process writes to it)."""
    with open(path, "wb"):
        pass


class ChangeLog:
    """Appends change lines to ``path``; buffered, flushed in whole lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._lines: list[str] = []
        self._size = 0
        self._lock = threading.Lock()  # the tree's calls may run on a thread or the loop

    def record(self, kind: str, rel: tuple[str, ...], *, directory: bool = False) -> None:
        line = f"{kind} {quote_path('/' + '/'.join(rel))}{'/' if directory else ''}\n"
        with self._lock:
            self._lines.append(line)
            self._size += len(line)
            if self._size >= _FLUSH_BYTES:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._lines:
            return
        data = "".join(self._lines).encode("utf-8", "surrogateescape")
        self._lines.clear()
        self._size = 0
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as error:  # a full disk: the run stops, as for the tree's own writes
            raise StorageError(
                f"cannot write the --changes list {self.path}: {error.strerror}"
            ) from error

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1
