"""``--shard K/N``: one of N independent processes that together make one export.

The partition is deterministic and needs no coordination:

* a regular file belongs to the shard owning its *content* (the content hash, or the
  chunk-list digest of a chunked file): that shard fetches the object (and its copies under
  other metadata) and hard-links every path that uses it, so no shard ever waits for, or
  downloads, an object of another;
* the other entries of a directory (symlinks, special files) and the pruning of names the
  source no longer has belong to the shard owning the directory's path. It knows the whole
  new listing, so it removes only names absent from it; a file whose content changed at a
  kept name is replaced (atomically, by rename) by its content owner;
* a regular file that cannot be fetched (no hash, external) is reported by the directory
  owner, once;
* every shard creates every selected directory (idempotent; creation races are retried),
  so the parent of a link always exists in the process that makes the link.

Each shard is safe to rerun alone: it redoes its part and finds its objects committed.
Shards leave the final directory metadata and the provenance to one ordinary export with the
same arguments, run after all of them; it downloads no data object. A shard that ends
complete leaves a mark (:mod:`~shrinkwrap_async.state.shard_marks`): with the marks of all
of them, that export walks only the directories.

Several processes (one machine, or nodes sharing a file system) may write one ``.data``:
objects are written to per-process temp directories and renamed into place atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import math
import os
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shrinkwrap_async.catalogs.reader import content_share_of
from shrinkwrap_async.exitcodes import StorageError, UsageError
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.link.tree_writer import RelPath, TreeWriter
from shrinkwrap_async.pipeline.link_stage import DirectoryOp, LinkStage, SpecialOp, SymlinkOp
from shrinkwrap_async.state.lock import RunLock
from shrinkwrap_async.store.data_store import DataStore

if TYPE_CHECKING:
    from shrinkwrap_async.catalogs.entry import DirEntry
    from shrinkwrap_async.pipeline.object_fetch import FileJob
    from shrinkwrap_async.pipeline.runner import Exporter, ExportOptions

T = TypeVar("T")

STATS_FILE_ENV = "SHRINKWRAP_ASYNC_STATS_FILE"  # --workers: where a shard reports progress
# --workers: when the parent started its shards (seconds since the epoch)
SHARDS_STARTED_ENV = "SHRINKWRAP_ASYNC_SHARDS_STARTED"
# A temp name whose inode is older than the shards' start by this much is a killed run's
# (file systems stamp inodes with a clock that may lag the process's by a tick).
STALE_TEMP_MARGIN = 1.0
STATS_PERIOD = 1.0
PARENT_LOCK_ENV = "SHRINKWRAP_ASYNC_PARENT_LOCK"  # --workers: the parent holds the run lock
# --workers: a JSON file of the catalogs complete in the tree, for the shards to skip
DONE_CATALOGS_ENV = "SHRINKWRAP_ASYNC_DONE_CATALOGS"
# An export keeps two cores busy (its event loop, its object worker process), so --workers 0
# starts one shard per two usable cores; but on two or three cores it starts two, each
# committing in a thread, which measured faster there than one export with its worker
# (docs/performance.md).
CORES_PER_SHARD = 2
MAX_AUTO_WORKERS = 8  # the network of one node, and every shard walks every catalog
RACE_ERRNOS = (errno.EEXIST, errno.ENOENT, errno.ENOTEMPTY, errno.EISDIR)
# How objects and directories are split between shards; part of the shard marks' run key,
# so that shards of another split (another version) never count as complete together.
PARTITION = "objects by the first two bytes of their content hash, directories by path"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based, as Slurm's ``SLURM_ARRAY_TASK_ID``)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` with ``0 <= K < N``; raises :class:`UsageError`."""
        index_text, slash, count_text = text.partition("/")
        try:
            index, count = int(index_text), int(count_text)
        except ValueError:
            index = count = -1
        if not slash or count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard {text!r}: expected K/N with 0 <= K < N (e.g. 0/4)")
        return cls(index, count)

    def owns_object(self, content: Digest) -> bool:
        return content_share_of(content.raw, self.count) == self.index

    def owns_directory(self, rel: RelPath) -> bool:
        """The shard writing the entries of directory ``rel`` (components below the root)."""
        key = "/".join(rel).encode("utf-8", "surrogateescape")
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def walk_order(self, subdirs: list[T]) -> list[T]:
        """A directory's subdirectories rotated by K/N of their number: each shard starts
        its walk in another part of the tree. Shards walking in step would link into the
        same directories at the same time and wait for each other on their locks; the
        order of the walk changes nothing else (shared inodes get their mtime by the
        walk order of cvmfs_shrinkwrap, whatever order the links were made in)."""
        start = len(subdirs) * self.index // self.count
        return subdirs[start:] + subdirs[:start]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shard K/N``, ``--workers N`` and ``--exact`` (plan) for ``export``."""
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="do shard K (0-based) of N; after all shards, run once without --shard",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N shard processes here, then the final pass (default, or 0: one per two "
        "usable cores, two on two or three, one on one; 1: this process only)",
    )
    parser.add_argument(
        "--exact", action="store_true", help="--dry-run: list every catalog (exact objects)"
    )


class ShardDataStore(DataStore):
    """A store shared with other processes: host-qualified temp dir, no sweeping of others."""

    def __init__(self, root: Path, *, chown: bool = True) -> None:
        super().__init__(root, chown=chown)
        host = socket.gethostname().replace("/", "_")
        self.temp_dir = self.root / ".tmp" / f"{host}.{os.getpid()}"

    def sweep_stale_temps(self) -> int:
        return 0  # other shards may be writing; the final ordinary pass sweeps


class ShardLinkStage(LinkStage):
    """Writes only the directories this shard owns; creates the others' directories only."""

    def __init__(self, base: LinkStage, shard: Shard) -> None:
        super().__init__(base.writer, base.store, base.spool, base.shared_mtimes)
        self.shard = shard
        # Another shard's marker or link may be about to be renamed: temp names are kept,
        # except those older than the shards of this command (a killed run's).
        self.keep_temps_since = shards_started_at() - STALE_TEMP_MARGIN

    def apply_listing(
        self, rel: RelPath, keep: list[str], ops: list[DirectoryOp | SymlinkOp | SpecialOp]
    ) -> int:
        if not self.shard.owns_directory(rel):
            make_directories(self.writer, ops)
            return 0
        for attempt in (1, 2):
            try:
                return super().apply_listing(rel, keep, ops)
            except StorageError as error:  # another shard made a subdirectory meanwhile
                if attempt == 2 or not is_race(error):
                    raise
        raise AssertionError("unreachable")

    def finish_directories(self) -> int:
        return 0  # the final ordinary pass sets modes, owners and mtimes


