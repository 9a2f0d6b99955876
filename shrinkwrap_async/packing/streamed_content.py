"""File content handed from the event loop to the writer thread of a pack.

The loop fetches, verifies and inflates each piece of a file (a whole object, or one chunk)
ahead of the writer, inside a :class:`PrefetchWindow` of pieces and bytes; the writer reads
the file through a :class:`ContentReader`, which blocks the writer's thread (never the
loop) until the next piece has arrived and returns each piece's room in the window once
read. A piece is ``bytes``, or an anonymous temporary file for a large one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from shrinkwrap_async.exitcodes import PartialExportError
from shrinkwrap_async.hashing import Digest


@dataclass(frozen=True, slots=True)
class Piece:
    """One object of a regular file: the whole file, or one chunk (``P`` suffix)."""

    digest: Digest
    suffix: str
    size: int  # inflated
    external: tuple[str, int | None] | None = None  # an external file: (path, range offset)

    @property
    def byte_range(self) -> tuple[int, int] | None:
        """The bytes of its external file this piece is (None: the whole file)."""
        if self.external is None or self.external[1] is None:
            return None
        return self.external[1], self.size


# -- the fetch-ahead window ----------------------------------------------------------------


class PrefetchWindow:
    """A budget of pieces and bytes fetched but not yet consumed (event-loop side only)."""

    def __init__(self, max_objects: int, max_bytes: int) -> None:
        self.max_objects = max(1, max_objects)
        self.max_bytes = max(1, max_bytes)
        self.objects = 0
        self.bytes = 0
        self.peak_bytes = 0
        self._released = asyncio.Event()

    def _fits(self, size: int) -> bool:
        if self.objects == 0:
            return True  # a piece larger than the whole window goes alone
        return self.objects < self.max_objects and self.bytes + size <= self.max_bytes

    async def acquire(self, size: int) -> None:
        while not self._fits(size):
            self._released.clear()
            await self._released.wait()
        self.objects += 1
        self.bytes += size
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def release(self, size: int) -> None:
        self.objects -= 1
        self.bytes -= size
        self._released.set()


# -- content handed from the event loop to the writer thread -------------------------------

PieceData = bytes | IO[bytes]


class StreamedContent:
    """The pieces of one file, each a future resolved on the loop and read by the writer."""

    def __init__(
        self,
        path: str,
        size: int,
        pieces: Sequence[Piece],
        loop: asyncio.AbstractEventLoop,
        window: PrefetchWindow,
    ) -> None:
        self.path = path
        self.size = size
        self.pieces = list(pieces)
        self.futures: list[concurrent.futures.Future[PieceData] | None] = [
            concurrent.futures.Future() for _ in self.pieces
        ]
        self._loop = loop
        self._window = window

    def open(self) -> ContentReader:
        return ContentReader(self)

    def consumed(self, index: int) -> None:
        """Piece ``index`` was read (writer thread): return its room in the window."""
        self.futures[index] = None  # drop the data
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to release
            self._loop.call_soon_threadsafe(self._window.release, self.pieces[index].size)


class ContentReader:
    """A read-only binary stream over the pieces of one file, blocking until each arrives."""

    def __init__(self, content: StreamedContent) -> None:
        self._content = content
        self._index = 0
        self._data: bytes | None = None
        self._file: IO[bytes] | None = None
        self._offset = 0
        self._closed = False

    def __enter__(self) -> ContentReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, size: int = -1) -> bytes:
        content = self._content
        while True:
            if self._data is None and self._file is None:
                if self._index == len(content.pieces):
                    return b""
                future = content.futures[self._index]
                assert future is not None
                result = future.result()  # blocks the writer thread, never the loop
                if isinstance(result, bytes):
                    self._data = result
                else:
                    self._file = result
                self._offset = 0
            piece_size = content.pieces[self._index].size
            left = piece_size - self._offset
            if left > 0:
                wanted = left if size < 0 else min(size, left)
                out = self._take(wanted)
                self._offset += len(out)
                return out
            self._next_piece()

    def _take(self, wanted: int) -> bytes:
        if self._data is not None:
            if self._offset == 0 and wanted == len(self._data):
                return self._data
            return self._data[self._offset : self._offset + wanted]
        assert self._file is not None
        out = os.pread(self._file.fileno(), wanted, self._offset)
        if not out:
            raise PartialExportError(f"{self._content.path}: spooled piece shorter than expected")
        return out

    def _next_piece(self) -> None:
        self._data = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._content.consumed(self._index)
        self._index += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
        self._data = None
        # Pieces never read (an aborted archive): close their temporary files.
        for future in self._content.futures[self._index :]:
            if future is not None and future.done() and not future.exception():
                result = future.result()
                if not isinstance(result, bytes):
                    result.close()
