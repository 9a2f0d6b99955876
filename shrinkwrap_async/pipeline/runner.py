"""The export pipeline: catalog-fetch → spec-filter → object-fetch → decompress-verify → link.

Stages are asyncio workers joined by bounded queues under one TaskGroup. The walker lists
directories (several at once, nested catalogs opened concurrently), filters them with the
spec and feeds file jobs to the object fetchers; committed objects go to the link stage.
Per-object failures are recorded in :class:`ExportStats`; systemic errors (storage, trust,
hostile names) propagate and end the run. Pending directories wait in an unbounded LIFO
(its size is the walk's frontier, not the repository size); directory metadata is spilled
to SQLite and applied at the end, deepest first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shrinkwrap_async.catalogs.cache import CatalogCache
from shrinkwrap_async.catalogs.entry import DirEntry
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.config.variant_symlinks import expand_variant_symlink
from shrinkwrap_async.exitcodes import ShrinkwrapError
from shrinkwrap_async.link.directory_spool import DirectorySpool
from shrinkwrap_async.link.tree_writer import TreeWriter
from shrinkwrap_async.network.errors import FetchError
from shrinkwrap_async.pipeline.catalog_fetch import CatalogHandle, CatalogOpener
from shrinkwrap_async.pipeline.decompress_verify import SmallObject, commit_small_batch
from shrinkwrap_async.pipeline.link_stage import DirectoryOp, LinkStage, SpecialOp, SymlinkOp
from shrinkwrap_async.pipeline.object_fetch import FileJob, ObjectFetchStage
from shrinkwrap_async.pipeline.progress import Progress
from shrinkwrap_async.pipeline.spec_filter import select_children
from shrinkwrap_async.pipeline.summary import ExportStats, Failure
from shrinkwrap_async.runtime import cpu_count
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.store.data_store import DataStore, ObjectMeta, chunk_list_digest, object_name

log = logging.getLogger(__name__)

STOP: Any = object()
BATCH = 128


@dataclass
class ExportOptions:
    dest_base: Path
    dest_cache: Path | None = None  # default <dest-base>/.data
    max_in_flight: int = 32  # object requests in flight (-j)
    walkers: int = 4
    dry_run: bool = False
    keep_raw_symlinks: bool = False
    stat_period: float = 10.0
    progress: bool = False
    live_progress: bool = False
    warn: Callable[[str], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def store_root(self) -> Path:
        return self.dest_cache or self.dest_base / ".data"


class Ownership:
    """Owner of exported entries: the maps as root; unprivileged, only ids we can set."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.root = os.geteuid() == 0
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.groups = {self.gid, *os.getgroups()}

    def __call__(self, uid: int, gid: int) -> tuple[int, int]:
        uid, gid = self.settings.map_owner(uid, gid)
        if self.root:
            return uid, gid
        return (uid if uid == self.uid else self.uid), (gid if gid in self.groups else self.gid)


@dataclass(slots=True)
class DirJob:
    path: str
    rel: tuple[str, ...]
    catalog: CatalogHandle | asyncio.Task[CatalogHandle | BaseException]


async def run_stage(
    name: str,
    handler: Callable[[Any], Awaitable[None]] | None,
    inq: asyncio.Queue[Any],
    workers: int,
    outq: asyncio.Queue[Any] | None,
    next_workers: int,
    *,
    batch_handler: Callable[[list[Any]], Awaitable[None]] | None = None,
) -> None:
    """Run ``workers`` consumers of ``inq`` until each got a STOP, then stop the next stage."""

    async def worker() -> None:
        while True:
            item = await inq.get()
            if item is STOP:
                return
            if batch_handler is None:
                assert handler is not None
                await handler(item)
                continue
            batch, stop = [item], False
            while len(batch) < BATCH and not inq.empty():
                extra = inq.get_nowait()
                if extra is STOP:
                    stop = True
                    break
                batch.append(extra)
            await batch_handler(batch)
            if stop:
                return

    async with asyncio.TaskGroup() as group:
        for index in range(workers):
            group.create_task(worker(), name=f"{name}-{index}")
    if outq is not None:
        for _ in range(next_workers):
            await outq.put(STOP)