def shards_started_at() -> float:
    """When the ``--workers`` parent started this command's shards; infinity for a shard
    of ``--shard K/N`` started on its own (its siblings may have started at any time)."""
    try:
        return float(os.environ[SHARDS_STARTED_ENV])
    except (KeyError, ValueError):
        return math.inf


def is_race(error: StorageError) -> bool:
    cause = error.__cause__
    return isinstance(cause, OSError) and cause.errno in RACE_ERRNOS


def make_directories(
    writer: TreeWriter, ops: Sequence[DirectoryOp | SymlinkOp | SpecialOp]
) -> None:
    """The directories among ``ops``, made where missing, nothing else of them (their
    metadata is the final pass's); another shard may be making the same ones."""
    for op in ops:
        if not isinstance(op, DirectoryOp):
            continue
        for attempt in (1, 2):
            try:
                writer.make_directory(op.rel, op.xattrs)
                break
            except StorageError as error:
                if attempt == 2 or not is_race(error):
                    raise


class ShardRun:
    """The runner's view of a shard: which entries and file jobs it takes."""

    def __init__(self, shard: Shard, exporter: Exporter) -> None:
        self.shard = shard
        self.exporter = exporter
        # Shards diff no catalog (a diff describes whole catalogs); they only skip those
        # their parent records complete (a resumed export).
        exporter.store = ShardDataStore(exporter.options.store_root)
        self._reporter: threading.Thread | None = None
        stats_file = os.environ.get(STATS_FILE_ENV)
        if stats_file:
            self._start_reporter(Path(stats_file))

    def link_stage(self, base: LinkStage) -> LinkStage:
        return ShardLinkStage(base, self.shard)

    def passes_through(self, catalog: str) -> bool:
        """Whether this shard only walks through the catalog at ``catalog`` (mountpoint),
        applying nothing of it: never for shards that split files."""
        return False

    def leaves_to_another(self, catalog: str, nested: str) -> bool:
        """Whether the catalog at ``nested``, nested in ``catalog``, is another process's to
        export: never for shards that split files (they walk every catalog)."""
        return False

    def listing_share(self, rel: RelPath) -> tuple[int, int] | None:
        """What to list of directory ``rel``: all of it where this shard writes it (its
        symlinks, special files and the names to keep), else, as (index, count), its
        subdirectories and the files this shard fetches, leaving out in SQLite the many
        regular files of other shards' objects."""
        shard = self.shard
        return None if shard.owns_directory(rel) else (shard.index, shard.count)

    def takes_entry(self, entry: DirEntry, rel: RelPath) -> bool:
        """Whether to make a file job of regular file ``entry`` at all (a cheap first cut:
        a chunked file's content is its chunk list, known only from the job). A file that
        cannot be fetched (external without CVMFS_EXTERNAL_URL, or no hash) is a failure,
        reported once, by the directory's owner."""
        unfetchable = entry.is_external and not self.exporter.settings.external_urls
        if unfetchable or (entry.content_hash is None and not entry.is_chunked):
            return self.shard.owns_directory(rel[:-1])
        if entry.is_chunked:
            return True
        assert entry.content_hash is not None
        return self.shard.owns_object(entry.content_hash)

    def wants(self, job: FileJob) -> bool:
        """Whether this shard fetches ``job``'s object and links ``job``: decided by
        :meth:`takes_entry` already, except for a chunked file (its content is its chunk
        list, known only from the job)."""
        return job.chunks is None or self.shard.owns_object(job.content)

    def _start_reporter(self, path: Path) -> None:
        stop = threading.Event()

        def report() -> None:
            while not stop.wait(STATS_PERIOD):
                write_stats_file(path, self.exporter.stats)

        self._reporter = threading.Thread(target=report, name="shard-stats", daemon=True)
        self._reporter.start()


