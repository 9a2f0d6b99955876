"""Incremental refresh: what the previous runs left in the tree, and what changed since.

The state database (``state/db.py``) remembers, per repository, the last completed export
(root hash, spec digest) and every catalog whose subtree is fully in the tree
(mountpoint → catalog hash). From that:

- the same root hash and spec as the last completed export: nothing to do (the run ends
  after the whitelist and manifest requests);
- otherwise a nested catalog whose hash equals the one applied at its mountpoint, under the
  same spec, is skipped with its whole subtree, unlisted and unfetched: a catalog's hash
  covers its entries and the hashes of its own nested catalogs, so an equal hash means an
  equal subtree.
- a changed catalog whose applied version is still in the catalog cache is *diffed*
  (:class:`CatalogDiff`): the rows of both versions are compared inside SQLite, and only
  the directories that contain a change are visited; added and changed entries are made
  and linked, removed ones unlinked, and the directories on the way get their metadata
  again (their mtimes follow the new revision). Everything else is neither listed nor
  stat'ed. Without the applied version in the cache the catalog is walked against the tree
  as on a first export (prune what is gone, link what is new; a linked file costs a stat).
- a spec change forgets every applied catalog: the next run walks everything the new spec
  selects and prunes what it no longer selects.

A diff is only as good as the claim "this subtree holds the applied version, plus perhaps
part of the way to the target". Two things would break that claim, so they are handled
here: a run that stopped (crash, signal) on the way to *another* root hash than this run's
leaves an unknown part of the tree at that other revision, so every applied catalog is
forgotten and the tree is walked (:func:`plan_refresh`); a run that finished with failures
forgets the catalogs whose subtree failed (the runner calls :meth:`StateDB.forget_catalogs`
for :attr:`Exporter.failed_mountpoints`).

:class:`CatalogProgress` counts the outstanding work of one catalog's subtree (directory
listings, files, nested catalogs) so that a catalog is recorded as applied as soon as its
subtree is complete without failures; after a crash the next run skips those catalogs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shrinkwrap_async.catalogs.entry import (
    ENTRY_COLUMNS,
    CatalogError,
    DirEntry,
    entry_from_row,
    md5path,
)
from shrinkwrap_async.catalogs.pages import rows_to_compare
from shrinkwrap_async.catalogs.schema import Flag
from shrinkwrap_async.exitcodes import UnsafePathError
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.link.tree_writer import MARKER_NAME, validate_name
from shrinkwrap_async.pipeline.catalog_fetch import SharedByJobs
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.db import ABORTED, RUNNING, ExportRecord, StateDB

if TYPE_CHECKING:
    from shrinkwrap_async.catalogs.reader import Catalog
    from shrinkwrap_async.pipeline.blocking_calls import BlockingCalls

log = logging.getLogger(__name__)

T = TypeVar("T")

DirMeta = tuple[tuple[str, ...], int, int, int, int]  # rel, mode, uid, gid, mtime
# A difference by parent directory (md5path key): (changed rows, removed rows)
DiffRows = dict[tuple[int, int], tuple[list[tuple], list[tuple]]]  # type: ignore[type-arg]

UNFINISHED = (RUNNING, ABORTED)  # a run in this state may have left any part half-done


@dataclass
class RefreshPlan:
    """What the previous runs tell this run of ``fqrn``."""

    up_to_date: bool = False  # same root hash and spec as the last completed export
    spec_changed: bool = True  # no previous run, or a different spec: walk and prune all
    applied: dict[str, str] = field(default_factory=dict)  # mountpoint → catalog hash
    # The last run did not finish: the directories it was changing may hold its temp names.
    after_unfinished: bool = False
    # No export of another root hash ever completed here: the catalogs recorded are those
    # of runs towards this root (a resumed export), to skip; none has an older version.
    resumes_root: bool = False
    # The destination holds a newer revision than the one offered (a stale mirror or proxy,
    # or a replayed manifest): it is kept, as the client keeps its newer cached revision.
    kept: ExportRecord | None = None

    def can_skip(self, mountpoint: str, digest_hex: str, tree_root: Path) -> bool:
        """Whether the catalog ``digest_hex`` at ``mountpoint`` is already in the tree."""
        if self.applied.get(mountpoint) != digest_hex:
            return False
        return (tree_root / mountpoint.lstrip("/")).is_dir()

    def previous(self, mountpoint: str, digest_hex: str) -> str | None:
        """The applied hash at ``mountpoint`` when it differs from ``digest_hex``: the
        version a diff starts from."""
        if self.spec_changed:
            return None
        applied = self.applied.get(mountpoint)
        return applied if applied is not None and applied != digest_hex else None


def may_go_back(allow_older_revision: bool, trusted: Any) -> bool:
    """Whether a revision older than the one exported is applied: when asked for
    (``--allow-older-revision``), or when the configuration pins it (a tag, a date)."""
    return allow_older_revision or getattr(trusted, "pinned", None) is not None


def keeps_newer(last: ExportRecord | None, revision: int, going_back_allowed: bool) -> bool:
    """Whether the completed export ``last`` is kept rather than ``revision`` applied."""
    return last is not None and revision < last.revision and not going_back_allowed


async def plan_refresh(
    db: StateDB,
    fqrn: str,
    *,
    root_hash: str,
    revision: int,
    spec_digest: str,
    tree_root: Path,
    allow_older: bool = False,
) -> RefreshPlan:
    """Read the state database; forget applied catalogs that cannot be trusted any more
    (recorded under another spec, or a run towards another root hash stopped half-way).
    A ``revision`` older than the last completed export's is not applied (``kept``)
    unless ``allow_older``."""
    last = await db.last_export(fqrn)
    latest = await db.latest_run(fqrn)
    tree_present = tree_root.is_dir()
    if (
        last is not None
        and tree_present
        and last.root_hash == root_hash
        and last.spec_digest == spec_digest
        and (latest is None or latest.status == "succeeded")
    ):
        return RefreshPlan(up_to_date=True, spec_changed=False)
    if tree_present and keeps_newer(last, revision, allow_older):
        return RefreshPlan(up_to_date=True, spec_changed=False, kept=last)
    previous_spec = latest.spec_digest if latest is not None else None
    if previous_spec != spec_digest or not tree_present:
        await _forget_all(db, fqrn)
        return RefreshPlan(spec_changed=True)
    if latest is not None and latest.status in UNFINISHED and latest.root_hash != root_hash:
        # Some catalogs of that run are half-way to its revision; which ones is not known.
        log.info("the last run towards %s did not finish: walking the whole tree", latest.root_hash)
        await _forget_all(db, fqrn)
        return RefreshPlan(spec_changed=False)
    return RefreshPlan(
        spec_changed=False,
        applied=await db.applied_catalogs(fqrn),
        after_unfinished=latest is not None and latest.status in UNFINISHED,
        resumes_root=last is None or last.root_hash == root_hash,
    )


async def _forget_all(db: StateDB, fqrn: str) -> None:
    applied = await db.applied_catalogs(fqrn)
    if applied:
        await db.forget_catalogs(fqrn, applied)


CompletionCallback = Callable[["CatalogProgress"], Awaitable[None]]


class CatalogProgress:
    """Outstanding work of one catalog's subtree; calls ``on_complete`` when it drains.

    ``add`` before queueing a piece of work that belongs to the catalog (a directory
    listing, a file, a nested catalog), ``done`` when it is finished (``failed`` if it did
    not make it into the tree). A nested catalog counts as one piece of its parent until
    its own subtree is complete; a failure anywhere below marks every ancestor failed, so
    only catalogs whose whole subtree is in the tree are recorded.
    """

    def __init__(
        self,
        mountpoint: str,
        digest_hex: str,
        parent: CatalogProgress | None,
        on_complete: CompletionCallback,
    ) -> None:
        self.mountpoint = mountpoint
        self.digest_hex = digest_hex
        self.parent = parent
        self.on_complete = on_complete
        self.pending = 0
        self.failed = False
        self.completed = False
        self.dirs: list[DirMeta] = []  # directories to finalise when the subtree is done
        if parent is not None:
            parent.add()

    def add(self, count: int = 1) -> None:
        self.pending += count

    def fail(self) -> None:
        self.failed = True

    async def done(self, *, failed: bool = False) -> None:
        if failed:
            self.failed = True
        self.pending -= 1
        if self.pending == 0 and not self.completed:
            self.completed = True
            await self.on_complete(self)
            if self.parent is not None:
                await self.parent.done(failed=self.failed)


# -- diffing a changed catalog against its applied version ----------------------------------

_CHANGED, _REMOVED, _NESTED, _ADDED = 1, 2, 3, 4  # kinds of rows in the ``changes`` table
_KEY = ("md5path_1", "md5path_2")


class DiffUnavailable(Exception):
    """The two versions cannot be compared (schema differs, old file unreadable): walk."""


@dataclass(slots=True)
class DiffListing:
    """The part of one directory's listing that a diff visits.

    ``entries``: children added or changed, and directories with a change somewhere below
    (their metadata is applied again, so their mtimes follow), in name byte order.
    ``descend``: names of those directories to visit in turn. ``rewalk``: directories that
    were nested catalogs in the applied version and are not any more (merged into this
    catalog): their content came from another catalog, so they are walked in full.
    ``removed``: names of children the applied version had and this one has not, already
    filtered by the spec.
    """

    entries: list[DirEntry]
    descend: set[str]
    rewalk: set[str]
    removed: list[str]


def _sqlite_uri(path: Path) -> str:
    quoted = urllib.parse.quote(str(path.absolute()), safe="/")
    return f"file:{quoted}?mode=ro&immutable=1"


def _decode_text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _columns(db: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [str(row[1]) for row in db.execute(f"PRAGMA {schema}.table_info({table})")]


class CatalogDiff(SharedByJobs):
    """The rows that differ between catalog ``old_path`` (applied) and ``new_path``.

    One SQLite connection reads the new catalog with the old one attached (both read-only);
    the differences go to temporary tables: ``changes`` (rows added or changed, rows
    removed, nested catalogs to visit, each with its parent) and ``dirty`` (every directory
    of the new version with a change below it, with its parent). :meth:`children` then
    answers, per directory, from those tables alone.
    Shared by the directory jobs of one catalog: ``acquire``/``release``, closed with the
    last release. Queries run one at a time: through ``calls`` (inline on the loop while
    quick, else on its thread: ``pipeline.blocking_calls``; a query on another thread
    contends for the GIL with a busy loop at every row), or on a worker thread without it.

    A small difference (the usual refresh: a few hundred rows of a catalog) is read whole
    when the diff opens, grouped by directory, if ``budget`` has room for its rows: a
    directory's answer then costs no query and no trip to a thread. A large one is queried
    directory by directory, so memory stays bounded by the budget, not by the change.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        mountpoint: str,
        spec: Spec,
        *,
        has_xattr: bool,
        budget: RowBudget | None = None,
        calls: BlockingCalls | None = None,
    ) -> None:
        self._db = connection
        self._calls = calls
        self.mountpoint = mountpoint
        self.spec = spec
        super().__init__(references=1)
        self.skipped: list[str] = []  # unchanged nested catalogs the diff does not visit
        self._lock = asyncio.Lock()
        self._budget = budget
        self._held_rows = 0  # rows of ``budget`` this diff holds while preloaded
        # (parent_1, parent_2) -> (changed rows, removed rows), when read whole.
        self._preloaded: DiffRows | None = None
        columns = ", ".join(
            "NULL" if c == "xattr" and not has_xattr else f"n.{c}" for c in ENTRY_COLUMNS
        )
        # The changed and removed rows of the difference, each led by its parent's key, in
        # name order per parent: of one directory (``?1``, ``?2``), or of all of them.
        self._sql_changed, self._sql_removed = _difference_queries(columns, _ONE_PARENT)
        self._sql_all_changed, self._sql_all_removed = _difference_queries(columns, "")

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        new_path: Path,
        old_path: Path,
        mountpoint: str,
        spec: Spec,
        *,
        can_skip: Callable[[str, str], bool],
        budget: RowBudget | None = None,
        calls: BlockingCalls | None = None,
    ) -> CatalogDiff:
        """Compare the two versions; raises :class:`DiffUnavailable` when they cannot be.

        ``can_skip(mountpoint, digest_hex)`` tells whether a nested catalog of the new
        version is already in the tree: those are recorded in :attr:`skipped` (when the
        spec reaches them) and not visited; the others are. ``budget``: rows the diff may
        read whole (none: it is queried directory by directory). ``calls``: where the
        queries run (see the class).
        """
        try:
            connection = await _call(calls, _connect, new_path, old_path, mountpoint)
        except (sqlite3.Error, OSError) as error:
            raise DiffUnavailable(str(error)) from error
        has_xattr = "xattr" in _columns(connection, "main", "catalog")
        diff = cls(connection, mountpoint, spec, has_xattr=has_xattr, budget=budget, calls=calls)
        try:
            new_nested, old_nested = await diff._run(_find_changes, connection, new_path, old_path)
            visit = diff._nested_to_visit(new_nested, old_nested, can_skip)
            rows = await diff._run(_mark_dirty, connection, visit)
            if budget is not None and budget.take(rows):  # on the loop: budgets are shared
                diff._held_rows = rows
                diff._preloaded = await diff._run(diff._read, None)
        except sqlite3.Error as error:
            await diff.close()
            raise DiffUnavailable(str(error)) from error
        except BaseException:
            await diff.close()
            raise
        return diff

    @property
    def read_whole(self) -> bool:
        """Whether the difference was read whole when the diff opened."""
        return self._preloaded is not None

    def _nested_to_visit(
        self,
        new_nested: list[tuple[str, str]],
        old_nested: set[str],
        can_skip: Callable[[str, str], bool],
    ) -> list[str]:
        """Nested catalogs of the new version the diff must reach; the others are skipped.

        A nested catalog below a directory that was a nested catalog before and is merged
        now is left to the full walk of that directory.
        """
        merged = old_nested - {path for path, _ in new_nested}
        visit = []
        for path, digest_hex in new_nested:
            if any(path.startswith(top + "/") for top in merged):
                continue
            if not can_skip(path, digest_hex):
                visit.append(path)
            elif self._spec_reaches(path):
                self.skipped.append(path)
        return visit

    def _spec_reaches(self, path: str) -> bool:
        """Whether the walk would descend from this catalog's root down into ``path``."""
        current = self.mountpoint
        for part in path[len(self.mountpoint) + 1 :].split("/"):
            current = f"{current}/{part}"
            if not self.spec.select(current, is_directory=True).descend:
                return False
        return True

    # -- queries ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        async with self._lock:
            if self.closed:
                raise RuntimeError("catalog diff used after close")
            return await _call(self._calls, fn, *args)

    def _read(self, parent: tuple[int, int] | None) -> DiffRows:
        """The difference in directory ``parent`` (its key), or in all of them (None), by
        parent directory: (changed rows, removed rows)."""
        if parent is None:
            queries = ((self._sql_all_changed, ()), (self._sql_all_removed, ()))
        else:
            queries = ((self._sql_changed, parent), (self._sql_removed, parent))
        by_parent: DiffRows = {}
        for index, (sql, parameters) in enumerate(queries):
            for row in self._db.execute(sql, parameters):
                by_parent.setdefault((row[0], row[1]), ([], []))[index].append(row[2:])
        return by_parent

    async def children(self, directory: str) -> DiffListing:
        """What changed directly in ``directory`` (a directory of this catalog)."""
        key = md5path(directory)
        try:
            if self._preloaded is not None:
                if self.closed:
                    raise RuntimeError("catalog diff used after close")
                read = self._preloaded
            else:
                read = await self._run(self._read, key)
            rows, removed_rows = read.get(key, ((), ()))
        except sqlite3.Error as error:
            raise CatalogError(
                f"catalog of {self.mountpoint or '/'}: cannot compare versions: {error}"
            ) from error
        prefix = directory + "/"
        entries: list[DirEntry] = []
        descend: set[str] = set()
        rewalk: set[str] = set()
        for row in rows:
            entry = entry_from_row(prefix + _as_name(row[0]), row[:11])
            if md5path(entry.path) != row[13:15]:
                # A full listing refuses two entries of one name; a diff sees only the
                # changed one, and a row keyed as another path is how a catalog holds both.
                raise UnsafePathError(
                    f"refusing {entry.path!r}: its catalog row is keyed as another path "
                    "(a second entry of this name?)"
                )
            entries.append(entry)
            dirty, old_flags = row[11], row[12]
            if not entry.is_directory or entry.is_nested_mountpoint:
                continue
            if old_flags is not None and old_flags & Flag.NESTED_MOUNTPOINT:
                rewalk.add(entry.name)
            elif dirty:
                descend.add(entry.name)
        removed = []
        for raw_name, mode, flags in removed_rows:
            name = validate_name(_as_name(raw_name))
            if flags & Flag.HIDDEN or (directory == "" and name == MARKER_NAME):
                continue
            is_directory = bool(flags & Flag.DIR) or (mode or 0) & 0o170000 == 0o040000
            selection = self.spec.select(prefix + name, is_directory=is_directory)
            if selection.include or selection.descend:
                removed.append(name)
        return DiffListing(entries, descend, rewalk, removed)

    # -- lifetime --------------------------------------------------------------------------
    async def close(self) -> None:
        async with self._lock:
            if not self.closed:
                self.closed = True
                self._preloaded = None
                if self._budget is not None:
                    self._budget.give(self._held_rows)
                    self._held_rows = 0
                await _call(self._calls, self._db.close)


