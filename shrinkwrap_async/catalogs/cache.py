"""A local cache of inflated catalogs, addressed by the hash of their compressed object.

``<directory>/<XX>/<rest of hex>C`` holds the inflated SQLite file of catalog object
``data/XX/<rest>C``. A file appears there only after the whole object was received, its
hash matched and it inflated cleanly (temp name, then rename), so a hit needs no request.
Downloads stream through an inflating sink: neither the object nor the catalog is ever
held in memory, and the inflated size is capped against decompression bombs.

Processes sharing the cache (the shards of one export, each walking every catalog) take
turns per catalog: the first to miss holds an ``flock`` on ``<file>.fetching`` while it
downloads, the others wait for it and then find the file. Where the file system has no
``flock`` they download side by side, as before; the rename keeps that safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar

from shrinkwrap_async import inflate
from shrinkwrap_async.catalogs.entry import CatalogError
from shrinkwrap_async.catalogs.reader import Catalog
from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.hashing import Digest, Hasher, ObjectSuffix
from shrinkwrap_async.network.headers import requests_for
from shrinkwrap_async.network.sinks import ObjectSink

if TYPE_CHECKING:
    from shrinkwrap_async.config.settings import ClientSettings

__all__ = [
    "DEFAULT_MAX_CATALOG_SIZE",
    "CatalogCache",
    "Fetcher",
    "InflatingCatalogSink",
    "ObjectSink",
    "usable_catalog_cache_dir",
]

DEFAULT_MAX_CATALOG_SIZE = 4 << 30
"""Refuse catalogs that inflate to more than this (the largest real ones are ~1 GiB)."""

INFLATE_PIECE = 1 << 20
"""Largest piece of inflated output produced per step."""

TURN_POLL_SECONDS = 0.02
"""How often a process waiting for another's download of a catalog looks again."""

T = TypeVar("T")


def usable_catalog_cache_dir(settings: ClientSettings, explicit: Path | None = None) -> Path:
    """The cache directory of catalogs and certificates (``explicit``, else the settings'),
    created if need be. A :class:`StorageError` naming the setting that chose it if it cannot
    be created or written: raised before any request is made."""
    path = explicit or settings.catalog_cache_dir()
    origin = "the caller" if explicit else settings.catalog_cache_origin()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, os.strerror(13))
    except OSError as error:
        reason = error.strerror or str(error)
        raise StorageError(
            f"cannot use the catalog cache {path} (from {origin}): {reason}; "
            "point CVMFS_CACHE_BASE or -c at a writable directory"
        ) from None
    return path


class Fetcher(Protocol):
    """The part of ``network.fetcher.Fetcher`` the cache uses."""

    async def stream_object(
        self, digest: Digest, suffix: str, sink_factory: Callable[[], ObjectSink[T]]
    ) -> T: ...


class InflatingCatalogSink:
    """Hashes and inflates a ``C`` object into a temp file; ``commit`` renames it to ``final``.

    The hash is checked here too, so the cache never depends on the fetcher for it.
    """

    def __init__(self, digest: Digest, final: Path, max_size: int) -> None:
        self._digest = digest
        self._final = final
        self._max_size = max_size
        self._temp = final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self._hasher: Hasher = digest.algorithm.new()
        self._inflater = inflate.decompressobj()
        self._file: BinaryIO | None = None
        self._inflated = 0
        self._done = False
        self._renamed = False

    def _output(self) -> BinaryIO:
        if self._file is None:
            if self._done:
                raise RuntimeError("catalog sink used after commit or discard")
            self._final.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._temp, "wb")  # noqa: SIM115 (closed in _cleanup)
        return self._file

    def _consume(self, piece: bytes) -> None:
        """Hash and inflate one piece in bounded steps; runs in a worker thread."""
        out = self._output()
        self._hasher.update(piece)
        data = piece
        inflater = self._inflater
        while data:
            if inflater.eof:
                raise CatalogError(f"catalog {self._digest.hex}: data after the zlib stream")
            try:
                inflated = inflater.decompress(data, INFLATE_PIECE)
            except inflate.INFLATE_ERRORS as error:
                raise CatalogError(
                    f"catalog {self._digest.hex}: not a zlib stream: {error}"
                ) from None
            self._grow(len(inflated))
            out.write(inflated)
            data = inflater.unconsumed_tail

    def _grow(self, amount: int) -> None:
        self._inflated += amount
        if self._inflated > self._max_size:
            raise CatalogError(
                f"catalog {self._digest.hex} inflates to more than {self._max_size} bytes "
                "(limit; raise it if the repository really has such a catalog)"
            )

    def _finish(self) -> Path:
        out = self._output()
        if self._hasher.digest() != self._digest.raw:
            raise CatalogError(f"catalog {self._digest.hex}: hash of the received object differs")
        inflater = self._inflater
        while not inflater.eof:
            try:
                tail = inflater.decompress(inflater.unconsumed_tail, INFLATE_PIECE)
            except inflate.INFLATE_ERRORS as error:
                raise CatalogError(
                    f"catalog {self._digest.hex}: not a zlib stream: {error}"
                ) from None
            if not tail:
                raise CatalogError(f"catalog {self._digest.hex}: truncated zlib stream")
            self._grow(len(tail))
            out.write(tail)
        if inflater.unused_data:
            raise CatalogError(f"catalog {self._digest.hex}: data after the zlib stream")
        out.close()
        os.replace(self._temp, self._final)
        self._renamed = True
        return self._final

    def _cleanup(self) -> None:
        self._done = True
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._renamed:
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()

    async def write(self, piece: bytes) -> None:
        try:
            await asyncio.to_thread(self._consume, piece)
        except BaseException:
            await asyncio.to_thread(self._cleanup)
            raise

    async def commit(self) -> Path:
        try:
            return await asyncio.to_thread(self._finish)
        finally:
            await asyncio.to_thread(self._cleanup)

    async def discard(self) -> None:
        await asyncio.to_thread(self._cleanup)


