"""Decompress-verify stage: verify, inflate (bounded) and store objects.

Small objects arrive whole, their hash not yet checked, and are handled in batches: one
executor call hashes, inflates and commits a whole batch, so the event loop neither hashes
nor pays a thread hand-off per object. A body that fails its hash is reported back
(:class:`HashMismatch`) for the fetcher's no-cache refetch and failover. The inflated size
is checked against the catalog and inflation is bounded by it (no decompression bombs). Large
objects and chunks are streamed through :class:`InflatingFileSink`, which inflates each
piece off the event loop and writes it at its offset of the temp file. Local write failures
are :class:`~shrinkwrap_async.exitcodes.StorageError` (exit 5) and end the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from shrinkwrap_async import inflate
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.runtime import die_with_parent
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.errors import storage_error
from shrinkwrap_async.store.object_names import ObjectMeta

log = logging.getLogger(__name__)

WORKER_ENV = "SHRINKWRAP_ASYNC_OBJECT_WORKER"  # "0": commit small objects in a thread


class ContentError(Exception):
    """An object's content is not what the catalog says (bad stream, wrong size)."""


class HashMismatch(Exception):
    """The stored bytes do not match the object's hash (to be fetched again, verified)."""


class BoundedInflater:
    """zlib or identity, refusing more output than ``expected`` bytes.

    ``new_decompressor``: the zlib implementation (default: :mod:`shrinkwrap_async.inflate`'s
    choice); tests give each backend in turn.
    """

    def __init__(
        self,
        expected: int,
        compressed: bool,
        new_decompressor: Callable[[], inflate.Decompressor] | None = None,
    ) -> None:
        self.expected = expected
        self.compressed = compressed
        self.produced = 0
        self._z = (new_decompressor or inflate.decompressobj)() if compressed else None

    def feed(self, piece: bytes) -> bytes:
        if self._z is None:
            out = piece
        else:
            try:
                out = self._z.decompress(piece, self.expected - self.produced + 1)
            except inflate.INFLATE_ERRORS as error:
                raise ContentError(f"not a zlib stream: {error}") from error
            if self._z.unconsumed_tail:
                raise ContentError(f"inflates to more than the {self.expected} bytes expected")
        self.produced += len(out)
        if self.produced > self.expected:
            raise ContentError(f"inflates to more than the {self.expected} bytes expected")
        return out

    def finish(self) -> None:
        if self._z is not None:
            try:
                tail = self._z.flush()
            except inflate.INFLATE_ERRORS as error:
                raise ContentError(f"not a zlib stream: {error}") from error
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
    data: bytes  # stored (possibly compressed) bytes
    size: int
    compressed: bool
    meta: ObjectMeta
    digest: Digest | None = None  # to check ``data`` against; None: already verified
    fetched: object = None  # what the fetcher needs to fetch it again after a mismatch


def commit_small_batch(store: DataStore, batch: list[SmallObject]) -> list[Exception | None]:
    """Verify, inflate, check and commit each object of ``batch`` (in an executor thread).

    Per object: None (committed), :class:`HashMismatch` or :class:`ContentError`. Local
    storage failures raise.
    """
    results: list[Exception | None] = []
    for item in batch:
        digest = item.digest
        if digest is not None and not digest.matches(item.data):
            results.append(HashMismatch("content hash mismatch"))
            continue
        try:
            content = inflate_whole(item.data, item.size, item.compressed)
            store.write_object(item.name, content, item.meta)
            results.append(None)
        except ContentError as error:
            results.append(error)
    return results


# -- the object worker process ----------------------------------------------------------------

_worker_store: DataStore | None = None


def _start_worker(parent: int, spec: tuple[Any, ...]) -> None:
    """Initialiser of the worker process: its own view of the store.

    Signals are the parent's business: it stops the worker when it ends. A parent killed
    outright takes the worker with it (``PR_SET_PDEATHSIG``): an orphan would keep the
    parent's output pipes open and its temp directory busy.
    """
    global _worker_store
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    _worker_store = DataStore.from_worker_spec(spec)


def _die_with_parent(parent: int) -> None:
    if not die_with_parent(parent, signal.SIGKILL):  # not Linux: it ends when its pipe breaks
        os._exit(0)


def _commit_in_worker(items: list[tuple[Any, ...]]) -> list[Exception | None]:
    assert _worker_store is not None
    return commit_small_batch(_worker_store, [SmallObject(*item) for item in items])


def _ready() -> int:
    return os.getpid()


class SmallObjectCommitter:
    """Runs :func:`commit_small_batch` in a worker process of its own, else in a thread.

    Hashing, inflating and writing small objects is CPU and system-call work. In a thread
    it shares the GIL with the event loop, and every hand-back of the GIL costs the loop a
    wait (measured: the loop's request rate halves). A single worker process takes that
    work to the other core; the batches travel through a pipe (a copy of the compressed
    bytes, small next to the work). When the process cannot be started or dies, the
    batches go to ``thread_pool`` instead, and a batch in flight is simply committed again
    (a committed object is never replaced, so this is safe).

    The process is only started once ``SPAWN_AFTER`` objects have come through: starting
    and importing it costs about 0.15 s of CPU, more than a small refresh's whole commit
    work. Until it has started, batches keep going to the thread.
    """

    SPAWN_AFTER = 256

    def __init__(self, store: DataStore, thread_pool: Executor, *, use_process: bool = True):
        self.store = store
        self.thread_pool = thread_pool
        self.use_process = use_process and os.environ.get(WORKER_ENV, "1") != "0"
        self._process: ProcessPoolExecutor | None = None
        self._process_ready: Future[int] | None = None
        self._objects_seen = 0

    def start(self) -> None:
        """Start the worker process now (it imports while the batches go to the thread)."""
        if not self.use_process or self._process is not None:
            return
        try:
            self._process = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(), self.store.worker_spec()),
            )
            self._process_ready = self._process.submit(_ready)
        except (OSError, ImportError, NotImplementedError, RuntimeError) as error:
            log.debug("no object worker process (%s); committing in a thread", error)
            self._stop_process()

    @property
    def in_process(self) -> bool:
        return self._process is not None

    async def wait_started(self) -> bool:
        """Wait until the worker process (if one was started) can take batches."""
        if self._process_ready is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._process_ready)
        return self.in_process

    def _process_usable(self) -> bool:
        if self._process is None:
            if self._objects_seen >= self.SPAWN_AFTER:
                self.start()
            return False
        return self._process_ready is None or self._process_ready.done()

    async def commit(self, batch: list[SmallObject]) -> list[Exception | None]:
        loop = asyncio.get_running_loop()
        self._objects_seen += len(batch)
        if self._process_usable():
            items = [(i.name, i.data, i.size, i.compressed, i.meta, i.digest) for i in batch]
            try:
                return await loop.run_in_executor(self._process, _commit_in_worker, items)
            except BrokenProcessPool as error:
                log.warning("object worker process ended (%s); committing in a thread", error)
                self._stop_process()
        return await loop.run_in_executor(self.thread_pool, commit_small_batch, self.store, batch)

    def _stop_process(self, *, wait: bool = False) -> None:
        process, self._process, self.use_process = self._process, None, False
        if process is not None:
            process.shutdown(wait=wait, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker process (after its last batch)."""
        process, self._process = self._process, None
        if process is not None:
            process.shutdown(wait=True)


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
