"""Object-fetch stage: one object per distinct (content, metadata), each content fetched once.

A file whose object is already committed in ``.data`` or already being fetched
(``in_flight``: object name → waiting files) costs no request. What ``.data`` holds is
looked up for a whole directory's files in one executor call (:meth:`ObjectFetchStage.
look_up`), never with a stat on the event loop. An object whose *content* is in ``.data``
or being fetched under other metadata (the same bytes with another mode, owner or xattrs)
is made by a local copy of that verified object (a reflink where the file system has
them), not fetched again.

Small objects are fetched whole, unverified, and handed to the decompress-verify stage,
which hashes, inflates and commits them in batches (:meth:`ObjectFetchStage.commit_batch`);
one that fails its hash is fetched again, verified (no-cache, then failover), by a task of
its own. Large objects are streamed into a temp file; the chunks of a chunked file are
fetched concurrently (at most ``CHUNKS_IN_FLIGHT`` per file), each inflated and written at
its offset. External files (catalog flag 128) are always streamed, from the external host
chain by their repository path (a chunked one as byte ranges of it, each chunk verified);
their objects are named and deduplicated like any other. Per-object failures are recorded,
not raised; local storage failures (:class:`StorageError`) end the run.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import os
from array import array
from collections.abc import Callable, Coroutine, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from shrinkwrap_async.catalogs.entry import Chunk
from shrinkwrap_async.exitcodes import ShrinkwrapError
from shrinkwrap_async.hashing import Digest, ObjectSuffix, stored_size_limit
from shrinkwrap_async.network.errors import FetchError
from shrinkwrap_async.network.headers import requests_for
from shrinkwrap_async.pipeline.blocking_calls import BlockingCalls
from shrinkwrap_async.pipeline.byte_budget import ByteBudget
from shrinkwrap_async.pipeline.decompress_verify import (
    ContentError,
    HashMismatch,
    InflatingFileSink,
    SmallObject,
    SmallObjectCommitter,
    commit_small_batch,
)
from shrinkwrap_async.pipeline.summary import ExportStats, Failure
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.errors import as_storage_error
from shrinkwrap_async.store.object_names import ObjectMeta

log = logging.getLogger(__name__)

SMALL_OBJECT_LIMIT = 256 * 1024
RECENTLY_COMMITTED = 16384  # names remembered after commit (files looked up before it)
NOT_LOOKED_UP: Any = None
ABSENT = ""
CHUNKS_IN_FLIGHT = 8  # chunk downloads of one file at once (all bounded by the fetcher's -j)

Piece = tuple[Digest, str, int, int]  # digest, suffix, offset in the file, inflated size
DISTINCT_PENDING = 65536  # new keys held in a set before they are merged into the array
DISTINCT_FILTER_BITS = 1 << 24  # 2 MiB: a key whose bit is clear was never seen


class DistinctNames:
    """Which object names were seen, in 8 bytes per name instead of a set of strings.

    A dry run counts the distinct objects it would fetch over the whole repository; a set
    of names would cost about 150 bytes per object (150 MB at a million). Here each name
    is kept as a 64-bit key (BLAKE2b of the name; a false "seen" needs two of a million
    names to collide in 64 bits, about one chance in 10**7) in a sorted ``array('Q')``,
    with the latest keys in a small set merged into it now and then. A bitmap of the keys'
    low bits answers most "new?" questions without a search of the array.
    """

    def __init__(self) -> None:
        self._sorted = array("Q")
        self._pending: set[int] = set()
        self._filter = bytearray(DISTINCT_FILTER_BITS // 8)

    def __len__(self) -> int:
        return len(self._sorted) + len(self._pending)

    def add(self, name: str) -> bool:
        """Remember ``name``; True if it was not seen before."""
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
        bit = key & (DISTINCT_FILTER_BITS - 1)
        mask = 1 << (bit & 7)
        if self._filter[bit >> 3] & mask:
            if key in self._pending:
                return False
            index = bisect.bisect_left(self._sorted, key)
            if index < len(self._sorted) and self._sorted[index] == key:
                return False
        else:
            self._filter[bit >> 3] |= mask
        self._pending.add(key)
        if len(self._pending) >= DISTINCT_PENDING:
            self._merge()
        return True

    def _merge(self) -> None:
        """Insert the pending keys into the sorted array: slices of the old array are
        copied in C between them, so no key of the array becomes a Python int."""
        old, merged, start = self._sorted, array("Q"), 0
        for key in sorted(self._pending):
            index = bisect.bisect_left(old, key, start)
            merged.extend(old[start:index])
            merged.append(key)
            start = index
        merged.extend(old[start:])
        self._sorted, self._pending = merged, set()


@dataclass(slots=True)
class FileJob:
    path: str  # repository path, for messages
    rel: tuple[str, ...]  # validated components below the tree root
    size: int
    compressed: bool
    content: Digest  # content hash, or the chunk-list digest of a chunked file
    chunks: list[Chunk] | None
    meta: ObjectMeta
    name: str  # object name in .data
    # What .data held when looked up: ``name`` (committed), another object of the same
    # content, ABSENT, or NOT_LOOKED_UP (then ``handle`` looks itself).
    found: str | None = NOT_LOOKED_UP
    external: bool = False  # content fetched by ``path`` from CVMFS_EXTERNAL_URL
    # The object was committed with this job's metadata (so its mtime is this job's).
    created: bool = False


def chunk_layout(chunks: Iterable[Chunk], size: int) -> list[Chunk]:
    """The chunks in offset order, checked to tile ``[0, size)`` exactly (no gap, no overlap)."""
    ordered = sorted(chunks, key=lambda chunk: chunk.offset)
    position = 0
    for chunk in ordered:
        if chunk.offset != position or chunk.size <= 0:
            raise ContentError(
                f"chunk list does not tile the file: chunk at {chunk.offset} of {chunk.size} "
                f"bytes, expected one at {position}"
            )
        position += chunk.size
    if position != size:
        raise ContentError(f"chunks add up to {position} bytes, catalog says {size}")
    return ordered


class ObjectFetchStage:
    def __init__(
        self,
        fetcher: object,
        store: DataStore,
        stats: ExportStats,
        cpu_pool: Executor,
        verify_queue: asyncio.Queue[object],
        link_queue: asyncio.Queue[object],
        *,
        dry_run: bool = False,
        committer: SmallObjectCommitter | None = None,
    ) -> None:
        self.fetcher = fetcher
        self._labels_requests = bool(getattr(fetcher, "labels_requests", False))
        self.store = store
        self.stats = stats
        self.cpu_pool = cpu_pool
        self.verify_queue = verify_queue
        self.link_queue = link_queue
        self.dry_run = dry_run
        self.committer = committer  # where batches are committed (default: ``cpu_pool``)
        self._look_ups = BlockingCalls(cpu_pool, fetcher.has_requests_in_flight)  # type: ignore[attr-defined]
        self.budget = ByteBudget()  # bytes of small objects between fetch and commit
        self.in_flight: dict[str, list[FileJob]] = {}
        # dry run: the objects it would fetch (its 2 MiB bitmap only where it is used)
        self._planned: DistinctNames | None = DistinctNames() if dry_run else None
        # Content being fetched: content hex → future of the committed object name (None if
        # the fetch failed), and object name → content hex to resolve it on completion.
        self._content_fetches: dict[str, asyncio.Future[str | None]] = {}
        self._content_of: dict[str, str] = {}
        self._recent: dict[str, None] = {}  # committed by this run lately (FIFO, bounded)
        self._refetches: set[asyncio.Task[None]] = set()
        self._refetch_error: BaseException | None = None
        # Runs a refetch task; the runner passes its task group's create_task so that a
        # fatal error there ends the run at once.
        self.spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] = (
            asyncio.ensure_future
        )

    # -- what .data holds ----------------------------------------------------------------------
    async def look_up(self, jobs: Sequence[FileJob]) -> None:
        """Set ``found`` of each job: one executor call for all (a directory's files)."""
        pending = [job for job in jobs if job.name not in self.in_flight]
        if not pending:
            return
        found = await self._look_ups.run(self.store.look_up, [job.name for job in pending])
        for job, where in zip(pending, found, strict=True):
            job.found = where

    def _committed(self, job: FileJob) -> bool:
        if job.name in self._recent:
            return True
        if job.found is NOT_LOOKED_UP:
            return self.store.exists(job.name)
        return job.found == job.name

    async def handle(self, job: FileJob) -> None:
        waiting = self.in_flight.get(job.name)
        if waiting is not None:
            waiting.append(job)
            self._deduplicated(job)
            return
        if self._committed(job):
            self._deduplicated(job)
            if not self.dry_run:
                await self.link_queue.put(job)
            return
        if self._planned is not None:  # a dry run
            if self._planned.add(job.name):
                self.stats.objects_needed += 1
            return
        self.in_flight[job.name] = [job]
        self.store.note_pending(job.name)
        if not self._labels_requests:
            await self._fetch(job)
            return
        with requests_for(job.path):
            await self._fetch(job)

    async def _fetch(self, job: FileJob) -> None:
        """Make ``job``'s object: from one of the same content, or fetched and committed."""
        try:
            if await self._copy_same_content(job):
                await self.completed(job.name, job.size, copied=True)
                return
            if job.chunks is not None or job.external:
                await self._fetch_streamed(job, job.chunks)
            elif job.size <= SMALL_OBJECT_LIMIT:
                await self.budget.acquire(job.size)  # released once committed (commit_batch)
                try:
                    fetched = await self.fetcher.fetch_object_unverified(  # type: ignore[attr-defined]
                        job.content, max_size=stored_size_limit(job.size)
                    )
                except BaseException:
                    self.budget.release(job.size)
                    raise
                small = SmallObject(
                    job.name, fetched.data, job.size, job.compressed, job.meta, job.content, fetched
                )
                await self.verify_queue.put(small)
                return  # the decompress-verify stage completes it
            else:
                await self._fetch_streamed(job, None)
        except (FetchError, ContentError) as error:
            await self.failed(job.name, error)
            return
        await self.completed(job.name, job.size)

    def _deduplicated(self, job: FileJob) -> None:
        self.stats.dedup_files += 1
        self.stats.dedup_bytes += job.size

    # -- the same content under other metadata -----------------------------------------------
    async def _copy_same_content(self, job: FileJob) -> bool:
        """Make ``job``'s object from a verified one of the same content; False if none.

        Either another object of this content is being fetched (wait for it), or this job
        claims the content (before any await, so that later ones wait for it) and looks for
        a committed object of it in the store.
        """
        key = job.content.hex
        while (pending := self._content_fetches.get(key)) is not None:
            source = await asyncio.shield(pending)
            if source is not None:
                return await self._copy(job, source)
        self._content_fetches[key] = asyncio.get_running_loop().create_future()
        self._content_of[job.name] = key
        if job.found is NOT_LOOKED_UP:
            source = self.store.same_content(job.name)
        else:
            source = job.found or None  # looked up with the directory (not this name: absent)
        return source is not None and await self._copy(job, source)

    async def _copy(self, job: FileJob, source: str) -> bool:
        loop = asyncio.get_running_loop()
        made = await loop.run_in_executor(
            self.cpu_pool, self.store.copy_object, source, job.name, job.meta, job.size
        )
        return made is not None

    def _resolve_content(self, name: str, committed: bool) -> None:
        key = self._content_of.pop(name, None)
        if key is not None:
            future = self._content_fetches.pop(key)
            if not future.done():
                future.set_result(name if committed else None)

    # -- streaming ---------------------------------------------------------------------------
    async def _fetch_streamed(self, job: FileJob, chunks: list[Chunk] | None) -> None:
        if chunks is None:
            pieces: list[Piece] = [(job.content, ObjectSuffix.NONE, 0, job.size)]
        else:
            pieces = [
                (c.digest, ObjectSuffix.PARTIAL, c.offset, c.size)
                for c in chunk_layout(chunks, job.size)
            ]
        fd, temp = self.store.new_object_file()
        committed = False
        try:
            await self._fetch_pieces(job, fd, pieces)
            assembled = os.fstat(fd).st_size
            if assembled != job.size:
                raise ContentError(f"assembled {assembled} bytes, expected {job.size}")
            closing, fd = fd, -1  # closed by the commit, whatever happens
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self.cpu_pool, self.store.commit_object_file, closing, temp, job.name, job.meta
            )
            committed = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not committed and temp is not None:
                self.store.discard(temp)

    async def _fetch_pieces(self, job: FileJob, fd: int, pieces: list[Piece]) -> None:
        """Stream every piece into ``fd`` at its offset, up to ``CHUNKS_IN_FLIGHT`` at once."""
        remaining = iter(pieces)
        label = f"object {job.name}"

        async def fetch_remaining() -> None:
            for digest, suffix, offset, size in remaining:

                def sink(o: int = offset, s: int = size) -> InflatingFileSink:
                    return InflatingFileSink(fd, o, s, job.compressed, self.cpu_pool, label=label)

                if job.external:
                    await self._fetch_external_piece(job, digest, offset, size, sink)
                else:
                    await self.fetcher.stream_object(  # type: ignore[attr-defined]
                        digest, suffix, sink, size_hint=size
                    )

        workers = min(CHUNKS_IN_FLIGHT, len(pieces))
        if workers <= 1:
            await fetch_remaining()
            return
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(fetch_remaining())
        except BaseExceptionGroup as errors:
            raise most_serious(errors) from None

    async def _fetch_external_piece(
        self,
        job: FileJob,
        digest: Digest,
        offset: int,
        size: int,
        sink: Callable[[], InflatingFileSink],
    ) -> None:
        """One external piece: the whole file, or a chunk as a byte range of the same URL.

        A range is as many bytes as the chunk; a whole uncompressed file as many as the
        catalog says, a compressed one at most about that (zlib's worst case).
        """
        if job.chunks is not None:
            byte_range: tuple[int, int] | None = (offset, size)
            limit = size
        else:
            byte_range = None
            limit = stored_size_limit(size) if job.compressed else size
        await self.fetcher.stream_external(  # type: ignore[attr-defined]
            job.path, digest, sink, byte_range=byte_range, max_size=limit
        )

    # -- decompress-verify: batches of small objects ------------------------------------------
    async def commit_batch(self, batch: list[SmallObject]) -> None:
        """Verify, inflate and commit ``batch`` in one executor call; settle each object."""
        try:
            results = await self._commit(batch)
        finally:
            self.budget.release(sum(item.size for item in batch))
        for item, error in zip(batch, results, strict=True):
            if error is None:
                await self.completed(item.name, item.size)
            elif isinstance(error, HashMismatch):
                task = self.spawn(self._refetch(item))
                self._refetches.add(task)
                task.add_done_callback(self._refetch_done)
            else:
                await self.failed(item.name, error)

    async def _refetch(self, item: SmallObject) -> None:
        """An object whose bytes failed their hash: fetch it verified, then commit it."""
        assert item.digest is not None
        try:
            data = await self.fetcher.refetch_object(item.digest, item.fetched)  # type: ignore[attr-defined]
        except FetchError as error:
            await self.failed(item.name, error)
            return
        item.data, item.digest, item.fetched = data, None, None  # verified by the fetcher
        [error] = await self._commit([item])
        if error is None:
            await self.completed(item.name, item.size)
        else:
            await self.failed(item.name, error)

    async def _commit(self, batch: list[SmallObject]) -> list[Exception | None]:
        if self.committer is not None:
            return await self.committer.commit(batch)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.cpu_pool, commit_small_batch, self.store, batch)

    def _refetch_done(self, task: asyncio.Task[None]) -> None:
        self._refetches.discard(task)
        if not task.cancelled() and task.exception() is not None and self._refetch_error is None:
            self._refetch_error = task.exception()

    async def drain(self) -> None:
        """Wait for the refetches still running (before the link stage is told to stop);
        raise what ended one of them (under the runner's task group it has already
        ended the run)."""
        while self._refetches:
            await asyncio.wait(set(self._refetches))
        if self._refetch_error is not None:
            raise self._refetch_error

    # -- outcomes ------------------------------------------------------------------------------
    async def completed(self, name: str, size: int, *, copied: bool = False) -> None:
        """The object is committed: count it and pass every waiting file to the link stage."""
        recent = self._recent
        recent[name] = None
        if len(recent) > RECENTLY_COMMITTED:
            del recent[next(iter(recent))]
        self.stats.data_files += 1
        self.stats.data_bytes += size
        if copied:
            self.stats.content_copies += 1
        self._resolve_content(name, committed=True)
        jobs = self.in_flight.pop(name, [])
        if jobs:
            jobs[0].created = True
        for job in jobs:
            await self.link_queue.put(job)

    async def failed(self, name: str, error: BaseException) -> None:
        self._resolve_content(name, committed=False)
        for job in self.in_flight.pop(name, []):
            reason = str(error) or type(error).__name__
            self.stats.failures.append(Failure(job.path or "/", name, reason))
            log.error("%s: object %s failed: %s", job.path, job.content.hex, reason)


def most_serious(errors: BaseExceptionGroup[Any]) -> BaseException:
    """The error that decides the outcome of a failed (nested) task group.

    In order: a run-ending ShrinkwrapError (storage, trust, hostile path, ...); a local
    storage failure that escaped as a plain OSError or SQLite error, as a StorageError; a
    per-object failure (fetch, content); else the first error.
    """
    leaves: list[BaseException] = []
    stack: list[BaseException] = [errors]
    while stack:
        error = stack.pop()
        if isinstance(error, BaseExceptionGroup):
            stack.extend(reversed(error.exceptions))
        else:
            leaves.append(error)
    for error in leaves:
        if isinstance(error, ShrinkwrapError) and not isinstance(error, FetchError):
            return error
    for error in leaves:
        converted = as_storage_error(error)
        if converted is not None:
            return converted
    for error in leaves:
        if isinstance(error, FetchError | ContentError):
            return error
    return leaves[0]