class Exporter:
    """One export of ``settings.fqrn`` under ``spec`` into ``options.dest_base``."""

    def __init__(
        self,
        settings: ClientSettings,
        spec: Spec,
        options: ExportOptions,
        fetcher: Any,
        catalog_cache: CatalogCache,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.options = options
        self.fetcher = fetcher
        self.stats = ExportStats()
        self.owner = Ownership(settings)
        self.env = settings.symlink_environment()
        self.opener = CatalogOpener(catalog_cache)
        self.store = DataStore(options.store_root)
        self.cpu_pool = ThreadPoolExecutor(max(1, cpu_count()), thread_name_prefix="inflate")
        self.tree_pool = ThreadPoolExecutor(1, thread_name_prefix="tree")
        self.fetch_workers = max(1, options.max_in_flight)
        self.verify_workers = max(1, cpu_count())
        self.q_fetch: asyncio.Queue[Any] = asyncio.Queue(maxsize=4 * self.fetch_workers)
        self.q_verify: asyncio.Queue[Any] = asyncio.Queue(maxsize=4 * BATCH)
        self.q_link: asyncio.Queue[Any] = asyncio.Queue(maxsize=4 * BATCH)
        self.dirs: asyncio.LifoQueue[Any] = asyncio.LifoQueue()
        self._pending_dirs = 0
        self.writer: TreeWriter | None = None
        self.link: LinkStage | None = None
        self.spool: DirectorySpool | None = None

    # -- helpers -------------------------------------------------------------------------
    async def _tree(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.tree_pool, fn, *args)

    def _meta(self, entry: DirEntry) -> ObjectMeta:
        uid, gid = self.owner(entry.uid, entry.gid)
        return ObjectMeta(entry.mode, uid, gid, entry.mtime, entry.xattrs)

    # -- the run ---------------------------------------------------------------------------
    async def run(self, root_catalog: Any) -> ExportStats:
        start = time.monotonic()
        tree_root = self.options.dest_base / self.settings.fqrn
        try:
            if not self.options.dry_run:
                await self._tree(self._prepare, tree_root)
            root = await self.opener.open_root(root_catalog)
            self.stats.catalogs += 1
            await self._run_pipeline(root)
            if self.link is not None:
                await self._tree(self.link.finish_directories)
        finally:
            self.stats.elapsed = time.monotonic() - start
            stats = getattr(self.fetcher, "stats", None)
            self.stats.requests = getattr(stats, "requests", 0)
            self.stats.retries = getattr(stats, "retries", 0)
            self.stats.bytes_received = getattr(stats, "bytes_received", 0)
            if self.writer is not None:
                self.stats.copies = self.writer.copies
                await self._tree(self._close)
            self.cpu_pool.shutdown(wait=True)
            self.tree_pool.shutdown(wait=True)
        return self.stats

    def _prepare(self, tree_root: Path) -> None:
        swept = self.store.prepare()
        if swept:
            log.info("removed %d temporary objects left by an interrupted run", swept)
        self.writer = TreeWriter(tree_root, warn=self.options.warn)
        self.spool = DirectorySpool(self.store.root / ".tmp")
        self.link = LinkStage(self.writer, self.store, self.spool)
        self.writer.make_directory(())
        self.writer.write_marker()

    def _close(self) -> None:
        assert self.writer is not None
        self.stats.skipped_devices = len(self.writer.skipped_devices)
        self.writer.close()
        if self.spool is not None:
            self.spool.close()
        self.store.cleanup()

    async def _run_pipeline(self, root: CatalogHandle) -> None:
        fetch_stage = ObjectFetchStage(
            self.fetcher,
            self.store,
            self.stats,
            self.cpu_pool,
            self.q_verify,
            self.q_link,
            dry_run=self.options.dry_run,
        )
        self.fetch_stage = fetch_stage
        progress_task = None
        async with asyncio.TaskGroup() as group:
            if self.options.progress:
                reporter = Progress(
                    self.stats, period=self.options.stat_period, live=self.options.live_progress
                )
                progress_task = group.create_task(reporter.run())
            group.create_task(self._walk(root, group))
            group.create_task(
                run_stage(
                    "fetch",
                    fetch_stage.handle,
                    self.q_fetch,
                    self.fetch_workers,
                    self.q_verify,
                    self.verify_workers,
                )
            )
            group.create_task(
                run_stage(
                    "verify",
                    None,
                    self.q_verify,
                    self.verify_workers,
                    self.q_link,
                    1,
                    batch_handler=self._verify_batch,
                )
            )
            stages = group.create_task(
                run_stage("link", None, self.q_link, 1, None, 0, batch_handler=self._link_batch)
            )
            await stages
            if progress_task is not None:
                progress_task.cancel()

    # -- catalog-fetch + spec-filter: the walker ---------------------------------------------
    async def _walk(self, root: CatalogHandle, group: asyncio.TaskGroup) -> None:
        root_entry = await root.catalog.lookup("")
        selection = self.spec.select("", is_directory=True)
        if root_entry is not None and not self.options.dry_run:
            uid, gid = self.owner(root_entry.uid, root_entry.gid)
            assert self.spool is not None
            await self._tree(self.spool.add, (), root_entry.mode, uid, gid, root_entry.mtime)
        if selection.descend:
            self._push(DirJob("", (), root.acquire()))
            async with asyncio.TaskGroup() as walkers:
                for index in range(self.options.walkers):
                    walkers.create_task(self._walker(group), name=f"walk-{index}")
        else:
            await root.catalog.close()
        for _ in range(self.fetch_workers):
            await self.q_fetch.put(STOP)

    def _push(self, job: DirJob) -> None:
        self._pending_dirs += 1
        self.dirs.put_nowait(job)

    async def _walker(self, group: asyncio.TaskGroup) -> None:
        while True:
            job = await self.dirs.get()
            if job is STOP:
                return
            try:
                await self._list_directory(job, group)
            finally:
                self._pending_dirs -= 1
                if self._pending_dirs == 0:
                    for _ in range(self.options.walkers):
                        self.dirs.put_nowait(STOP)

    async def _list_directory(self, job: DirJob, group: asyncio.TaskGroup) -> None:
        if isinstance(job.catalog, asyncio.Task):
            result = await job.catalog
            if isinstance(result, BaseException):
                self.stats.failures.append(Failure(job.path, "catalog", str(result)))
                log.error("%s: nested catalog failed: %s", job.path, result)
                return
            handle = result.acquire()
            self.stats.catalogs += 1
        else:
            handle = job.catalog
        try:
            entries = [e async for e in handle.catalog.list_directory(job.path)]
            keep: list[str] = []
            ops: list[DirectoryOp | SymlinkOp | SpecialOp] = []
            subdirs: list[tuple[DirEntry, tuple[str, ...]]] = []
            files: list[tuple[DirEntry, tuple[str, ...]]] = []
            for entry, selection in select_children(self.spec, entries):
                rel = (*job.rel, entry.name)
                keep.append(entry.name)
                if entry.is_directory:
                    self.stats.dirs += 1
                    uid, gid = self.owner(entry.uid, entry.gid)
                    ops.append(DirectoryOp(rel, entry.mode, uid, gid, entry.mtime, entry.xattrs))
                    if selection.descend:
                        subdirs.append((entry, rel))
                elif entry.is_symlink:
                    self.stats.symlinks += 1
                    target = entry.symlink
                    if not self.options.keep_raw_symlinks:
                        target = expand_variant_symlink(target, self.env)
                    ops.append(SymlinkOp(rel, target, entry.mtime))
                elif entry.is_special:
                    self.stats.specials += 1
                    uid, gid = self.owner(entry.uid, entry.gid)
                    ops.append(SpecialOp(rel, entry.mode, entry.rdev, uid, gid, entry.mtime))
                else:
                    self.stats.files += 1
                    self.stats.bytes += entry.size
                    files.append((entry, rel))
            if not self.options.dry_run:
                assert self.link is not None
                removed, _skipped = await self._tree(self.link.apply_listing, job.rel, keep, ops)
                self.stats.removed += removed
            for entry, rel in subdirs:
                if entry.is_nested_mountpoint:
                    handle.acquire()  # held by the opening task until the child is open
                    task = group.create_task(self._open_nested(handle, entry.path))
                    self._push(DirJob(entry.path, rel, task))
                else:
                    self._push(DirJob(entry.path, rel, handle.acquire()))
            for entry, rel in files:
                file_job = await self._file_job(handle, entry, rel)
                if file_job is not None:
                    await self.q_fetch.put(file_job)
        finally:
            await handle.release()

    async def _open_nested(self, parent: CatalogHandle, path: str) -> CatalogHandle | BaseException:
        try:
            return await self.opener.open_nested(parent.catalog, path)
        except FetchError as error:
            return error
        finally:
            await parent.release()

    async def _file_job(
        self, handle: CatalogHandle, entry: DirEntry, rel: tuple[str, ...]
    ) -> FileJob | None:
        meta = self._meta(entry)
        chunks = None
        if entry.is_external:
            reason = "external files are not supported"
            self.stats.failures.append(Failure(entry.path, "", reason))
            log.error("%s: %s", entry.path, reason)
            return None
        if entry.is_chunked:
            chunks = await handle.catalog.chunks(entry)
            content = chunk_list_digest(c.digest for c in chunks)
        elif entry.content_hash is not None:
            content = entry.content_hash
        else:
            self.stats.failures.append(Failure(entry.path, "", "regular file without a hash"))
            return None
        name = object_name(content, meta.meta_hash)
        return FileJob(entry.path, rel, entry.size, entry.compressed, content, chunks, meta, name)

    # -- decompress-verify and link ------------------------------------------------------------
    async def _verify_batch(self, batch: list[SmallObject]) -> None:
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(self.cpu_pool, commit_small_batch, self.store, batch)
        for item, error in zip(batch, results, strict=True):
            if error is None:
                await self.fetch_stage.completed(item.name, item.size)
            else:
                await self.fetch_stage.failed(item.name, error)

    async def _link_batch(self, batch: list[FileJob]) -> None:
        assert self.link is not None
        counts = await self._tree(self.link.link_files, batch)
        self.stats.linked += counts["linked"] + counts["copied"]
        self.stats.unchanged += counts["unchanged"]


def first_shrinkwrap_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first ShrinkwrapError in a (nested) exception group, else the first exception."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return first_shrinkwrap_error(error)
        if isinstance(error, ShrinkwrapError):
            return error
    return group.exceptions[0]


async def export_repository(
    settings: ClientSettings,
    spec: Spec,
    options: ExportOptions,
    *,
    config_argument: str = "",
    src_cache: str = "",
    catalog_cache_dir: Path | None = None,
) -> ExportStats:
    """Establish trust, run the pipeline, write provenance. Raises systemic errors."""
    from shrinkwrap_async.network.fetcher import Fetcher
    from shrinkwrap_async.state.provenance import write_provenance
    from shrinkwrap_async.trust.chain import establish_trust

    cache_dir = catalog_cache_dir or settings.catalog_cache_dir()
    async with Fetcher(settings, max_in_flight=options.max_in_flight) as fetcher:
        trusted = await establish_trust(fetcher, settings, cache_dir=cache_dir / "certificates")
        cache = CatalogCache(cache_dir / "catalogs", fetcher)
        exporter = Exporter(settings, spec, options, fetcher, cache)
        try:
            stats = await exporter.run(trusted.root_catalog)
        except BaseExceptionGroup as group:
            raise first_shrinkwrap_error(group) from None
    stats.revision = trusted.revision
    stats.root_hash = trusted.root_catalog.hex
    if not options.dry_run:
        write_provenance(
            options.dest_base,
            settings.fqrn,
            config_files=settings.config_files,
            config_argument=config_argument,
            src_cache=src_cache,
            dest_cache=options.store_root,
            root_hash=stats.root_hash,
            revision=trusted.revision,
            spec_text=spec.to_text(),
            servers=settings.server_urls,
            summary=stats.as_dict(),
        )
    return stats
