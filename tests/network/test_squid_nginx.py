"""Integration: the fetcher through a real Squid in front of a real nginx (both Debian)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing import nginx, squid

from .conftest import FIX1, fetch_all, make_settings, stored_objects

pytestmark = [pytest.mark.nginx, pytest.mark.squid]


async def test_fixture_through_squid_and_nginx(fixture_docroot: Path) -> None:
    nginx.skip_if_missing(nginx.NGINX)
    squid.skip_if_missing(squid.SQUID)
    objects = stored_objects(fixture_docroot / "cvmfs" / FIX1)
    with nginx.NginxServer(fixture_docroot) as origin, squid.SquidProxy() as proxy:
        settings = make_settings(origin.repository_url(FIX1), proxy_groups=proxy.url, timeout=10)
        async with Fetcher(settings, max_in_flight=32) as fetcher:
            manifest = await fetcher.fetch_file(".cvmfspublished")
            got = await fetch_all(fetcher, objects[: len(objects) // 2])
            got.update(await fetch_all(fetcher, objects[len(objects) // 2 :], stream=True))
            # A second pass is answered from Squid's memory cache.
            again = await fetch_all(fetcher, objects[:20])
        log = proxy.access_log
    assert manifest == (fixture_docroot / "cvmfs" / FIX1 / ".cvmfspublished").read_bytes()
    assert all(got[o.path] == o.data for o in objects)
    assert all(again[o.path] == o.data for o in objects[:20])
    assert fetcher.stats.failures == 0
    assert log.count("TCP_MISS/200") == len(objects) + 1
    assert log.count("HIT/200") >= 20


async def test_nginx_serves_fixture_direct(fixture_docroot: Path) -> None:
    nginx.skip_if_missing(nginx.NGINX)
    objects = stored_objects(fixture_docroot / "cvmfs" / "fix3.test.local")
    with nginx.NginxServer(fixture_docroot) as origin:
        settings = make_settings(origin.repository_url("fix3.test.local"))
        async with Fetcher(settings, connections_per_endpoint=4) as fetcher:
            got = await fetch_all(fetcher, objects, stream=True)
    assert all(got[o.path] == o.data for o in objects)