def write_stats_file(path: Path, stats: Any) -> None:
    data = {k: v for k, v in asdict(stats).items() if isinstance(v, int | float)}
    temp = path.with_name(path.name + ".tmp")
    try:
        temp.write_text(json.dumps(data))
        temp.replace(path)
    except OSError:
        pass  # progress only


def shard_run(options: ExportOptions, exporter: Exporter) -> ShardRun | None:
    """The shard hooks for ``exporter`` when ``options.extra["shard"]`` is set: those of a
    refresh split by catalog when its parent made such a split (``catalog_split``)."""
    shard = options.extra.get("shard")
    if shard is None:
        return None
    split = options.extra.get("catalog_split")
    if split is not None:
        from shrinkwrap_async.pipeline.catalog_shards import CatalogShardRun

        return CatalogShardRun(shard, exporter, split)
    return ShardRun(shard, exporter)


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def under_workers_parent() -> bool:
    """Whether this process is a shard started by ``export --workers`` (forked or not)."""
    return os.environ.get(PARENT_LOCK_ENV) == str(os.getppid())


# The root a ``--workers`` parent verified, set while it forks its shards: a forked shard
# exports exactly that revision (as does the parent's final pass), however often the
# repository is published meanwhile. A shard started as a new program verifies its own.
_root_for_forks: Any = None


@contextlib.contextmanager
def root_for_forks(trusted: Any) -> Iterator[None]:
    """While the shards are forked: they inherit ``trusted`` (a ``TrustedRoot``)."""
    global _root_for_forks
    _root_for_forks = trusted
    try:
        yield
    finally:
        _root_for_forks = None


def root_from_parent(fqrn: str) -> Any:
    """The root this forked shard's parent verified for ``fqrn``, if it is one."""
    root = _root_for_forks
    if root is not None and root.fqrn == fqrn and under_workers_parent():
        return root
    return None


def write_for_shards(path: Path, fqrn: str, data: dict[str, Any]) -> None:
    """What a ``--workers`` parent hands its shards, in a JSON file that an environment
    variable names (forked and spawned shards alike read it: :func:`read_from_parent`)."""
    path.write_text(json.dumps({"fqrn": fqrn, **data}), encoding="utf-8")


