"""Catalog-fetch stage: nested catalogs opened concurrently, shared and closed when unused.

The walker asks for a nested catalog as soon as it meets the mountpoint and goes on with
other directories while it downloads (no barrier per catalog), as long as fewer than
``EAGER_OPEN_LIMIT`` catalogs are open or opening; beyond that a catalog is opened by the
walker that takes its directory job, so a directory holding hundreds of nested catalogs
does not keep hundreds of SQLite connections (and their threads) open at once. Catalogs
outside the spec are never requested, because the walker only asks for directories it
descends into.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Self

from shrinkwrap_async.catalogs.entry import CatalogError
from shrinkwrap_async.exitcodes import TrustError
from shrinkwrap_async.network.errors import ObjectCorruptError

if TYPE_CHECKING:  # annotations only: pipeline.refresh imports this module on a fast path
    from shrinkwrap_async.catalogs.cache import CatalogCache
    from shrinkwrap_async.catalogs.reader import Catalog
    from shrinkwrap_async.hashing import Digest


class SharedByJobs:
    """Held by several directory jobs at once: each ``acquire`` is matched by a ``release``,
    and the last release closes it. ``references`` is the number of holders to start with."""

    def __init__(self, references: int = 0) -> None:
        self.references = references
        self.closed = False

    def acquire(self) -> Self:
        self.references += 1
        return self

    async def release(self) -> None:
        self.references -= 1
        if self.references == 0:
            await self.close()

    async def close(self) -> None:
        raise NotImplementedError


EAGER_OPEN_LIMIT = 32


class CatalogHandle(SharedByJobs):
    """A catalog shared by the directory jobs that list it; closed with the last release."""

    def __init__(self, catalog: Catalog, opener: CatalogOpener | None = None) -> None:
        super().__init__()
        self.catalog = catalog
        self._opener = opener

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._opener is not None:
                self._opener.open_now -= 1
            await self.catalog.close()


class CatalogOpener:
    def __init__(self, cache: CatalogCache, *, concurrency: int = 8) -> None:
        self.cache = cache
        self._limit = asyncio.Semaphore(concurrency)
        self.opened = 0
        self.open_now = 0  # handles not closed yet
        self.opening = 0  # nested catalogs being looked up, downloaded or opened
        self._handles: weakref.WeakSet[CatalogHandle] = weakref.WeakSet()

    def reserve_eager_open(self) -> bool:
        """Whether a nested catalog may be opened ahead of the walk (see module docs); if
        so, it counts as opening from now on: pass ``reserved=True`` to :meth:`open_nested`.
        """
        if self.open_now + self.opening >= EAGER_OPEN_LIMIT:
            return False
        self.opening += 1
        return True

    async def close_all(self) -> None:
        """Close every catalog still open (a run that was cancelled or failed)."""
        for handle in list(self._handles):
            with contextlib.suppress(Exception):
                await handle.close()

    async def open_root(self, digest: Digest) -> CatalogHandle:
        return await self._open(digest, "")

    async def open_nested(
        self, parent: Catalog, mountpoint: str, *, reserved: bool = False
    ) -> CatalogHandle:
        if not reserved:
            self.opening += 1
        try:
            ref = await parent.nested_catalog(mountpoint)
            if ref is None:
                raise CatalogError(f"no nested catalog registered for mountpoint {mountpoint!r}")
            return await self._open(ref.digest, mountpoint)
        finally:
            self.opening -= 1

    async def _open(self, digest: Digest, mountpoint: str) -> CatalogHandle:
        """Raises :class:`TrustError` (exit 3) for a catalog that never matched its hash:
        a trust failure, not a missing catalog, whoever opens it."""
        async with self._limit:
            try:
                catalog = await self.cache.open(digest, mountpoint)
            except ObjectCorruptError as error:
                raise catalog_hash_error(mountpoint, error) from None
        self.opened += 1
        self.open_now += 1
        handle = CatalogHandle(catalog, self)
        self._handles.add(handle)
        return handle


def catalog_hash_error(mountpoint: str, error: ObjectCorruptError) -> TrustError:
    """A catalog that never matched the hash its parent (or the manifest) gives: exit 3."""
    return TrustError(
        f"catalog of {mountpoint or '/'} ({error.path}) does not match its hash on any server"
    )