async def _call(calls: BlockingCalls | None, fn: Callable[..., T], *args: object) -> T:
    if calls is None:
        return await asyncio.to_thread(fn, *args)
    return await calls.run(fn, *args)


_ONE_PARENT = " AND p1 = ?1 AND p2 = ?2"


def _difference_queries(columns: str, parent: str) -> tuple[str, str]:
    """The queries of the changed rows (with whether a change lies below, the flags the
    row had, and its path's key) and of the removed rows (name, mode, flags), each row led
    by its parent's key; ``parent`` narrows both to one directory (:data:`_ONE_PARENT`) or
    is empty."""
    changed = (
        f"SELECT x.p1, x.p2, {columns}, max(x.dirty), o.flags, x.m1, x.m2 FROM ("
        f" SELECT p1, p2, m1, m2, 0 AS dirty FROM temp.changes WHERE kind != {_REMOVED}{parent}"
        f" UNION ALL SELECT p1, p2, m1, m2, 1 FROM temp.dirty WHERE 1{parent}) x"
        " JOIN main.catalog n ON n.md5path_1 = x.m1 AND n.md5path_2 = x.m2"
        " LEFT JOIN old.catalog o ON o.md5path_1 = x.m1 AND o.md5path_2 = x.m2"
        " GROUP BY x.m1, x.m2 ORDER BY x.p1, x.p2, n.name"
    )
    removed = (
        "SELECT c.p1, c.p2, o.name, o.mode, o.flags FROM temp.changes c"
        " JOIN old.catalog o ON o.md5path_1 = c.m1 AND o.md5path_2 = c.m2"
        f" WHERE c.kind = {_REMOVED}{parent} ORDER BY c.p1, c.p2, o.name"
    )
    return changed, removed