def read_from_parent(env: str, fqrn: str) -> dict[str, Any] | None:
    """What this shard's ``--workers`` parent wrote for it (:func:`write_for_shards`) in the
    file ``env`` names; None for a shard of no such parent, another repository, or a file
    that cannot be read."""
    path = os.environ.get(env)
    if not path or not under_workers_parent():
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("fqrn") == fqrn else None


def write_done_catalogs(path: Path, fqrn: str, catalogs: dict[str, str]) -> None:
    """For the shards of a resumed export: the catalogs the state database records as
    complete in the tree (mountpoint -> hash), which they skip as the final pass does."""
    write_for_shards(path, fqrn, {"catalogs": catalogs})


def done_by_parent(fqrn: str) -> dict[str, str]:
    """The catalogs complete in the tree that this shard's ``--workers`` parent passed on
    (:func:`write_done_catalogs`); none otherwise, or if they cannot be read: the shard then
    walks them again, which is slower, never wrong. A shard that verified another root
    than its parent's may skip them too: a catalog is skipped only where its hash is the
    one recorded, and the same hash means the same subtree."""
    data = read_from_parent(DONE_CATALOGS_ENV, fqrn)
    try:
        catalogs = data["catalogs"] if data is not None else {}
        return {str(mountpoint): str(digest) for mountpoint, digest in catalogs.items()}
    except (KeyError, TypeError, AttributeError):
        return {}


def stop_with_workers_parent() -> None:
    """A shard of ``--workers`` gets SIGTERM if its parent dies (it holds the run lock for
    the shards): killed outright, it would otherwise leave its shards writing on alone."""
    from shrinkwrap_async.runtime import die_with_parent

    if under_workers_parent() and not die_with_parent(os.getppid(), signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)  # it died before the kernel was told


def run_lock(lock: Any, args: argparse.Namespace, *, held: bool = False) -> Any:
    """The run lock to hold: none when the caller ``held`` it already, or under a
    ``--workers`` parent (which holds it for all). A standalone shard takes the lock shared,
    so shards run together but exclude an ordinary export and gc, which take it
    exclusively."""
    if held or under_workers_parent():
        return _NoLock()
    if args.shard:
        return RunLock(lock.path, wait=lock.wait, shared=True)
    return lock


def auto_workers() -> int:
    """``--workers`` by default (or 0): one shard per ``CORES_PER_SHARD`` usable cores
    (affinity mask and cgroup quota), at least 2 where there are two cores (1 on one), at
    most ``MAX_AUTO_WORKERS``."""
    from shrinkwrap_async.runtime import cpu_count

    cores = cpu_count()
    return max(min(2, cores), min(MAX_AUTO_WORKERS, cores // CORES_PER_SHARD))


def run_elsewhere(args: argparse.Namespace, settings: Any, spec: Any, dest_base: Path) -> int:
    """``export --dry-run`` (the plan) and ``export --workers N`` (N shard processes)."""
    from shrinkwrap_async.commands import export
    from shrinkwrap_async.runtime import run_async

    if args.dry_run:
        from shrinkwrap_async.pipeline import plan

        made = run_async(
            plan.make_plan(
                settings,
                spec,
                dest_base=dest_base,
                dest_cache=export.dest_cache(args),
                exact=args.exact,
            )
        )
        return plan.report(made, json_output=args.json, quiet=args.quiet)
    if args.shard and args.workers not in (None, 1):
        raise UsageError("--shard runs one shard; give --workers only without --shard")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers {args.workers}: expected a number of processes (0 = auto)")
    workers = 1 if args.shard else args.workers or auto_workers()
    if args.threads:  # -j is the whole command's: no more shards than requests in flight
        workers = min(workers, args.threads)
    if workers == 1:  # one process: the ordinary export
        args.workers = 1
        return int(export.run_loaded(args, settings, spec, dest_base))
    from shrinkwrap_async.pipeline.workers import run_workers
    from shrinkwrap_async.state.lock import RunLock

    lock = RunLock.for_destination(dest_base, lock_file=args.lock_file, wait=args.lock_wait)
    with lock:
        export.start_changes(args)
        os.environ[PARENT_LOCK_ENV] = str(os.getpid())
        try:
            return run_workers(args, spec, workers, settings=settings, dest_base=dest_base)
        finally:
            os.environ.pop(PARENT_LOCK_ENV, None)
