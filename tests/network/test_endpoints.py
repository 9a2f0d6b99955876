"""Failover state (burn, reset, wrap-around, stale reports) and geo ordering."""

from __future__ import annotations

import random
from urllib.parse import unquote

import pytest
from aiohttp import web

from shrinkwrap_async.network import geo
from shrinkwrap_async.network.endpoints import FailoverState
from shrinkwrap_async.network.errors import FetchError
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.faultproxy import FaultProxy
from shrinkwrap_async.testing.servers import GEO_ROUTE, StaticServer, serve_handler

from .conftest import FIX1, make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_state(clock: Clock, **options: float) -> FailoverState:
    return FailoverState(
        ["http://h1/cvmfs/r", "http://h2/cvmfs/r", "http://h3/cvmfs/r"],
        [("http://a:1", "http://b:1"), ("http://c:1",), ("DIRECT",)],
        clock=clock,
        rng=random.Random(1),
        **options,
    )


def test_burned_proxies_go_last_and_come_back_after_reset() -> None:
    clock = Clock()
    state = make_state(clock, proxy_reset_after=300)
    assert set(state.proxy_order()[:2]) == {"http://a:1", "http://b:1"}
    assert state.proxy_order()[2:] == ["http://c:1", None]
    started = clock()
    clock.now += 1
    assert state.proxy_failed("http://a:1", started)
    assert state.proxy_failed("http://b:1", started)
    assert state.current_proxy_group() == 1
    assert state.proxy_order() == ["http://c:1", None, "http://a:1", "http://b:1"]
    clock.now += 300
    assert state.current_proxy_group() == 0


def test_one_member_groups_keep_their_order_until_a_burn_and_after_its_reset() -> None:
    """With nothing burned, every request gets the configured hosts and proxies (the
    common case, answered without the burn bookkeeping); a burn moves the endpoint last,
    its reset brings the configured order back; callers may change the lists they get."""
    clock = Clock()
    hosts = ["http://h1/cvmfs/r", "http://h2/cvmfs/r"]
    state = FailoverState(
        hosts,
        [("http://c:1",), ("DIRECT",)],
        clock=clock,
        proxy_reset_after=60,
        host_reset_after=60,
    )
    assert state.proxy_order() == ["http://c:1", None]
    order = state.host_order()
    order.clear()
    assert state.host_order() == hosts
    started = clock()
    clock.now += 1
    assert state.proxy_failed("http://c:1", started)
    assert state.host_failed("http://h1/cvmfs/r", started)
    assert state.proxy_order() == [None, "http://c:1"]
    assert state.host_order() == ["http://h2/cvmfs/r", "http://h1/cvmfs/r"]
    clock.now += 60
    assert state.proxy_order() == ["http://c:1", None]
    assert state.host_order() == hosts


def test_a_stale_failure_report_does_not_burn_again() -> None:
    clock = Clock()
    state = make_state(clock, proxy_reset_after=10)
    slow_request_started = clock()
    clock.now += 1
    assert state.proxy_failed("http://a:1", clock())
    clock.now += 20  # the burn expired; "a" is back
    assert not state.is_proxy_burned("http://a:1")
    # A request that started before all this reports its old failure: ignored.
    assert not state.proxy_failed("http://a:1", slow_request_started)
    assert not state.is_proxy_burned("http://a:1")


def test_everything_burned_wraps_around() -> None:
    clock = Clock()
    state = make_state(clock)  # resets disabled: burned until all are burned
    for proxy in ("http://a:1", "http://b:1", "http://c:1"):
        state.proxy_failed(proxy, clock())
        clock.now += 1
    assert state.proxy_order() == [None, "http://a:1", "http://b:1", "http://c:1"]
    state.proxy_failed(None, clock())
    assert all(not state.is_proxy_burned(p) for p in ("http://a:1", "http://c:1", None))


def test_hosts_fail_over_in_order_and_reset() -> None:
    clock = Clock()
    state = make_state(clock, host_reset_after=1800)
    state.host_failed("http://h1/cvmfs/r", clock())
    assert state.host_order() == ["http://h2/cvmfs/r", "http://h3/cvmfs/r", "http://h1/cvmfs/r"]
    clock.now += 1800
    assert state.host_order()[0] == "http://h1/cvmfs/r"


def test_geo_permutation_parsing() -> None:
    assert geo.parse_permutation("2,1,3\n", 3) == [1, 0, 2]
    assert geo.parse_permutation("1,1,3", 3) is None
    assert geo.parse_permutation("1,2", 3) is None
    assert geo.parse_permutation("x", 1) is None
    assert (
        geo.geo_url(
            "http://s1:8000/cvmfs/r", "squid.site", ["http://s1:8000/cvmfs/r", "http://s2/x"]
        )
        == "http://s1:8000/cvmfs/r/api/v1.0/geo/squid.site/s1,s2"
    )


async def test_geo_api_orders_the_servers(fixture_docroot) -> None:  # type: ignore[no-untyped-def]
    asked: list[str] = []

    async def geo_handler(request: web.Request) -> web.Response:
        asked.append(unquote(request.path))
        return web.Response(text="2,1\n")

    async with (
        serve_handler(GEO_ROUTE, geo_handler) as url,
        StaticServer(fixture_docroot) as static,
    ):
        geo_server = f"{url}/cvmfs/{FIX1}"
        settings = make_settings([geo_server, static.repository_url(FIX1)], use_geoapi=True)
        async with Fetcher(settings) as fetcher:
            assert fetcher.state.hosts == [static.repository_url(FIX1), geo_server]
            await fetcher.fetch_file(".cvmfspublished")
        assert static.requests[f"cvmfs/{FIX1}/.cvmfspublished"] == 1
    assert len(asked) == 1
    token, names = asked[0].split("/")[-2:]
    assert names == "127.0.0.1,127.0.0.1"
    assert len(token) == 36  # DIRECT: an instance UUID instead of a proxy name


