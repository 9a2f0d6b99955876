"""Link stage: everything that touches the visible tree, on one I/O thread, in batches.

Directory listings (prune what the source no longer has, make subdirectories, symlinks and
special files) and hard links of regular files to committed objects all go through
:class:`TreeWriter` on a single-thread executor, so tree operations never race each other.
"""

from __future__ import annotations

import stat as stat_module
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shrinkwrap_async.exitcodes import UnsafePathError
from shrinkwrap_async.link.directory_spool import DirectorySpool
from shrinkwrap_async.link.shared_mtimes import LinkRow, SharedMtimes, walk_order_key
from shrinkwrap_async.link.tree_writer import RelPath, TreeWriter
from shrinkwrap_async.store.data_store import DataStore

if TYPE_CHECKING:
    from shrinkwrap_async.pipeline.object_fetch import FileJob


@dataclass(slots=True)
class DirectoryOp:
    rel: RelPath
    mode: int
    uid: int
    gid: int
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...]


@dataclass(slots=True)
class SymlinkOp:
    rel: RelPath
    target: str
    mtime: int


@dataclass(slots=True)
class SpecialOp:
    rel: RelPath
    mode: int
    rdev: int
    uid: int
    gid: int
    mtime: int


class LinkStage:
    # Temp names changed since this time are left alone when pruning (shards: another
    # process may be about to rename them); None: every temp name is pruned.
    keep_temps_since: float | None = None

    def __init__(
        self,
        writer: TreeWriter,
        store: DataStore,
        spool: DirectorySpool,
        shared_mtimes: SharedMtimes,
    ) -> None:
        self.writer = writer
        self.store = store
        self.spool = spool
        self.shared_mtimes = shared_mtimes

    def apply_listing(
        self, rel: RelPath, keep: list[str], ops: list[DirectoryOp | SymlinkOp | SpecialOp]
    ) -> int:
        """One directory's non-file entries; returns how many entries were removed.

        ``keep`` names every selected entry of the listing (files too): a name given twice
        is refused as hostile before anything in the directory is touched.
        """
        refuse_duplicate_names(rel, keep)
        removed = len(self.writer.prune(rel, keep, keep_temps_since=self.keep_temps_since))
        self._make_entries(ops)
        return removed

    def apply_changes(
        self,
        rel: RelPath,
        removed: Sequence[str],
        keep: list[str],
        ops: Sequence[DirectoryOp | SymlinkOp | SpecialOp],
        *,
        remove_temps: bool = False,
    ) -> int:
        """One directory's part of a catalog diff (``pipeline.refresh``): unlink what the
        diff says was removed (whole subtrees, as pruning does) and, with ``remove_temps``,
        this tool's temp names (a run killed while it replaced an entry here leaves one,
        and the diff would never list it), then make the changed non-file entries. Nothing
        else in the directory is touched. Returns how many entries were removed; ``keep``
        is checked as in :meth:`apply_listing`.
        """
        refuse_duplicate_names(rel, keep)
        count = 0
        for name in removed:
            if self.writer.remove((*rel, name)):
                count += 1
        if remove_temps:
            count += len(self.writer.remove_temps(rel))
        self._make_entries(ops)
        return count

    def _make_entries(self, ops: Iterable[DirectoryOp | SymlinkOp | SpecialOp]) -> None:
        """Make directories (queued for their final metadata), symlinks and special files
        (devices that cannot be made without privilege are counted by the writer)."""
        for op in ops:
            if isinstance(op, DirectoryOp):
                self.writer.make_directory(op.rel, op.xattrs)
                self.spool.add(op.rel, op.mode, op.uid, op.gid, op.mtime)
            elif isinstance(op, SymlinkOp):
                self.writer.make_symlink(op.rel, op.target, op.mtime)
            else:
                self.writer.make_special(op.rel, op.mode, op.rdev, op.uid, op.gid, op.mtime)

    def link_files(self, jobs: list[FileJob]) -> dict[str, int]:
        """Hard-link each file to its object (recorded for :meth:`finish_shared_mtimes`)."""
        counts = {"linked": 0, "unchanged": 0, "copied": 0}
        rows: list[LinkRow] = []
        store_fd = self.store.root_fd
        for job in jobs:
            result = self.writer.link_object(job.rel, job.name, source_dir_fd=store_fd)
            counts[result] += 1
            if result != "copied":  # a copy is an inode of its own
                rows.append((job.name, walk_order_key(job.rel), job.meta.mtime, job.created))
        self.shared_mtimes.add(rows)
        return counts

    def finish_shared_mtimes(self) -> int:
        """Each object this run created and linked from paths of different mtimes gets the
        mtime cvmfs_shrinkwrap gives it (see ``shared_mtimes``). Returns how many changed."""
        return sum(
            self.store.set_mtime(name, mtime) for name, mtime in self.shared_mtimes.first_in_walk()
        )

    def finish_directories(self) -> int:
        """Final mode, owner, mtime of every directory, deepest first (after all content)."""
        count = 0
        for rel, mode, uid, gid, mtime in self.spool.deepest_first():
            self.writer.set_directory_metadata(rel, stat_module.S_IMODE(mode), uid, gid, mtime)
            count += 1
        return count


def refuse_duplicate_names(rel: RelPath, names: Iterable[str]) -> None:
    """Two entries of one name in one listing (e.g. a symlink and a directory) are not a
    tree: merging them would let one write through the other. Raises UnsafePathError."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            where = "/" + "/".join((*rel, name))
            raise UnsafePathError(f"refusing {where!r}: two entries of this name in one directory")
        seen.add(name)
