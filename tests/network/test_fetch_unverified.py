"""fetch_object_unverified + refetch_object: the batch-verified path counts and retries
exactly as fetch_object does (the no-cache repeat on the route that served bad bytes)."""

from __future__ import annotations

import pytest

from shrinkwrap_async.network.errors import ObjectCorruptError
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.servers import StaticServer

from .conftest import FIX1, make_settings


async def test_unverified_bytes_then_refetch_after_a_fix(
    fixture_server: StaticServer, fix1_objects: list
) -> None:
    victim = fix1_objects[5]
    good = victim.data
    victim.path.write_bytes(b"X" + good[1:])
    async with Fetcher(make_settings(fixture_server.repository_url(FIX1))) as fetcher:
        fetched = await fetcher.fetch_object_unverified(victim.digest, victim.suffix)
        assert fetched.data != good and not victim.digest.matches(fetched.data)
        assert fetcher.stats.requests == 1 and fetcher.stats.objects == 1
        victim.path.write_bytes(good)  # a proxy's poisoned entry, dropped by no-cache
        assert await fetcher.refetch_object(victim.digest, fetched) == good
    stats = fetcher.stats
    assert stats.requests == 2 and stats.objects == 1
    assert stats.no_cache_retries == 1 and stats.failures == 1 and stats.failovers == 0
    assert stats.failure_kinds["bad data"] == 1


async def test_refetch_of_corrupt_object_counts_as_fetch_object_does(
    fixture_server: StaticServer, fix1_objects: list
) -> None:
    victim = fix1_objects[3]
    victim.path.write_bytes(b"X" + victim.path.read_bytes()[1:])
    url = fixture_server.repository_url(FIX1)
    async with Fetcher(make_settings(url)) as verified:
        with pytest.raises(ObjectCorruptError):
            await verified.fetch_object(victim.digest, victim.suffix)
    async with Fetcher(make_settings(url)) as batched:
        fetched = await batched.fetch_object_unverified(victim.digest, victim.suffix)
        with pytest.raises(ObjectCorruptError):
            await batched.refetch_object(victim.digest, fetched)
    for name in ("requests", "no_cache_retries", "failures", "failovers", "objects", "corrupt"):
        assert getattr(batched.stats, name) == getattr(verified.stats, name), name
    assert batched.stats.objects == 0
