"""Decompress-verify stage: inflate verified objects (bounded) and write them to temp files.

The fetcher has already checked the hash of the stored bytes; here the inflated size is
checked against the catalog and inflation is bounded by it (no decompression bombs).
Small objects arrive whole and are handled in batches (one executor call per batch); large
objects and chunks are streamed through :class:`InflatingFileSink`, which inflates each
piece off the event loop and writes it at its offset of the temp file. Local write failures
are :class:`~shrinkwrap_async.exitcodes.StorageError` (exit 5) and end the run.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass

from shrinkwrap_async.store.data_store import DataStore, ObjectMeta
from shrinkwrap_async.store.errors import storage_error


class ContentError(Exception):
    """An object's content is not what the catalog says (bad stream, wrong size)."""


class BoundedInflater:
    """zlib or identity, refusing more output than ``expected`` bytes."""

    def __init__(self, expected: int, compressed: bool) -> None:
        self.expected = expected
        self.compressed = compressed
        self.produced = 0
        self._z = zlib.decompressobj() if compressed else None

    def feed(self, piece: bytes) -> bytes:
        if self._z is None:
            out = piece
        else:
            try:
                out = self._z.decompress(piece, self.expected - self.produced + 1)
            except zlib.error as error:
                raise ContentError(f"not a zlib stream: {error}") from error
            if self._z.unconsumed_tail:
                raise ContentError(f"inflates to more than the {self.expected} bytes expected")
        self.produced += len(out)
        if self.produced > self.expected:
            raise ContentError(f"inflates to more than the {self.expected} bytes expected")
        return out

    def finish(self) -> None:
        if self._z is not None:
            tail = self._z.flush()
            self.produced += len(tail)
            if not self._z.eof or self._z.unused_data or tail:
                raise ContentError("truncated or trailing data in zlib stream")
        if self.produced != self.expected:
            raise ContentError(f"inflated to {self.produced} bytes, catalog says {self.expected}")


def inflate_whole(data: bytes, expected: int, compressed: bool) -> bytes:
    inflater = BoundedInflater(expected, compressed)
    out = inflater.feed(data)
    inflater.finish()
    return out


@dataclass(slots=True)
class SmallObject:
    name: str
    data: bytes  # stored (possibly compressed) bytes, hash already verified
    size: int
    compressed: bool
    meta: ObjectMeta


def commit_small_batch(store: DataStore, batch: list[SmallObject]) -> list[Exception | None]:
    """Inflate, check and commit each object of ``batch`` (runs in an executor thread)."""
    results: list[Exception | None] = []
    for item in batch:
        try:
            content = inflate_whole(item.data, item.size, item.compressed)
            store.write_object(item.name, content, item.meta)
            results.append(None)
        except ContentError as error:
            results.append(error)
    return results


class InflatingFileSink:
    """An ``ObjectSink`` writing the inflated object at ``start`` of an open temp file.

    Several sinks may write into one file at once (the chunks of a file, each at its
    offset): every write stays inside ``[start, start + expected)``. A failed attempt
    needs no cleanup, because the attempt that succeeds rewrites the whole range; the
    fetcher retries with a fresh sink. ``commit`` returns the number of inflated bytes.
    A local write failure (disk full, ...) is a :class:`StorageError`, never retried.
    """

    def __init__(
        self,
        fd: int,
        start: int,
        expected: int,
        compressed: bool,
        executor: Executor,
        *,
        label: str = "a temporary object",
    ) -> None:
        self.fd = fd
        self.start = start
        self.position = start
        self.executor = executor
        self.label = label
        self.inflater = BoundedInflater(expected, compressed)
        self.error: ContentError | None = None

    def _write(self, piece: bytes) -> None:
        # Content errors are kept until commit: the bytes may yet fail their hash, and then
        # the fetcher retries elsewhere instead of blaming the object.
        if self.error is not None:
            return
        try:
            out = self.inflater.feed(piece)
        except ContentError as error:
            self.error = error
            return
        view = memoryview(out)
        try:
            while view:
                written = os.pwrite(self.fd, view, self.position)
                self.position += written
                view = view[written:]
        except OSError as error:
            raise storage_error(error, f"cannot write {self.label}") from error

    async def write(self, piece: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self._write, piece)

    async def commit(self) -> int:
        if self.error is not None:
            raise self.error
        self.inflater.finish()
        return self.inflater.produced

    async def discard(self) -> None:
        return None
