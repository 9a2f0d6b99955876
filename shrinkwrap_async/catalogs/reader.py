"""Read-only access to one inflated CernVM-FS catalog (SQLite).

Every query streams its rows in bounded batches, so memory does not grow with the size of
a catalog. Queries run on the event loop's thread, a batch at a time: the catalog is a
local file whose pages are in the OS cache, and a thread per connection cost more than the
reads (the sqlite3 module releases the GIL at every row, so each row became a hand-off
between two busy threads). Paths are absolute repository paths (``""`` for the root),
whichever catalog holds them. Bind mountpoints are reported as entries only; nothing here
follows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from os import PathLike
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, NamedTuple

from shrinkwrap_async.catalogs.entry import (
    ENTRY_COLUMNS,
    CatalogError,
    Chunk,
    DirEntry,
    NestedCatalogRef,
    entry_from_row,
    md5path,
)
from shrinkwrap_async.catalogs.schema import Flag
from shrinkwrap_async.hashing import DIGEST_SIZE, Digest

__all__ = ["FETCH_BATCH", "Catalog", "ChildCounts"]

FETCH_BATCH = 512
"""Rows fetched at a time: bounds memory; other tasks run between the batches."""
PAGE_CACHE_KIB = 256
"""SQLite page cache of each open catalog (SQLite's default is 2 MiB)."""

SUPPORTED_SCHEMAS = ("2.4", "2.5")
_REQUIRED_CATALOG_COLUMNS = frozenset(
    ("md5path_1", "md5path_2", "parent_1", "parent_2", *ENTRY_COLUMNS)
) - {"xattr"}


_IS_DIRECTORY = f"(mode & {stat.S_IFMT(0o177777)}) = {stat.S_IFDIR}"
# A regular file, neither chunked nor external, with a well-formed content hash: the rows
# whose share (content_share_of) SQLite computes. ``instr`` on blobs finds a byte's value
# as its position in the 256 bytes 00..FF.
_PLAIN_FILE = (
    f"(mode & {stat.S_IFMT(0o177777)}) = {stat.S_IFREG} "
    f"AND flags & {int(Flag.FILE_CHUNK | Flag.FILE_EXTERNAL)} = 0 "
    f"AND length(hash) = {DIGEST_SIZE}"
)
_BYTE_VALUES = f"X'{bytes(range(256)).hex()}'"
_CONTENT_SHARE = (
    f"((instr({_BYTE_VALUES}, substr(hash, 1, 1)) - 1) * 256 "
    f"+ instr({_BYTE_VALUES}, substr(hash, 2, 1)) - 1)"
)


def content_share_of(raw_digest: bytes, count: int) -> int:
    """Which of ``count`` shares a content hash belongs to: its first two bytes modulo
    ``count`` (as :meth:`Catalog.list_directory` computes it in SQLite)."""
    return int.from_bytes(raw_digest[:2], "big") % count


class ChildCounts(NamedTuple):
    """What a directory holds besides subdirectories (hidden entries not counted)."""

    files: int = 0
    file_bytes: int = 0
    symlinks: int = 0
    specials: int = 0


def _decode_text(raw: bytes) -> str:
    """Text columns: UTF-8, with undecodable bytes kept as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def _sqlite_uri(path: Path) -> str:
    quoted = urllib.parse.quote(str(path.absolute()), safe="/")
    return f"file:{quoted}?mode=ro&immutable=1"


class Catalog:
    """One open catalog. Create with ``await Catalog.open(path, mountpoint)``.

    Attributes: ``path`` (the SQLite file), ``mountpoint`` (repository path of the
    catalog's root entry), ``schema`` (``"2.5"``), ``schema_revision``, ``revision``,
    ``properties`` (read-only mapping of the ``properties`` table).
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        mountpoint: str,
        properties: Mapping[str, str],
        catalog_columns: frozenset[str],
        tables: frozenset[str],
        nested_columns: frozenset[str],
    ) -> None:
        self._db = connection
        self.path = path
        self.mountpoint = mountpoint
        self.properties: Mapping[str, str] = MappingProxyType(dict(properties))
        self.schema = _schema_text(properties.get("schema"))
        self.schema_revision = _int_property(properties, "schema_revision", path)
        self.revision = _int_property(properties, "revision", path)
        self._tables = tables
        xattr = "xattr" if "xattr" in catalog_columns else "NULL"
        columns = ", ".join(c if c != "xattr" else xattr for c in ENTRY_COLUMNS)
        self._sql_lookup = f"SELECT {columns} FROM catalog WHERE md5path_1 = ? AND md5path_2 = ?"
        self._sql_list = (
            f"SELECT {columns} FROM catalog WHERE parent_1 = ? AND parent_2 = ? ORDER BY name"
        )
        self._sql_list_share = (
            f"SELECT {columns} FROM catalog WHERE parent_1 = ? AND parent_2 = ? "
            f"AND (NOT ({_PLAIN_FILE}) OR {_CONTENT_SHARE} % ? = ?) ORDER BY name"
        )
        self._sql_list_directories = (
            f"SELECT {columns} FROM catalog WHERE parent_1 = ? AND parent_2 = ? "
            f"AND {_IS_DIRECTORY} ORDER BY name"
        )
        self._sql_count_others = (
            f"SELECT mode & {stat.S_IFMT(0o177777)}, count(*), total(size) FROM catalog "
            f"WHERE parent_1 = ? AND parent_2 = ? AND NOT {_IS_DIRECTORY} "
            f"AND flags & {int(Flag.HIDDEN)} = 0 GROUP BY 1"
        )
        nested_size = "size" if "size" in nested_columns else "0"
        self._sql_nested = f"SELECT path, sha1, {nested_size} FROM nested_catalogs"

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    async def open(cls, sqlite_path: str | PathLike[str], mountpoint: str = "") -> Catalog:
        """Open read-only, check that it is a supported catalog whose root is ``mountpoint``.

        Raises :class:`CatalogError` ("<path> is not a CernVM-FS catalog: <reason>").
        """
        path = Path(sqlite_path)
        if mountpoint.endswith("/") or (mountpoint and not mountpoint.startswith("/")):
            raise ValueError(f"mountpoint must be '' or '/a/b', not {mountpoint!r}")
        if not path.is_file():
            raise CatalogError(f"{path} is not a CernVM-FS catalog: no such file")
        try:
            connection = sqlite3.connect(_sqlite_uri(path), uri=True, check_same_thread=False)
        except sqlite3.Error as error:
            raise CatalogError(f"{path} is not a CernVM-FS catalog: {error}") from error
        connection.text_factory = _decode_text
        try:
            # Dozens of catalogs may be open at once; SQLite's default page cache of 2 MiB
            # each would make memory grow with the catalogs' size. Pages are re-read from
            # the operating system's cache instead.
            connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            catalog = cls._inspect(connection, path, mountpoint)
            await catalog._check_root()
        except BaseException as error:
            connection.close()
            if isinstance(error, sqlite3.Error):
                raise CatalogError(f"{path} is not a CernVM-FS catalog: {error}") from error
            raise
        return catalog

    @classmethod
    def _inspect(cls, connection: sqlite3.Connection, path: Path, mountpoint: str) -> Catalog:
        def refuse(reason: str) -> CatalogError:
            return CatalogError(f"{path} is not a CernVM-FS catalog: {reason}")

        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = frozenset(str(row[0]) for row in rows.fetchall())
        for table in ("properties", "catalog", "nested_catalogs"):
            if table not in tables:
                raise refuse(f"no {table} table")
        catalog_columns = _columns(connection, "catalog")
        missing = _REQUIRED_CATALOG_COLUMNS - catalog_columns
        if missing:
            raise refuse(f"catalog table lacks column(s) {', '.join(sorted(missing))}")
        properties: dict[str, str] = {}
        for key, value in connection.execute("SELECT key, value FROM properties").fetchall():
            properties[str(key)] = "" if value is None else str(value)
        schema = _schema_text(properties.get("schema"))
        if schema not in SUPPORTED_SCHEMAS:
            raise refuse(
                f"unsupported schema {schema or '(none)'} (supported: "
                f"{', '.join(SUPPORTED_SCHEMAS)})"
            )
        schema_revision = _int_property(properties, "schema_revision", path)
        if "xattr" not in catalog_columns and schema == "2.5" and schema_revision >= 2:
            raise refuse(f"schema 2.5 revision {schema_revision} without an xattr column")
        return cls(
            connection,
            path,
            mountpoint,
            properties,
            catalog_columns,
            tables,
            _columns(connection, "nested_catalogs"),
        )

    async def _check_root(self) -> None:
        """The catalog's root entry must be the mountpoint's directory."""
        prefix = self.properties.get("root_prefix")
        if self.mountpoint:
            if prefix != self.mountpoint:
                raise CatalogError(
                    f"{self.path}: catalog root_prefix is {prefix!r}, expected {self.mountpoint!r}"
                )
        elif prefix not in (None, "", "/"):
            raise CatalogError(f"{self.path}: expected a root catalog, root_prefix is {prefix!r}")
        root = await self.lookup(self.mountpoint)
        if root is None or not root.is_directory:
            raise CatalogError(
                f"{self.path}: no root directory entry for {self.mountpoint or '/'!r}"
            )
        if self.mountpoint and not root.is_nested_root:
            raise CatalogError(
                f"{self.path}: root entry of {self.mountpoint!r} is not marked as nested root"
            )

    async def close(self) -> None:
        self._db.close()

    async def __aenter__(self) -> Catalog:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r}, mountpoint={self.mountpoint!r})"

    # -- queries -------------------------------------------------------------------------

    async def _rows(self, sql: str, parameters: tuple[Any, ...] = ()) -> AsyncIterator[tuple]:  # type: ignore[type-arg]
        """Stream rows in batches of :data:`FETCH_BATCH`; SQLite errors become CatalogError."""
        try:
            cursor = self._db.execute(sql, parameters)
            try:
                while batch := cursor.fetchmany(FETCH_BATCH):
                    for row in batch:
                        yield row
                    if len(batch) < FETCH_BATCH:
                        return  # a short batch is the last one
                    await asyncio.sleep(0)  # a long listing lets the other tasks run
            finally:
                # A consumer that stopped early (an invalid row) leaves this generator to be
                # finalized by the event loop, possibly after the catalog was closed.
                with contextlib.suppress(sqlite3.ProgrammingError):
                    cursor.close()
        except sqlite3.Error as error:
            raise CatalogError(f"{self.path}: corrupt catalog: {error}") from error

    async def _first(self, sql: str, parameters: tuple[Any, ...] = ()) -> tuple | None:  # type: ignore[type-arg]
        try:
            return self._db.execute(sql, parameters).fetchone()  # type: ignore[no-any-return]
        except sqlite3.Error as error:
            raise CatalogError(f"{self.path}: corrupt catalog: {error}") from error

    async def lookup(self, path: str) -> DirEntry | None:
        """The entry at ``path`` if this catalog holds it."""
        row = await self._first(self._sql_lookup, md5path(path))
        if row is None:
            return None
        return entry_from_row(path, row)

    async def list_directory(
        self,
        path: str,
        *,
        include_hidden: bool = False,
        directories_only: bool = False,
        content_share: tuple[int, int] | None = None,
    ) -> AsyncIterator[DirEntry]:
        """Children of ``path`` held in this catalog, in name byte order.

        A nested mountpoint's children live in the nested catalog, so listing it here
        yields nothing. Hidden entries (``/.cvmfs``) are skipped as readdir does, unless
        ``include_hidden``. ``directories_only``: SQLite leaves out the other rows (they
        can be counted with :meth:`count_other_children`). ``content_share`` (index,
        count): SQLite leaves out the plain regular files (not chunked, not external)
        whose content is in another share (:func:`content_share_of`); every other row
        stays.
        """
        prefix = path + "/"
        parameters: tuple[Any, ...] = md5path(path)
        if directories_only:
            sql = self._sql_list_directories
        elif content_share is not None:
            index, count = content_share
            sql = self._sql_list_share
            parameters = (*parameters, count, index)
        else:
            sql = self._sql_list
        async for row in self._rows(sql, parameters):
            entry = entry_from_row(prefix + _as_name(row[0]), row)
            if include_hidden or not entry.is_hidden:
                yield entry

    async def count_other_children(self, path: str) -> ChildCounts:
        """Regular files (and their bytes), symlinks and other entries among the children
        of ``path`` that are not directories, counted by SQLite (no row is read here)."""
        files = file_bytes = symlinks = specials = 0
        async for file_type, count, size in self._rows(self._sql_count_others, md5path(path)):
            if file_type == stat.S_IFREG:
                files, file_bytes = count, int(size)
            elif file_type == stat.S_IFLNK:
                symlinks = count
            else:
                specials += count
        return ChildCounts(files, file_bytes, symlinks, specials)

    async def chunks(self, entry: str | DirEntry) -> list[Chunk]:
        """Chunks of a chunked file in offset order, checked to cover ``[0, size)`` exactly.

        Pass the :class:`DirEntry` when you have it, to save a lookup.
        """
        if isinstance(entry, str):
            found = await self.lookup(entry)
            if found is None:
                raise CatalogError(f"{self.path}: no entry {entry!r} to read chunks of")
            entry = found
        if "chunks" not in self._tables:
            if entry.is_chunked:
                raise CatalogError(f"{self.path}: {entry.path!r} is chunked but no chunks table")
            return []
        algorithm = entry.hash_algorithm
        result: list[Chunk] = []
        expected_offset = 0
        async for offset, size, raw in self._rows(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? "
            "ORDER BY offset ASC",
            md5path(entry.path),
        ):
            if offset != expected_offset or not isinstance(size, int) or size <= 0:
                raise CatalogError(
                    f"{self.path}: chunks of {entry.path!r} are not contiguous at offset "
                    f"{expected_offset} (row offset {offset}, size {size})"
                )
            if not isinstance(raw, bytes) or len(raw) != DIGEST_SIZE:
                raise CatalogError(
                    f"{self.path}: chunk at {offset} of {entry.path!r} has an invalid hash"
                )
            result.append(Chunk(offset, size, Digest(algorithm, raw)))
            expected_offset = offset + size
        if result and expected_offset != entry.size:
            raise CatalogError(
                f"{self.path}: chunks of {entry.path!r} cover {expected_offset} bytes, "
                f"the file has {entry.size}"
            )
        if entry.is_chunked and not result:
            raise CatalogError(f"{self.path}: chunked file {entry.path!r} has no chunks")
        return result

    async def nested_catalogs(self) -> list[NestedCatalogRef]:
        """The direct child catalogs (bind mountpoints excluded)."""
        return [
            self._nested_ref(path, sha1, size)
            async for path, sha1, size in self._rows(self._sql_nested + " ORDER BY path")
        ]

    async def nested_catalog(self, path: str) -> NestedCatalogRef | None:
        """The child catalog mounted at ``path``, if any (bind mountpoints excluded)."""
        row = await self._first(self._sql_nested + " WHERE path = ?", (path,))
        return None if row is None else self._nested_ref(*row)

    def _nested_ref(self, path: object, sha1: object, size: object) -> NestedCatalogRef:
        try:
            digest = Digest.from_hex(str(sha1))
        except ValueError:
            raise CatalogError(
                f"{self.path}: nested catalog {path!r} has an invalid hash {sha1!r}"
            ) from None
        if size is not None and type(size) is not int:
            raise CatalogError(
                f"{self.path}: nested catalog {path!r} has a size that is not an integer"
            )
        return NestedCatalogRef(_as_name(path), digest, size or 0)

    async def statistics(self) -> dict[str, int]:
        """The ``statistics`` counters (``self_regular``, ``subtree_dir``, ...)."""
        if "statistics" not in self._tables:
            return {}
        counters = {}
        async for counter, value in self._rows("SELECT counter, value FROM statistics"):
            if value is not None and type(value) is not int:
                raise CatalogError(f"{self.path}: statistics counter {counter!r} is no integer")
            counters[str(counter)] = value or 0
        return counters

    async def iter_entries(self, *, include_hidden: bool = True) -> AsyncIterator[DirEntry]:
        """Every entry of this catalog reachable from its root, root first, depth first.

        Only the paths of directories still to visit are kept in memory. Nested
        mountpoints and bind mountpoints are yielded but not descended.
        """
        root = await self.lookup(self.mountpoint)
        if root is None:
            return
        yield root
        pending = [self.mountpoint]
        while pending:
            directory = pending.pop()
            subdirectories: list[str] = []
            async for entry in self.list_directory(directory, include_hidden=include_hidden):
                yield entry
                if entry.is_directory and not (
                    entry.is_nested_mountpoint or entry.is_bind_mountpoint
                ):
                    subdirectories.append(entry.path)
            pending.extend(reversed(subdirectories))


def _as_name(value: object) -> str:
    if type(value) is str:
        return value  # type: ignore[return-value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _columns(connection: sqlite3.Connection, table: str) -> frozenset[str]:
    rows = connection.execute(f"PRAGMA table_info({table})").fetchall()
    return frozenset(str(row[1]) for row in rows)


def _schema_text(value: str | None) -> str:
    """``"2.5"`` for ``2.5``, ``2.50``, ``"2.5"``; ``""`` when absent."""
    if value is None or value == "":
        return ""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.1f}" if round(number, 1) == number else repr(number)


def _int_property(properties: Mapping[str, str], key: str, path: Path) -> int:
    value = properties.get(key)
    if value is None or value == "":
        return 0
    try:
        return int(float(value))
    except (ValueError, OverflowError):  # not a number; inf
        raise CatalogError(f"{path}: property {key} is not a number: {value!r}") from None
