"""Object-fetch stage: one object per distinct (content, metadata), fetched once.

A file whose object is already committed in ``.data`` (one stat) or already being fetched
(``in_flight``: object name → waiting files) costs no request. Small objects are fetched whole
and handed to the decompress-verify stage in batches; large objects and chunked files are
streamed into a temp file and committed here. Per-object failures are recorded, not raised.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass

from shrinkwrap_async.catalogs.entry import Chunk
from shrinkwrap_async.hashing import Digest, ObjectSuffix
from shrinkwrap_async.network.errors import FetchError
from shrinkwrap_async.pipeline.decompress_verify import (
    ContentError,
    InflatingFileSink,
    SmallObject,
)
from shrinkwrap_async.pipeline.summary import ExportStats, Failure
from shrinkwrap_async.store.data_store import DataStore, ObjectMeta

log = logging.getLogger(__name__)

SMALL_OBJECT_LIMIT = 256 * 1024


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
    ) -> None:
        self.fetcher = fetcher
        self.store = store
        self.stats = stats
        self.cpu_pool = cpu_pool
        self.verify_queue = verify_queue
        self.link_queue = link_queue
        self.dry_run = dry_run
        self.in_flight: dict[str, list[FileJob]] = {}
        self._planned: set[str] = set()

    async def handle(self, job: FileJob) -> None:
        waiting = self.in_flight.get(job.name)
        if waiting is not None:
            waiting.append(job)
            self._deduplicated(job)
            return
        if self.store.exists(job.name):
            self._deduplicated(job)
            if not self.dry_run:
                await self.link_queue.put(job)
            return
        if self.dry_run:
            if job.name not in self._planned:
                self._planned.add(job.name)
                self.stats.objects_needed += 1
            return
        self.in_flight[job.name] = [job]
        try:
            if job.chunks is not None:
                await self._fetch_streamed(job, job.chunks)
            elif job.size <= SMALL_OBJECT_LIMIT:
                data = await self.fetcher.fetch_object(  # type: ignore[attr-defined]
                    job.content, max_size=job.size + job.size // 64 + 4096
                )
                small = SmallObject(job.name, data, job.size, job.compressed, job.meta)
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

    async def _fetch_streamed(self, job: FileJob, chunks: list[Chunk] | None) -> None:
        fd, temp = self.store.new_temp()
        committed = False
        try:
            if chunks is None:
                pieces = [(job.content, ObjectSuffix.NONE, 0, job.size)]
            else:
                pieces = [(c.digest, ObjectSuffix.PARTIAL, c.offset, c.size) for c in chunks]
            for digest, suffix, offset, size in pieces:
                await self.fetcher.stream_object(  # type: ignore[attr-defined]
                    digest,
                    suffix,
                    lambda o=offset, s=size: InflatingFileSink(
                        fd, o, s, job.compressed, self.cpu_pool
                    ),
                )
            if os.fstat(fd).st_size != job.size:
                raise ContentError(f"assembled {os.fstat(fd).st_size} bytes, expected {job.size}")
            os.close(fd)
            fd = -1
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.cpu_pool, self.store.commit, temp, job.name, job.meta)
            committed = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not committed:
                self.store.discard(temp)

    async def completed(self, name: str, size: int) -> None:
        """The object is committed: count it and pass every waiting file to the link stage."""
        self.stats.data_files += 1
        self.stats.data_bytes += size
        for job in self.in_flight.pop(name, []):
            await self.link_queue.put(job)

    async def failed(self, name: str, error: BaseException) -> None:
        for job in self.in_flight.pop(name, []):
            reason = str(error) or type(error).__name__
            self.stats.failures.append(Failure(job.path or "/", name, reason))
            log.error("%s: object %s failed: %s", job.path, job.content.hex, reason)
