"""Failover through groups of fault-injecting proxies in front of the fixture server."""

from __future__ import annotations

import socket
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.network.errors import (
    ObjectCorruptError,
    ObjectMissingError,
    TransferError,
)
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy
from shrinkwrap_async.testing.servers import StaticServer

from .conftest import FIX1, MemorySink, StoredObject, fetch_all, make_settings, stored_objects


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_proxies(stack: AsyncExitStack, count: int, **options: object) -> list[FaultProxy]:
    return [
        await stack.enter_async_context(FaultProxy(seed=index, name=f"p{index}", **options))  # type: ignore[arg-type]
        for index in range(count)
    ]


async def test_load_is_spread_over_the_group(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    async with AsyncExitStack() as stack:
        proxies = await start_proxies(stack, 3)
        settings = make_settings(
            fixture_server.repository_url(FIX1), proxy_groups="|".join(p.url for p in proxies)
        )
        async with Fetcher(settings) as fetcher:
            got = await fetch_all(fetcher, fix1_objects)
    assert all(got[o.path] == o.data for o in fix1_objects)
    counts = [p.requests for p in proxies]
    assert sum(counts) == len(fix1_objects)
    assert min(counts) > len(fix1_objects) // 10, counts
    assert set(fetcher.stats.per_endpoint) == {p.url for p in proxies}


async def test_failover_order_across_groups(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    objects = fix1_objects[:20]
    async with AsyncExitStack() as stack:
        broken = await start_proxies(stack, 2, faults={Fault.ERROR: 1.0})
        (backup,) = await start_proxies(stack, 1)
        chain = f"{broken[0].url}|{broken[1].url};{backup.url}"
        settings = make_settings(fixture_server.repository_url(FIX1), proxy_groups=chain)
        async with Fetcher(settings) as fetcher:
            for stored in objects:
                assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
            assert fetcher.state.current_proxy_group() == 1
    # The first request tried each broken proxy with one retry (max_retries=1), then the
    # backup group; every later request went straight to the backup group.
    assert [p.requests for p in broken] == [2, 2]
    assert backup.requests == len(objects)
    assert fetcher.stats.retries == 2
    assert fetcher.stats.backoffs == 2
    assert fetcher.stats.failure_kinds == {"transfer": 4}


async def test_retries_and_backoff_are_counted(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    stored = fix1_objects[0]
    async with FaultProxy(schedule=[Fault.RESET, Fault.ERROR, Fault.TRUNCATE]) as proxy:
        settings = make_settings(
            fixture_server.repository_url(FIX1), proxy_groups=proxy.url, max_retries=3
        )
        async with Fetcher(settings) as fetcher:
            assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
    # The HTTP client itself sends an idempotent request once more when the connection
    # drops before an answer (RFC 9112 §9.3.1): no backoff of ours, but counted as the
    # request, failed attempt and retry it is, so the counts match what the proxy saw.
    assert proxy.requests == 4
    assert fetcher.stats.requests == 4
    assert fetcher.stats.retries == 3 and fetcher.stats.backoffs == 2
    assert fetcher.stats.failures == 3
    assert not fetcher.state.is_proxy_burned(proxy.url)


async def test_squid_generated_errors_switch_proxy_without_retry(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    stored = fix1_objects[0]
    async with AsyncExitStack() as stack:
        (bad,) = await start_proxies(
            stack, 1, faults={Fault.ERROR: 1.0}, squid_error_header=True, error_status=404
        )
        (good,) = await start_proxies(stack, 1)
        settings = make_settings(
            fixture_server.repository_url(FIX1), proxy_groups=f"{bad.url};{good.url}"
        )
        async with Fetcher(settings) as fetcher:
            assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
    assert bad.requests == 1 and good.requests == 1
    assert fetcher.stats.retries == 0


async def test_failed_host_is_skipped_through_proxies(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    dead_host = f"http://127.0.0.1:{free_port()}/cvmfs/{FIX1}"
    live_host = fixture_server.repository_url(FIX1)
    objects = fix1_objects[:10]
    async with FaultProxy() as proxy:
        settings = make_settings(
            [dead_host, live_host], proxy_groups=proxy.url, max_retries=0, host_reset_after=600
        )
        async with Fetcher(settings) as fetcher:
            for stored in objects:
                assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
            assert fetcher.state.host_order() == [live_host, dead_host]
            # The proxy was not to blame: it is usable again for the next host.
            assert not fetcher.state.is_proxy_burned(proxy.url)
    # One attempt at the dead host (the proxy answered 502), then only the live host.
    assert proxy.requests == 1 + len(objects)


async def test_failed_host_is_skipped_direct(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    dead_host = f"http://127.0.0.1:{free_port()}/cvmfs/{FIX1}"
    settings = make_settings([dead_host, fixture_server.repository_url(FIX1)], max_retries=2)
    async with Fetcher(settings) as fetcher:
        for stored in fix1_objects[:10]:
            assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
    assert fetcher.stats.requests == 3 + 10
    assert fetcher.stats.per_endpoint[dead_host.rsplit("/cvmfs", 1)[0]].failures == 3
    assert fixture_server.total_requests == 10


async def test_404_through_proxies_is_missing_quickly(fixture_docroot: Path) -> None:
    missing = Digest.from_hex("ab" * 20)
    async with AsyncExitStack() as stack:
        one = await stack.enter_async_context(StaticServer(fixture_docroot))
        two = await stack.enter_async_context(StaticServer(fixture_docroot))
        proxies = await start_proxies(stack, 2)
        settings = make_settings(
            [one.repository_url(FIX1), two.repository_url(FIX1)],
            proxy_groups="|".join(p.url for p in proxies),
            max_retries=5,
        )
        async with Fetcher(settings) as fetcher:
            with pytest.raises(ObjectMissingError):
                await fetcher.fetch_object(missing, "P")
            assert not any(fetcher.state.is_proxy_burned(p.url) for p in proxies)
    assert sum(p.requests for p in proxies) == 2  # one per host, no retries
    assert one.total_requests == 1 and two.total_requests == 1
    assert fetcher.stats.retries == 0 and fetcher.stats.backoffs == 0


async def test_bytes_flipped_on_every_request_never_reach_the_sink(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    stored = fix1_objects[5]
    log: list[str] = []
    async with AsyncExitStack() as stack:
        proxies = await start_proxies(stack, 2, faults={Fault.FLIP: 1.0})
        settings = make_settings(
            fixture_server.repository_url(FIX1), proxy_groups="|".join(p.url for p in proxies)
        )
        async with Fetcher(settings) as fetcher:
            with pytest.raises(ObjectCorruptError):
                await fetcher.stream_object(stored.digest, stored.suffix, lambda: MemorySink(log))
    assert "commit" not in log
    rounds = fetcher.failover_rounds
    assert log.count("discard") == rounds * 2 * 2
    for proxy in proxies:
        assert proxy.requests == rounds * 2
        # Every second request of a route is the no-cache repetition.
        pragmas = [headers.get("Pragma") for _, headers in proxy.headers_seen]
        assert pragmas == [None, "no-cache"] * rounds
        assert all(
            headers.get("Cache-Control") == "no-cache"
            for _, headers in proxy.headers_seen
            if headers.get("Pragma")
        )


async def test_a_bounded_fault_count_lets_the_next_pass_through(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    stored = fix1_objects[5]
    async with FaultProxy(faults={Fault.FLIP: 1.0}, max_faults_per_path=2) as proxy:
        settings = make_settings(fixture_server.repository_url(FIX1), proxy_groups=proxy.url)
        async with Fetcher(settings) as fetcher:
            assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
    # The first pass (a request and its no-cache repetition) met both faults; the second
    # pass's request came through whole.
    assert proxy.applied[Fault.FLIP] == 2 and proxy.applied[Fault.OK] == 1
    assert proxy.requests == 3


async def test_truncation_is_a_transfer_error(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    stored = max(fix1_objects, key=lambda o: o.path.stat().st_size)
    log: list[str] = []
    async with FaultProxy(faults={Fault.TRUNCATE: 1.0}) as proxy:
        settings = make_settings(fixture_server.repository_url(FIX1), proxy_groups=proxy.url)
        async with Fetcher(settings, failover_rounds=1) as fetcher:
            with pytest.raises(TransferError):
                await fetcher.stream_object(stored.digest, stored.suffix, lambda: MemorySink(log))
            with pytest.raises(TransferError):
                await fetcher.fetch_object(stored.digest, stored.suffix)
            proxy.set_faults({}, schedule=[Fault.TRUNCATE])
            assert await fetcher.fetch_object(stored.digest, stored.suffix) == stored.data
    assert "commit" not in log
    assert proxy.applied[Fault.TRUNCATE] == 2 + 2 + 1


async def test_stall_past_the_timeout_fails_over(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    objects = fix1_objects[:8]
    async with AsyncExitStack() as stack:
        (stalling,) = await start_proxies(stack, 1, faults={Fault.STALL: 1.0}, stall_seconds=30)
        (good,) = await start_proxies(stack, 1)
        settings = make_settings(
            fixture_server.repository_url(FIX1),
            proxy_groups=f"{stalling.url};{good.url}",
            timeout=0.3,
            max_retries=0,
        )
        async with Fetcher(settings) as fetcher:
            got = await fetch_all(fetcher, objects, workers=4, stream=True)
    assert all(got[o.path] == o.data for o in objects)
    # Concurrent first requests may each have met the stall once; later ones skip it.
    assert 1 <= stalling.requests <= 4
    assert good.requests == len(objects)
    assert fetcher.stats.failure_kinds["transfer"] == stalling.requests


@pytest.mark.parametrize("fqrn", ["fix1.test.local", "fix2.test.local", "fix3.test.local"])
async def test_every_object_survives_two_proxies_damaging_20_percent(
    fixture_server: StaticServer, fixture_docroot: Path, fqrn: str
) -> None:
    """The setting in which the real cvmfs_shrinkwrap gives up after 4 requests."""
    objects = stored_objects(fixture_docroot / "cvmfs" / fqrn)
    damage = {
        Fault.RESET: 0.05,
        Fault.ERROR: 0.05,
        Fault.TRUNCATE: 0.05,
        Fault.FLIP: 0.05,
    }
    async with AsyncExitStack() as stack:
        proxies = await start_proxies(stack, 2, faults=damage)
        # Client defaults (1 retry, resets disabled); only the backoff is shortened.
        settings = make_settings(
            fixture_server.repository_url(fqrn), proxy_groups="|".join(p.url for p in proxies)
        )
        async with Fetcher(settings) as fetcher:
            half = len(objects) // 2
            got = await fetch_all(fetcher, objects[:half])
            got.update(await fetch_all(fetcher, objects[half:], stream=True))
    assert len(got) == len(objects)
    for stored in objects:
        assert got[stored.path] == stored.data, stored.path
    damaged = sum(sum(p.applied.values()) - p.applied[Fault.OK] for p in proxies)
    assert damaged > len(objects) // 10
    assert 0 < fetcher.stats.failures <= damaged  # aiohttp re-sends some resets itself
