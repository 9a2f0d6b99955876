"""CatalogCache over real HTTP (the fixture server): hits cost no request, wrong objects are
refused and leave nothing in the cache, bombs are capped."""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from catalog_testlib import root_digest

from shrinkwrap_async import inflate
from shrinkwrap_async.catalogs.cache import CatalogCache, ObjectSink
from shrinkwrap_async.catalogs.entry import CatalogError
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.network.errors import FetchError
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.servers import StaticServer

T = TypeVar("T")
FQRN = "fix1.test.local"


class PlainHttpFetcher:
    """Streams objects over plain HTTP without checking hashes: the cache must check."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def stream_object(
        self, digest: Digest, suffix: str, sink_factory: Callable[[], ObjectSink[T]]
    ) -> T:
        sink = sink_factory()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"{self.base_url}/{digest.object_path(suffix)}"
                async with session.get(url) as response:
                    response.raise_for_status()
                    async for piece in response.content.iter_chunked(7000):
                        await sink.write(piece)
        except BaseException:
            await sink.discard()
            raise
        return await sink.commit()


@pytest.fixture(params=["plain", "real"])
async def fetcher(request: pytest.FixtureRequest, fixture_server: StaticServer) -> AsyncIterator:
    url = fixture_server.repository_url(FQRN)
    if request.param == "plain":
        yield PlainHttpFetcher(url)
        return
    settings = ClientSettings.for_repository(
        FQRN, [url], max_retries=0, backoff_init=0.01, backoff_max=0.01
    )
    async with Fetcher(settings) as real:
        yield real


def cache_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


async def test_second_open_costs_no_request(
    tmp_path: Path, fixtures_dir: Path, fixture_server: StaticServer, fetcher: object
) -> None:
    digest = root_digest(fixtures_dir, FQRN, 2)
    cache = CatalogCache(tmp_path / "cache", fetcher)  # type: ignore[arg-type]
    object_path = f"cvmfs/{FQRN}/{digest.object_path('C')}"
    async with await cache.open(digest, "") as catalog:
        assert catalog.revision == 2
        assert await catalog.lookup("/README.txt") is not None
        sw = await catalog.nested_catalog("/sw")
    assert fixture_server.requests[object_path] == 1
    stored = cache.path_for(digest)
    assert stored == tmp_path / "cache" / digest.hex[:2] / f"{digest.hex[2:]}C"
    assert stored.read_bytes().startswith(b"SQLite format 3\0")
    assert cache_files(tmp_path / "cache") == [stored]

    before = fixture_server.total_requests
    async with await cache.open(digest, "") as catalog:
        assert catalog.revision == 2
    assert fixture_server.total_requests == before
    assert (cache.hits, cache.misses) == (1, 1)

    assert sw is not None
    async with await cache.open(sw.digest, "/sw") as nested:
        assert nested.properties["root_prefix"] == "/sw"
    # A catalog opened under the wrong mountpoint is refused (and not kept).
    with pytest.raises(CatalogError, match="root_prefix"):
        await cache.open(sw.digest, "/data")


async def test_object_with_wrong_hash_is_refused(
    tmp_path: Path, fixtures_dir: Path, fixture_docroot: Path, fetcher: object
) -> None:
    digest = root_digest(fixtures_dir, FQRN, 2)
    other = root_digest(fixtures_dir, FQRN, 3)
    repository = fixture_docroot / "cvmfs" / FQRN
    # A valid catalog object, but not the one the hash names.
    (repository / digest.object_path("C")).write_bytes(
        (repository / other.object_path("C")).read_bytes()
    )
    cache = CatalogCache(tmp_path / "cache", fetcher)  # type: ignore[arg-type]
    with pytest.raises((CatalogError, FetchError)):
        await cache.open(digest, "")
    assert cache_files(tmp_path / "cache") == []


async def test_inflated_size_is_capped(tmp_path: Path, fixtures_dir: Path, fetcher: object) -> None:
    digest = root_digest(fixtures_dir, FQRN, 2)
    cache = CatalogCache(tmp_path / "cache", fetcher, max_catalog_size=64 * 1024)  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match="inflates to more than"):
        await cache.open(digest, "")
    assert cache_files(tmp_path / "cache") == []


async def test_corrupt_cache_file_is_fetched_again(
    tmp_path: Path, fixtures_dir: Path, fixture_server: StaticServer, fetcher: object
) -> None:
    digest = root_digest(fixtures_dir, FQRN, 2)
    cache = CatalogCache(tmp_path / "cache", fetcher)  # type: ignore[arg-type]
    stored = cache.path_for(digest)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"garbage")
    async with await cache.open(digest, "") as catalog:
        assert catalog.revision == 2
    assert fixture_server.requests[f"cvmfs/{FQRN}/{digest.object_path('C')}"] == 1


async def test_object_that_is_not_a_catalog_is_refused(
    tmp_path: Path, fixture_docroot: Path, fixture_server: StaticServer, fetcher: object
) -> None:
    # Serve a zlib object whose hash is right but whose content is not SQLite.
    data = zlib.compress(b"not a catalog" * 100)
    digest = Digest.from_hex(hashlib.sha1(data).hexdigest())
    target = fixture_docroot / "cvmfs" / FQRN / digest.object_path("C")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    cache = CatalogCache(tmp_path / "cache", fetcher)  # type: ignore[arg-type]
    with pytest.raises(CatalogError, match="is not a CernVM-FS catalog"):
        await cache.open(digest, "")
    assert cache_files(tmp_path / "cache") == []


async def test_concurrent_caches_download_a_catalog_once(
    tmp_path: Path, fixtures_dir: Path, fixture_server: StaticServer
) -> None:
    """Caches sharing a directory (the shards of an export) take turns: one downloads,
    the others wait and open the file; no marker is left behind."""
    digest = root_digest(fixtures_dir, FQRN, 2)
    url = fixture_server.repository_url(FQRN)
    caches = [CatalogCache(tmp_path / "catalogs", PlainHttpFetcher(url)) for _ in range(4)]
    catalogs = await asyncio.gather(*(cache.open(digest, "") for cache in caches))
    try:
        assert fixture_server.requests[f"cvmfs/{FQRN}/{digest.object_path('C')}"] == 1
        assert sum(cache.misses for cache in caches) == 1
        assert sum(cache.hits for cache in caches) == 3
        assert all(c.revision == catalogs[0].revision for c in catalogs)
        assert not list((tmp_path / "catalogs").rglob("*.fetching"))
    finally:
        for catalog in catalogs:
            await catalog.close()


BACKENDS = inflate.available_backends()
BAD_STREAMS = {
    "truncated": (lambda good: good[:-20], "truncated zlib stream"),
    "trailing bytes": (lambda good: good + b"extra", "data after the zlib stream"),
    "not zlib": (lambda good: b"plain text, not zlib" * 50, "not a zlib stream"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", [*BAD_STREAMS, "good"])
async def test_catalog_streams_on_every_inflate_backend(
    tmp_path: Path,
    fixtures_dir: Path,
    fixture_docroot: Path,
    fixture_server: StaticServer,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    case: str,
) -> None:
    """The catalog cache inflates with the objects' backend; a stream whose hash is right
    but which is not one whole zlib stream is refused on each, leaving nothing behind."""
    monkeypatch.setattr(inflate, "decompressobj", BACKENDS[backend][0])
    repository = fixture_docroot / "cvmfs" / FQRN
    real = root_digest(fixtures_dir, FQRN, 2)
    cache = CatalogCache(tmp_path / "cache", PlainHttpFetcher(fixture_server.repository_url(FQRN)))  # type: ignore[arg-type]
    if case == "good":
        async with await cache.open(real, "") as catalog:
            assert catalog.revision == 2
        return
    damage, message = BAD_STREAMS[case]
    data = damage((repository / real.object_path("C")).read_bytes())
    digest = Digest.from_hex(hashlib.sha1(data).hexdigest())
    target = repository / digest.object_path("C")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    with pytest.raises(CatalogError, match=message):
        await cache.open(digest, "")
    assert cache_files(tmp_path / "cache") == []