@pytest.mark.parametrize("use_geoapi", [False, True])
async def test_max_servers_keeps_the_first_hosts_after_the_geo_order(  # type: ignore[no-untyped-def]
    fixture_docroot, use_geoapi: bool
) -> None:
    """CVMFS_MAX_SERVERS=1: only the first server is used; with the geo API, the first in
    its order (here the second configured), so a dead first server fails the request
    without it and is never asked with it."""

    async def geo_handler(request: web.Request) -> web.Response:
        return web.Response(text="2,1\n")

    async with (
        serve_handler(GEO_ROUTE, geo_handler) as url,
        StaticServer(fixture_docroot) as static,
    ):
        dead = f"{url}/cvmfs/{FIX1}"  # answers only the geo API: 404 for everything else
        live = static.repository_url(FIX1)
        settings = make_settings([dead, live], use_geoapi=use_geoapi, max_servers=1)
        async with Fetcher(settings) as fetcher:
            assert fetcher.state.hosts == ([live] if use_geoapi else [dead])
            if use_geoapi:
                await fetcher.fetch_file(".cvmfspublished")
            else:
                with pytest.raises(FetchError):
                    await fetcher.fetch_file(".cvmfspublished")
    # (the geo API may be asked of either server first: only the manifest's count is fixed)
    assert static.requests[f"cvmfs/{FIX1}/.cvmfspublished"] == (1 if use_geoapi else 0)


async def test_geo_names_with_and_without_regular_proxies() -> None:
    """Servers, then the first proxy of each fallback group; ``+PXYSEP+`` between them only
    when every request goes through a fallback proxy (and there are two servers or more)."""
    asked: list[str] = []
    answers = iter(["5,2,1,4,3", "1,3,2"])

    async def fetch_text(url: str) -> str | None:
        asked.append(url)
        return next(answers)

    servers = ["http://s1:8000/cvmfs/r", "http://s2/cvmfs/r"]
    fallback = ["http://f1.org:3128", "http://f2.org:3128"]
    order = await geo.sort_servers_and_fallback(
        servers, fallback, proxy=None, regular_proxies=False, fetch_text=fetch_text
    )
    assert order == geo.GeoOrder(servers=[1, 0], fallback_groups=[1, 0])
    token, names = asked[0].split("/")[-2:]
    assert names == "s1,s2,+PXYSEP+,f1.org,f2.org" and len(token) == 36
    order = await geo.sort_servers_and_fallback(
        servers[:1], fallback, proxy="http://squid.site:3128", regular_proxies=True,
        fetch_text=fetch_text,
    )  # fmt: skip
    assert order == geo.GeoOrder(servers=[0], fallback_groups=[1, 0])
    assert asked[1].endswith("/api/v1.0/geo/squid.site/s1,f1.org,f2.org")


def test_reorder_proxy_groups_keeps_the_regular_ones() -> None:
    state = make_state(Clock())
    state.reorder_proxy_groups(1, [1, 0])
    assert state.proxy_groups == (("http://a:1", "http://b:1"), ("DIRECT",), ("http://c:1",))
    try:
        state.reorder_proxy_groups(1, [0, 0])
    except ValueError:
        pass
    else:
        raise AssertionError("a non-permutation was applied")


async def test_geo_api_orders_the_fallback_proxy_groups(fixture_docroot) -> None:  # type: ignore[no-untyped-def]
    """Fallback proxies only: one geo request names the servers, the separator and the
    fallback proxies; the answer orders both, and requests then go to the nearer proxy."""
    asked: list[str] = []

    async def geo_handler(request: web.Request) -> web.Response:
        asked.append(unquote(request.path))
        return web.Response(text="2,1,5,4,3\n")  # server 2, server 1, fallback 2, fallback 1

    async with (
        serve_handler(GEO_ROUTE, geo_handler) as url,
        StaticServer(fixture_docroot) as static,
        FaultProxy(name="far") as far,
        FaultProxy(name="near") as near,
    ):
        geo_server = f"{url}/cvmfs/{FIX1}"
        settings = make_settings(
            [geo_server, static.repository_url(FIX1)],
            use_geoapi=True,
            proxy_groups=f"{far.url};{near.url}",
            fallback_proxy_groups=2,
        )
        async with Fetcher(settings) as fetcher:
            assert fetcher.state.hosts == [static.repository_url(FIX1), geo_server]
            assert fetcher.state.proxy_groups == ((near.url,), (far.url,))
            await fetcher.fetch_file(".cvmfspublished")
        assert near.requests_by_path[f"/cvmfs/{FIX1}/.cvmfspublished"] == 1
        assert far.requests_by_path[f"/cvmfs/{FIX1}/.cvmfspublished"] == 0
    assert len(asked) == 1
    token, names = asked[0].split("/")[-2:]
    assert names == "127.0.0.1,127.0.0.1,+PXYSEP+,127.0.0.1,127.0.0.1"
    assert len(token) == 36  # on fallback proxies: the instance id, not a proxy's name
