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
from functools import partial
from pathlib import Path
from typing import Any

from shrinkwrap_async.catalogs.cache import CatalogCache
from shrinkwrap_async.catalogs.entry import DirEntry
from shrinkwrap_async.catalogs.reader import ChildCounts
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.config.variant_symlinks import expand_variant_symlink
from shrinkwrap_async.link.directory_spool import DirectorySpool
from shrinkwrap_async.link.shared_mtimes import SharedMtimes
from shrinkwrap_async.link.tree_writer import TreeWriter
from shrinkwrap_async.network.errors import (
    ExternalNotConfiguredError,
    FetchError,
    TransferError,
)
from shrinkwrap_async.pipeline.blocking_calls import BlockingCalls
from shrinkwrap_async.pipeline.catalog_fetch import CatalogHandle, CatalogOpener
from shrinkwrap_async.pipeline.decompress_verify import SmallObjectCommitter
from shrinkwrap_async.pipeline.link_stage import DirectoryOp, LinkStage, SpecialOp, SymlinkOp
from shrinkwrap_async.pipeline.object_fetch import FileJob, ObjectFetchStage, most_serious
from shrinkwrap_async.pipeline.progress import Progress
from shrinkwrap_async.pipeline.refresh import (
    CatalogDiff,
    CatalogDiffer,
    CatalogProgress,
    DiffListing,
    RefreshPlan,
)
from shrinkwrap_async.pipeline.shard import make_directories, shard_run
from shrinkwrap_async.pipeline.spec_filter import select_children
from shrinkwrap_async.pipeline.summary import ExportStats, Failure
from shrinkwrap_async.runtime import cpu_count
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.object_names import ObjectMeta, chunk_list_digest, object_name

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
    allow_older_revision: bool = False  # apply a revision older than the one exported
    changes_file: Path | None = None  # --changes: what this run changed in the tree
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
        self._cache: dict[tuple[int, int], tuple[int, int]] = {}  # a handful of owners

    def __call__(self, uid: int, gid: int) -> tuple[int, int]:
        key = (uid, gid)
        owner = self._cache.get(key)
        if owner is None:
            owner = self._cache[key] = self._owner(uid, gid)
        return owner

    def _owner(self, uid: int, gid: int) -> tuple[int, int]:
        uid, gid = self.settings.map_owner(uid, gid)
        if self.root:
            return uid, gid
        return (uid if uid == self.uid else self.uid), (gid if gid in self.groups else self.gid)


@dataclass(slots=True)
class DeferredCatalog:
    """A nested catalog to be opened by the walker that takes its directory job."""

    parent: CatalogHandle  # acquired for the job; released once the catalog is open
    mountpoint: str


@dataclass(slots=True)
class DirJob:
    path: str
    rel: tuple[str, ...]
    catalog: CatalogHandle | asyncio.Task[CatalogHandle | BaseException] | DeferredCatalog
    progress: CatalogProgress | None = None  # the catalog this directory belongs to
    diff: CatalogDiff | None = None  # set: visit only what changed (see pipeline.refresh)


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


class TrackedFetchStage(ObjectFetchStage):
    """The object-fetch stage, also telling the runner which files failed and why."""

    on_file_failed: Callable[[FileJob, BaseException], Awaitable[None]] | None = None

    async def failed(self, name: str, error: BaseException) -> None:
        jobs = list(self.in_flight.get(name, ()))
        await super().failed(name, error)
        if self.on_file_failed is not None:
            for job in jobs:
                await self.on_file_failed(job, error)