def _as_name(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _connect(new_path: Path, old_path: Path, mountpoint: str) -> sqlite3.Connection:
    """The new catalog with the old one attached as ``old``, both read-only, checked to
    have the same catalog and chunk columns and the same root."""
    if not old_path.is_file():
        raise DiffUnavailable(f"{old_path} is not in the catalog cache")
    db = sqlite3.connect(_sqlite_uri(new_path), uri=True, check_same_thread=False)
    try:
        db.text_factory = _decode_text
        db.execute("ATTACH DATABASE ? AS old", (_sqlite_uri(old_path),))
        for table in ("catalog", "chunks", "nested_catalogs"):
            if _columns(db, "main", table) != _columns(db, "old", table):
                raise DiffUnavailable(f"the {table} tables of the two versions differ")
        if not _columns(db, "main", "catalog"):
            raise DiffUnavailable("no catalog table")
        prefixes = [
            db.execute(
                f"SELECT value FROM {schema}.properties WHERE key = 'root_prefix'"
            ).fetchone()
            for schema in ("main", "old")
        ]
        roots = {"" if p is None or p[0] in (None, "", "/") else str(p[0]) for p in prefixes}
        if roots != {mountpoint}:
            raise DiffUnavailable(f"the two versions are not both catalogs of {mountpoint!r}")
    except BaseException:
        db.close()
        raise
    return db


def _find_changes(
    db: sqlite3.Connection, new_path: Path | None = None, old_path: Path | None = None
) -> tuple[list[tuple[str, str]], set[str]]:
    """Fill ``temp.changes``; returns the nested catalogs of the new and the old version.
    With the two files' paths, only the rows of the pages that differ are compared
    (:func:`catalogs.pages.rows_to_compare`)."""
    columns = _columns(db, "main", "catalog")
    compared = " OR ".join(f"o.{c} IS NOT n.{c}" for c in columns if c not in _KEY)
    db.executescript(
        "CREATE TEMP TABLE changes (m1 INTEGER, m2 INTEGER, p1 INTEGER, p2 INTEGER,"
        " kind INTEGER, PRIMARY KEY (m1, m2)) WITHOUT ROWID;"
        "CREATE TEMP TABLE dirty (m1 INTEGER, m2 INTEGER, p1 INTEGER, p2 INTEGER,"
        " PRIMARY KEY (m1, m2)) WITHOUT ROWID;"
    )
    # Added or changed rows (a type change keeps the path, so it is a change). A new
    # version is the old catalog file changed in place, so an unchanged row mostly keeps
    # its rowid: a row equal in every column to the old row of its rowid is unchanged
    # (paths are unique), found by one rowid look-up. Only the others are looked up by path.
    # Rows on pages equal in both files (see catalogs.pages) are not compared at all.
    differs = " OR ".join(f"s.{c} IS NOT c.{c}" for c in columns)
    compare = None
    if new_path is not None and old_path is not None:
        compare = rows_to_compare(db, new_path, old_path)
    new_side = "main.catalog c"
    if compare is not None:
        new_side = _rows_in_ranges(db, "compared", "main.catalog c", compare.ranges)
    db.execute(
        f"INSERT INTO temp.changes SELECT n.md5path_1, n.md5path_2, n.parent_1, n.parent_2, "
        f"CASE WHEN o.md5path_1 IS NULL THEN {_ADDED} ELSE {_CHANGED} END FROM ("
        f" SELECT c.* FROM {new_side} LEFT JOIN old.catalog s ON s.rowid = c.rowid"
        f" WHERE s.rowid IS NULL OR {differs}) n"
        " LEFT JOIN old.catalog o ON o.md5path_1 = n.md5path_1 AND o.md5path_2 = n.md5path_2"
        f" WHERE o.md5path_1 IS NULL OR {compared}"
    )
    # Removed rows, under their old parent. Paths are unique in a catalog, so the new rows
    # that are not additions match old rows one to one: when those are all the old rows,
    # nothing was removed and the old catalog need not be searched row by row.
    (added,) = db.execute(f"SELECT count(*) FROM temp.changes WHERE kind = {_ADDED}").fetchone()
    if compare is not None:
        removed_rows = compare.old_rows - compare.new_rows + added
    else:
        (removed_rows,) = db.execute(
            "SELECT (SELECT count(*) FROM old.catalog) - (SELECT count(*) FROM main.catalog) + ?",
            (added,),
        ).fetchone()
    if removed_rows:
        old_side = "old.catalog o"
        if compare is not None:  # only old rows of pages that differ can be gone
            old_side = _rows_in_ranges(db, "old_compared", "old.catalog o", compare.old_ranges)
        db.execute(
            "INSERT INTO temp.changes SELECT o.md5path_1, o.md5path_2, o.parent_1, o.parent_2,"
            f" {_REMOVED} FROM {old_side} WHERE NOT EXISTS (SELECT 1 FROM main.catalog n"
            " WHERE n.md5path_1 = o.md5path_1 AND n.md5path_2 = o.md5path_2)"
        )
    # Chunked files whose rows are equal but whose chunk lists differ.
    chunk_columns = "md5path_1, md5path_2, offset, size, hash"
    db.execute(
        "INSERT OR IGNORE INTO temp.changes SELECT n.md5path_1, n.md5path_2, n.parent_1,"
        f" n.parent_2, {_CHANGED} FROM main.catalog n JOIN ("
        f" SELECT md5path_1, md5path_2 FROM (SELECT {chunk_columns} FROM main.chunks"
        f"  EXCEPT SELECT {chunk_columns} FROM old.chunks)"
        f" UNION SELECT md5path_1, md5path_2 FROM (SELECT {chunk_columns} FROM old.chunks"
        f"  EXCEPT SELECT {chunk_columns} FROM main.chunks)) d"
        " ON n.md5path_1 = d.md5path_1 AND n.md5path_2 = d.md5path_2"
    )
    new_nested = [
        (_as_name(path), str(sha1))
        for path, sha1 in db.execute("SELECT path, sha1 FROM main.nested_catalogs ORDER BY path")
    ]
    old_nested = {_as_name(row[0]) for row in db.execute("SELECT path FROM old.nested_catalogs")}
    return new_nested, old_nested


def _rows_in_ranges(
    db: sqlite3.Connection, name: str, table: str, ranges: list[tuple[int, int]]
) -> str:
    """A FROM clause of the rows of ``table`` (``schema.table alias``) whose rowids lie in
    ``ranges``, kept in the temporary table ``name``."""
    db.execute(f"CREATE TEMP TABLE {name} (first INTEGER, last INTEGER)")
    db.executemany(f"INSERT INTO temp.{name} VALUES (?, ?)", ranges)
    alias = table.split()[-1]
    return f"temp.{name} r JOIN {table} ON {alias}.rowid BETWEEN r.first AND r.last"


def _mark_dirty(db: sqlite3.Connection, visit: Iterable[str]) -> int:
    """Nested catalogs to visit become changes; every ancestor of a change becomes dirty.
    Returns the rows of both tables."""
    db.executemany(
        "INSERT OR IGNORE INTO temp.changes SELECT md5path_1, md5path_2, parent_1, parent_2, "
        f"{_NESTED} FROM main.catalog WHERE md5path_1 = ? AND md5path_2 = ?",
        [md5path(path) for path in visit],
    )
    db.execute(
        "INSERT INTO temp.dirty WITH RECURSIVE up(m1, m2) AS ("
        " SELECT p1, p2 FROM temp.changes"
        " UNION SELECT n.parent_1, n.parent_2 FROM up"
        "  JOIN main.catalog n ON n.md5path_1 = up.m1 AND n.md5path_2 = up.m2)"
        " SELECT n.md5path_1, n.md5path_2, n.parent_1, n.parent_2 FROM up"
        " JOIN main.catalog n ON n.md5path_1 = up.m1 AND n.md5path_2 = up.m2"
    )
    db.executescript(
        "CREATE INDEX temp.changes_by_parent ON changes (p1, p2);"
        "CREATE INDEX temp.dirty_by_parent ON dirty (p1, p2);"
    )
    (rows,) = db.execute(
        "SELECT (SELECT count(*) FROM temp.changes) + (SELECT count(*) FROM temp.dirty)"
    ).fetchone()
    return int(rows)


class RowBudget:
    """Rows of catalog differences that open diffs may hold in memory together."""

    def __init__(self, rows: int) -> None:
        self.available = rows

    def take(self, rows: int) -> bool:
        if rows > self.available:
            return False
        self.available -= rows
        return True

    def give(self, rows: int) -> None:
        self.available += rows


# Rows of differences read whole at once over all open diffs (about 500 bytes a row in
# memory; 50,000 are about 25 MB): a 1 % change of a million entries fits, a mass change is
# queried per directory.
PRELOAD_ROWS = 50_000


class CatalogDiffer:
    """Opens a :class:`CatalogDiff` for each changed catalog whose applied version is in
    the catalog cache; closes whatever is still open at the end of the run."""

    def __init__(
        self,
        plan: RefreshPlan,
        cached_path: Callable[[Digest], Path],
        spec: Spec,
        tree_root: Path,
        *,
        preload_rows: int | None = None,
        calls: BlockingCalls | None = None,
    ) -> None:
        self.plan = plan
        self.calls = calls  # where the diffs' queries run (see CatalogDiff)
        self.cached_path = cached_path
        self.spec = spec
        self.tree_root = tree_root
        self.budget = RowBudget(PRELOAD_ROWS if preload_rows is None else preload_rows)
        self.opened: list[CatalogDiff] = []
        self.diffed = 0  # changed catalogs applied as a diff
        self.fallbacks = 0  # changed catalogs walked in full for want of their old version

    async def open(self, catalog: Catalog, digest_hex: str) -> CatalogDiff | None:
        """The diff of ``catalog`` (hash ``digest_hex``) against its applied version, or
        None when there is nothing to diff against (the catalog is then walked)."""
        mountpoint = catalog.mountpoint
        previous = self.plan.previous(mountpoint, digest_hex)
        if previous is None:
            return None
        try:
            old_path = self.cached_path(Digest.from_hex(previous))
            diff = await CatalogDiff.open(
                catalog.path,
                old_path,
                mountpoint,
                self.spec,
                can_skip=lambda path, hex_: self.plan.can_skip(path, hex_, self.tree_root),
                budget=self.budget,
                calls=self.calls,
            )
        except (DiffUnavailable, ValueError) as error:
            self.fallbacks += 1
            log.info("%s: walking the catalog in full (%s)", mountpoint or "/", error)
            return None
        self.opened.append(diff)
        self.diffed += 1
        log.debug("%s: diffing catalog %s against %s", mountpoint or "/", digest_hex, previous)
        return diff

    async def close_all(self) -> None:
        for diff in self.opened:
            with contextlib.suppress(Exception):
                await diff.close()
        self.opened.clear()