class CatalogCache:
    """Catalogs by hash under ``directory``; misses are downloaded with ``fetcher``."""

    def __init__(
        self,
        directory: Path,
        fetcher: Fetcher,
        *,
        max_catalog_size: int = DEFAULT_MAX_CATALOG_SIZE,
    ) -> None:
        self.directory = Path(directory)
        self.fetcher = fetcher
        self.max_catalog_size = max_catalog_size
        self.hits = 0
        self.misses = 0

    def path_for(self, digest: Digest) -> Path:
        text = digest.hex
        return self.directory / text[:2] / f"{text[2:]}{ObjectSuffix.CATALOG}"

    async def open(self, digest: Digest, mountpoint: str) -> Catalog:
        """The catalog ``digest`` whose root is ``mountpoint``, from the cache or the network.

        A cached file that no longer opens as that catalog is removed and fetched again.
        Raises :class:`CatalogError` when the object is not the catalog it should be;
        network failures propagate from the fetcher.
        """
        path = self.path_for(digest)
        cached = await self._cached(path, mountpoint)
        if cached is not None:
            return cached
        async with _download_turn(path):
            cached = await self._cached(path, mountpoint)  # fetched meanwhile by another
            if cached is not None:
                return cached
            self.misses += 1
            with requests_for((mountpoint, digest.hex)):  # the requests' cvmfs-info
                path = await self.fetcher.stream_object(
                    digest, ObjectSuffix.CATALOG, lambda: self._sink(digest, path)
                )
        try:
            return await Catalog.open(path, mountpoint)
        except CatalogError:
            path.unlink(missing_ok=True)
            raise

    async def _cached(self, path: Path, mountpoint: str) -> Catalog | None:
        """The cached catalog at ``path``; a file that does not open as it is removed."""
        if not path.is_file():
            return None
        try:
            catalog = await Catalog.open(path, mountpoint)
        except CatalogError:
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return catalog

    def _sink(self, digest: Digest, final: Path) -> InflatingCatalogSink:
        return InflatingCatalogSink(digest, final, self.max_catalog_size)


@contextlib.asynccontextmanager
async def _download_turn(final: Path) -> AsyncIterator[None]:
    """Hold this process's turn to download the catalog that becomes ``final``.

    The marker is removed by its holder before the lock is let go; a process that opened
    it just before then may still win a lock on the removed file while a third locks a new
    one. Both then download: a wasted download, never a wrong file."""
    marker = final.with_name(final.name + ".fetching")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield  # no marker here (read-only corner, odd file system): no turns
        return
    has_turn = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                await asyncio.sleep(TURN_POLL_SECONDS)  # another process is downloading
                continue
            except OSError:
                pass  # no flock on this file system: download side by side
            has_turn = True
            break
        yield
    finally:
        if has_turn:  # not while waiting: the marker is the holder's
            with contextlib.suppress(OSError):
                marker.unlink()
        os.close(fd)