class Exporter:
    """One export of ``settings.fqrn`` under ``spec`` into ``options.dest_base``."""

    def __init__(
        self,
        settings: ClientSettings,
        spec: Spec,
        options: ExportOptions,
        fetcher: Any,
        catalog_cache: CatalogCache,
        *,
        refresh: RefreshPlan | None = None,
        on_catalog_applied: Callable[[str, str], Awaitable[None]] | None = None,
        files_done: bool = False,
    ) -> None:
        self.settings = settings
        self.refresh = refresh or RefreshPlan()
        self.on_catalog_applied = on_catalog_applied
        self._track = on_catalog_applied is not None and not options.dry_run
        self._file_progress: dict[int, CatalogProgress] = {}
        self.root_applied: str | None = None  # root hash, once the whole tree is in place
        self.transfer_failures = 0  # failures caused by the upstream being unreachable
        self.catalogs_skipped = 0  # unchanged nested catalogs whose subtree was not walked
        self.walked_mountpoints: set[str] = set()  # catalogs opened by this run
        self.skipped_mountpoints: set[str] = set()  # unchanged subtrees left as they were
        self.failed_mountpoints: list[str] = []  # catalogs whose subtree did not complete
        self._root_hex = ""
        self.spec = spec
        self.options = options
        self.fetcher = fetcher
        self.stats = ExportStats()
        self.owner = Ownership(settings)
        self.env = settings.symlink_environment()
        self.opener = CatalogOpener(catalog_cache)
        self.store = DataStore(options.store_root)
        # Small objects are committed in batches by a worker process (``committer``); the
        # one thread of ``cpu_pool`` streams large objects, copies, and looks up ``.data``.
        self.cpu_pool = ThreadPoolExecutor(1, thread_name_prefix="inflate")
        self.tree_pool = ThreadPoolExecutor(1, thread_name_prefix="tree")
        self.tree_calls = BlockingCalls(self.tree_pool, fetcher.has_requests_in_flight)
        self.differ = CatalogDiffer(
            self.refresh,
            catalog_cache.path_for,
            spec,
            options.dest_base / settings.fqrn,
            calls=BlockingCalls(self.tree_pool, fetcher.has_requests_in_flight),
        )
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
        self.shared_mtimes: SharedMtimes | None = None
        self.shard = shard_run(options, self)  # --shard K/N: this process's part
        # A diffed directory is listed for temp names only after a run that did not finish
        # (on a parallel file system a listing costs), and never by a shard.
        self._remove_temps = self.refresh.after_unfinished and self.shard is None
        # The pass after shards that all ended complete: every selected regular file is
        # linked already, so only the directories are walked (see ``state.shard_marks``).
        self.files_done = self.shard is None and files_done
        self.committer = SmallObjectCommitter(  # after the shard's store
            self.store, self.cpu_pool, use_process=not self.files_done
        )

    # -- helpers -------------------------------------------------------------------------
    async def _tree(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A quick call on the tree (one directory, one batch of links): see ``blocking_calls``."""
        return await self.tree_calls.run(fn, *args)

    async def _tree_background(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A call on the tree that may take long: always on the tree thread."""
        return await self.tree_calls.run(fn, *args, background=True)

    def _meta(self, entry: DirEntry) -> ObjectMeta:
        uid, gid = self.owner(entry.uid, entry.gid)
        return ObjectMeta(entry.mode, uid, gid, entry.mtime, entry.xattrs)

    # -- the run ---------------------------------------------------------------------------
    async def run(self, root_catalog: Any) -> ExportStats:
        start = time.monotonic()
        self._root_hex = getattr(root_catalog, "hex", str(root_catalog))
        tree_root = self.options.dest_base / self.settings.fqrn
        try:
            if not self.options.dry_run:
                await self._tree_background(self._prepare, tree_root)  # the committer starts lazily
            root = await self.opener.open_root(root_catalog)  # corrupt: TrustError, exit 3
            self.stats.catalogs += 1
            await self._run_pipeline(root)
            if self.link is not None:
                await self._tree_background(self.link.finish_shared_mtimes)
                await self._tree_background(self.link.finish_directories)
            if self.root_applied is not None and self.on_catalog_applied is not None:
                await self.on_catalog_applied("", self.root_applied)
        finally:
            self.stats.elapsed = time.monotonic() - start
            self.stats.take_fetch_counters(getattr(self.fetcher, "stats", None))
            await asyncio.shield(self.opener.close_all())
            await asyncio.shield(self.differ.close_all())
            if self.writer is not None:
                self.stats.copies = self.writer.copies
                await self._tree_background(self._close)
            self.committer.close()
            self.cpu_pool.shutdown(wait=True)
            self.tree_pool.shutdown(wait=True)
        return self.stats

    def _prepare(self, tree_root: Path) -> None:
        swept = self.store.prepare()
        if swept:
            log.info("removed %d temporary objects left by an interrupted run", swept)
        self.writer = TreeWriter(
            tree_root, warn=self.options.warn, changes_file=self.options.changes_file
        )
        self.spool = DirectorySpool(self.store.root / ".tmp")
        self.shared_mtimes = SharedMtimes(self.store.root / ".tmp")
        self.link = LinkStage(self.writer, self.store, self.spool, self.shared_mtimes)
        if self.shard is not None:
            self.link = self.shard.link_stage(self.link)
        self.writer.make_directory(())
        if self.shard is None:  # the tree's one writer: temps at its root are a killed run's
            self.writer.remove_temps()
        self.writer.write_marker()

    def _close(self) -> None:
        assert self.writer is not None
        self.stats.skipped_devices = len(self.writer.skipped_devices)
        self.writer.close()
        if self.spool is not None:
            self.spool.close()
        if self.shared_mtimes is not None:
            self.shared_mtimes.close()
        self.store.cleanup()

    async def _run_pipeline(self, root: CatalogHandle) -> None:
        fetch_stage = TrackedFetchStage(
            self.fetcher,
            self.store,
            self.stats,
            self.cpu_pool,
            self.q_verify,
            self.q_link,
            dry_run=self.options.dry_run,
            committer=self.committer,
        )
        fetch_stage.on_file_failed = self._file_failed
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
            fetch_stage.spawn = group.create_task
            group.create_task(self._verify_stage())
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
            progress = self._new_progress("", self._root_hex, None)
            self._push(DirJob("", (), root.acquire(), progress))
            async with asyncio.TaskGroup() as walkers:
                for index in range(self.options.walkers):
                    walkers.create_task(self._walker(group), name=f"walk-{index}")
        else:
            await root.catalog.close()
        for _ in range(self.fetch_workers):
            await self.q_fetch.put(STOP)

    def _new_progress(
        self, mountpoint: str, digest_hex: str, parent: CatalogProgress | None
    ) -> CatalogProgress | None:
        if not self._track:
            return None
        return CatalogProgress(mountpoint, digest_hex, parent, self._catalog_complete)

    async def _catalog_complete(self, progress: CatalogProgress) -> None:
        """A catalog's subtree is done: finalise its directories, then record it applied."""
        if progress.failed:
            self.failed_mountpoints.append(progress.mountpoint)
            return
        if self.passes_through(progress.mountpoint):
            return  # a catalog shard passed through it: the final pass applies it
        if progress.mountpoint == "":
            self.root_applied = progress.digest_hex  # recorded after the final directory pass
            return
        if self.link is not None and progress.dirs:
            writer = self.link.writer
            ordered = sorted(progress.dirs, key=lambda d: len(d[0]), reverse=True)
            progress.dirs = []

            def finalise() -> None:
                for rel, mode, uid, gid, mtime in ordered:
                    writer.set_directory_metadata(rel, mode, uid, gid, mtime)

            await self._tree_background(finalise)
        assert self.on_catalog_applied is not None
        await self.on_catalog_applied(progress.mountpoint, progress.digest_hex)

    async def _file_failed(self, job: FileJob, error: BaseException) -> None:
        if isinstance(error, TransferError):
            self.transfer_failures += 1
        progress = self._file_progress.pop(id(job), None)
        if progress is not None:
            await progress.done(failed=True)

    def _push(self, job: DirJob) -> None:
        self._pending_dirs += 1
        if job.progress is not None:
            job.progress.add()
        self.dirs.put_nowait(job)

    async def _walker(self, group: asyncio.TaskGroup) -> None:
        while True:
            job = await self.dirs.get()
            if job is STOP:
                return
            try:
                await self._list_directory(job, group)
            except BaseException:
                if job.progress is not None:
                    job.progress.fail()
                raise
            finally:
                if job.progress is not None:
                    await job.progress.done()
                self._pending_dirs -= 1
                if self._pending_dirs == 0:
                    for _ in range(self.options.walkers):
                        self.dirs.put_nowait(STOP)

    async def _list_directory(self, job: DirJob, group: asyncio.TaskGroup) -> None:
        if isinstance(job.catalog, (asyncio.Task, DeferredCatalog)):
            if isinstance(job.catalog, DeferredCatalog):
                result = await self._open_nested(job.catalog.parent, job.catalog.mountpoint)
            else:
                result = await job.catalog
            if isinstance(result, BaseException):
                self.stats.failures.append(Failure(job.path, "catalog", str(result)))
                log.error("%s: nested catalog failed: %s", job.path, result)
                if isinstance(result, TransferError):
                    self.transfer_failures += 1
                if job.progress is not None:
                    job.progress.fail()
                return
            handle = result.acquire()
            self.stats.catalogs += 1
        else:
            handle = job.catalog
        diff = job.diff
        try:
            if diff is None and job.progress is not None and job.progress.mountpoint == job.path:
                diff = await self.differ.open(handle.catalog, job.progress.digest_hex)
                if diff is not None:
                    for mountpoint in diff.skipped:
                        self._skip_catalog(mountpoint)
            listing: DiffListing | None = None
            others: ChildCounts | None = None
            if diff is not None:
                listing = await diff.children(job.path)
                entries = listing.entries
            elif self.files_done and self.spec.selects_whole_subtree(job.path):
                # After complete shards every file, symlink and special file is in place and
                # every stale name is gone: only the directories are listed, the rest counted.
                listed = handle.catalog.list_directory(job.path, directories_only=True)
                entries = [e async for e in listed]
                others = await handle.catalog.count_other_children(job.path)
            else:
                share = self.shard.listing_share(job.rel) if self.shard is not None else None
                listed = handle.catalog.list_directory(job.path, content_share=share)
                entries = [e async for e in listed]
            catalog = job.progress.mountpoint if job.progress is not None else None
            passing = catalog is not None and self.passes_through(catalog)
            keep: list[str] = []
            ops: list[DirectoryOp | SymlinkOp | SpecialOp] = []
            subdirs: list[tuple[DirEntry, tuple[str, ...]]] = []
            files: list[tuple[DirEntry, tuple[str, ...]]] = []
            stale_dirs: list[tuple[str, ...]] = []
            for entry, selection in select_children(self.spec, entries):
                rel = (*job.rel, entry.name)
                keep.append(entry.name)
                if passing:  # only the way to this shard's catalogs
                    if entry.is_directory and selection.descend:
                        ops.append(DirectoryOp(rel, entry.mode, 0, 0, entry.mtime, entry.xattrs))
                        subdirs.append((entry, rel))
                    continue
                if entry.is_directory:
                    self.stats.dirs += 1
                    uid, gid = self.owner(entry.uid, entry.gid)
                    ops.append(DirectoryOp(rel, entry.mode, uid, gid, entry.mtime, entry.xattrs))
                    if job.progress is not None:
                        job.progress.dirs.append((rel, entry.mode, uid, gid, entry.mtime))
                    if selection.descend:
                        subdirs.append((entry, rel))
                    elif self.refresh.spec_changed and not entry.is_bind_mountpoint:
                        stale_dirs.append(rel)  # included alone now: drop old content
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
            if others is not None:
                self.stats.files += others.files
                self.stats.bytes += others.file_bytes
                self.stats.symlinks += others.symlinks
                self.stats.specials += others.specials
            if passing:
                assert self.link is not None
                await self._tree(make_directories, self.link.writer, ops)
            elif not self.options.dry_run:
                assert self.link is not None
                if others is not None:  # ``keep`` names the directories only: nothing removed
                    removed = await self._tree(self.link.apply_changes, job.rel, (), keep, ops)
                elif listing is None:
                    removed = await self._tree(self.link.apply_listing, job.rel, keep, ops)
                else:
                    removed = await self._tree(
                        partial(self.link.apply_changes, remove_temps=self._remove_temps),
                        job.rel,
                        listing.removed,
                        keep,
                        ops,
                    )
                self.stats.removed += removed
                for rel in stale_dirs:
                    self.stats.removed += len(await self._tree(self.link.writer.prune, rel, ()))
            if self.shard is not None:  # shards start in different subdirectories
                subdirs = self.shard.shard.walk_order(subdirs)
            for entry, rel in subdirs:
                if (
                    entry.is_nested_mountpoint
                    and self.shard is not None
                    and catalog is not None
                    and self.shard.leaves_to_another(catalog, entry.path)
                ):
                    continue
                if entry.is_nested_mountpoint:
                    ref = await handle.catalog.nested_catalog(entry.path)
                    if ref is not None and self.refresh.can_skip(
                        entry.path, ref.digest.hex, self.options.dest_base / self.settings.fqrn
                    ):
                        self._skip_catalog(entry.path)
                        continue
                    progress = None
                    if job.progress is not None:
                        digest_hex = ref.digest.hex if ref is not None else ""
                        progress = self._new_progress(entry.path, digest_hex, job.progress)
                        if progress is not None:
                            uid, gid = self.owner(entry.uid, entry.gid)
                            progress.dirs.append((rel, entry.mode, uid, gid, entry.mtime))
                    handle.acquire()  # held by the opening task until the child is open
                    opening: asyncio.Task[CatalogHandle | BaseException] | DeferredCatalog
                    if self.opener.reserve_eager_open():
                        opening = group.create_task(
                            self._open_nested(handle, entry.path, reserved=True)
                        )
                    else:
                        opening = DeferredCatalog(handle, entry.path)
                    self.walked_mountpoints.add(entry.path)
                    self._push(DirJob(entry.path, rel, opening, progress))
                elif listing is None or entry.name in listing.rewalk:
                    self._push(DirJob(entry.path, rel, handle.acquire(), job.progress))
                elif diff is not None and entry.name in listing.descend:
                    child = DirJob(entry.path, rel, handle.acquire(), job.progress, diff.acquire())
                    self._push(child)
            file_jobs: list[FileJob] = []
            if self.shard is not None:  # --shard: only the files of this shard's objects
                files = [(e, rel) for e, rel in files if self.shard.takes_entry(e, rel)]
            elif self.files_done:
                files = []
            for entry, rel in files:
                file_job = await self._file_job(handle, entry, rel)
                if file_job is None:
                    if job.progress is not None:
                        job.progress.fail()
                    continue
                if self.shard is None or self.shard.wants(file_job):
                    file_jobs.append(file_job)
            await self.fetch_stage.look_up(file_jobs)  # one executor call, not a stat each
            for file_job in file_jobs:
                if job.progress is not None and not self.options.dry_run:
                    job.progress.add()
                    self._file_progress[id(file_job)] = job.progress
                await self.q_fetch.put(file_job)
        finally:
            await handle.release()
            if diff is not None:
                await diff.release()

    def passes_through(self, mountpoint: str) -> bool:
        """Whether this run only walks through the catalog at ``mountpoint``, applying
        nothing of it (the root catalog, for a shard of a refresh split by catalog)."""
        return self.shard is not None and self.shard.passes_through(mountpoint)

    def _skip_catalog(self, mountpoint: str) -> None:
        if mountpoint not in self.skipped_mountpoints:
            self.catalogs_skipped += 1
            self.skipped_mountpoints.add(mountpoint)
            log.debug("%s: catalog unchanged, subtree skipped", mountpoint)

    async def _open_nested(
        self, parent: CatalogHandle, path: str, *, reserved: bool = False
    ) -> CatalogHandle | BaseException:
        try:
            return await self.opener.open_nested(parent.catalog, path, reserved=reserved)
        except FetchError as error:  # missing: the rest goes on (corrupt: TrustError, exit 3)
            return error
        finally:
            await parent.release()

    async def _file_job(
        self, handle: CatalogHandle, entry: DirEntry, rel: tuple[str, ...]
    ) -> FileJob | None:
        meta = self._meta(entry)
        chunks = None
        if entry.is_external and not self.settings.external_urls:
            # Reported with every failure at the end of the run (one line per file).
            self.stats.failures.append(Failure(entry.path, "", ExternalNotConfiguredError.MESSAGE))
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
        return FileJob(
            entry.path,
            rel,
            entry.size,
            entry.compressed,
            content,
            chunks,
            meta,
            name,
            external=entry.is_external,
        )

    # -- decompress-verify and link ------------------------------------------------------------
    async def _verify_stage(self) -> None:
        """Batches of small objects (verify, inflate, commit); then the refetches of those
        that failed their hash; then the link stage may stop."""
        await run_stage(
            "verify",
            None,
            self.q_verify,
            self.verify_workers,
            None,
            0,
            batch_handler=self.fetch_stage.commit_batch,
        )
        await self.fetch_stage.drain()
        await self.q_link.put(STOP)

    async def _link_batch(self, batch: list[FileJob]) -> None:
        assert self.link is not None
        counts = await self._tree(self.link.link_files, batch)
        self.stats.linked += counts["linked"] + counts["copied"]
        self.stats.unchanged += counts["unchanged"]
        for job in batch:
            progress = self._file_progress.pop(id(job), None)
            if progress is not None:
                await progress.done()


def first_shrinkwrap_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The error that ends the run, from a (nested) exception group: see ``most_serious``
    (a local storage failure that escaped as an OSError comes back as a StorageError)."""
    return most_serious(group)
