"""Fetching over DIRECT connections from loopback servers holding the real fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import web

from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.network.errors import (
    ObjectCorruptError,
    ObjectMissingError,
    TransferError,
)
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.network.headers import USER_AGENT, escape_path
from shrinkwrap_async.testing.servers import StaticServer, serve_handler

from .conftest import FIX1, MemorySink, add_object, make_settings, stored_objects

MISSING = Digest.from_hex("00" * 20)


@pytest.mark.parametrize("fqrn", ["fix1.test.local", "fix2.test.local", "fix3.test.local"])
async def test_every_fixture_object_is_fetched_and_verified(
    fixture_server: StaticServer, fixture_docroot: Path, fqrn: str
) -> None:
    objects = stored_objects(fixture_docroot / "cvmfs" / fqrn)
    assert len(objects) > 50
    settings = make_settings(fixture_server.repository_url(fqrn))
    async with Fetcher(settings, max_in_flight=8) as fetcher:
        manifest = await fetcher.fetch_file(".cvmfspublished")
        assert manifest == (fixture_docroot / "cvmfs" / fqrn / ".cvmfspublished").read_bytes()
        for index, stored in enumerate(objects):
            if index % 2:
                got = await fetcher.fetch_object(stored.digest, stored.suffix)
            else:
                log: list[str] = []
                got = await fetcher.stream_object(
                    stored.digest, stored.suffix, lambda log=log: MemorySink(log)
                )
                assert log == ["commit"]
            assert got == stored.data, stored.path
    assert fetcher.stats.requests == len(objects) + 1
    assert fetcher.stats.failures == 0
    assert fetcher.stats.bytes_received == sum(o.path.stat().st_size for o in objects) + len(
        manifest
    )


async def test_large_object_streams_in_bounded_pieces(
    fixture_server: StaticServer, fixture_docroot: Path
) -> None:
    largest = add_object(fixture_docroot, os.urandom(3 * 1024 * 1024 + 7))
    log: list[str] = []
    sinks: list[MemorySink] = []

    def factory() -> MemorySink:
        sinks.append(MemorySink(log))
        return sinks[-1]

    async with Fetcher(make_settings(fixture_server.repository_url(FIX1))) as fetcher:
        data = await fetcher.stream_object(largest.digest, largest.suffix, factory)
    assert data == largest.data
    assert len(sinks[0].pieces) >= 2
    assert max(len(p) for p in sinks[0].pieces) <= 256 * 1024


async def test_missing_object_asks_each_host_once(fixture_docroot: Path) -> None:
    async with StaticServer(fixture_docroot) as one, StaticServer(fixture_docroot) as two:
        settings = make_settings([one.repository_url(FIX1), two.repository_url(FIX1)])
        async with Fetcher(settings) as fetcher:
            with pytest.raises(ObjectMissingError) as caught:
                await fetcher.fetch_object(MISSING, "C")
            # A missing object is not an outage: no host is burned.
            assert not fetcher.state.is_host_burned(one.repository_url(FIX1))
            log: list[str] = []
            with pytest.raises(ObjectMissingError):
                await fetcher.stream_object(MISSING, "", lambda: MemorySink(log))
    assert caught.value.path == MISSING.object_path("C")
    assert one.total_requests == 2 and two.total_requests == 2
    assert fetcher.stats.retries == 0 and fetcher.stats.backoffs == 0
    assert "commit" not in log


async def test_corrupt_object_on_the_server_is_never_committed(
    fixture_server: StaticServer, fix1_objects: list
) -> None:
    victim = fix1_objects[3]
    victim.path.write_bytes(b"X" + victim.path.read_bytes()[1:])
    log: list[str] = []
    async with Fetcher(make_settings(fixture_server.repository_url(FIX1))) as fetcher:
        with pytest.raises(ObjectCorruptError):
            await fetcher.stream_object(victim.digest, victim.suffix, lambda: MemorySink(log))
        with pytest.raises(ObjectCorruptError):
            await fetcher.fetch_object(victim.digest, victim.suffix)
    assert "commit" not in log and log.count("discard") == 2 * fetcher.failover_rounds
    # Each pass: the request and its one no-cache repetition.
    assert fetcher.stats.no_cache_retries == 2 * fetcher.failover_rounds
    assert fetcher.stats.requests == 4 * fetcher.failover_rounds


async def test_max_size_is_enforced(fixture_server: StaticServer, fix1_objects: list) -> None:
    stored = max(fix1_objects, key=lambda o: o.path.stat().st_size)
    async with Fetcher(make_settings(fixture_server.repository_url(FIX1))) as fetcher:
        with pytest.raises(ObjectCorruptError, match="at most 100"):
            await fetcher.fetch_object(stored.digest, stored.suffix, max_size=100)
        with pytest.raises(ObjectCorruptError, match="at most 100"):
            await fetcher.fetch_file(stored.digest.object_path(stored.suffix), max_size=100)


async def test_sink_errors_propagate_unchanged(
    fixture_server: StaticServer, fix1_objects: list
) -> None:
    class DiskFull(OSError):
        pass

    class FailingSink(MemorySink):
        async def write(self, piece: bytes) -> None:
            raise DiskFull("no space left")

    log: list[str] = []
    async with Fetcher(make_settings(fixture_server.repository_url(FIX1))) as fetcher:
        with pytest.raises(DiskFull):
            await fetcher.stream_object(
                fix1_objects[0].digest, fix1_objects[0].suffix, lambda: FailingSink(log)
            )
    assert log == ["discard"]
    assert fetcher.stats.requests == 1


async def test_unreachable_host_raises_transfer_error_after_retries() -> None:
    # A port nobody listens on: connection refused, retried, then given up.
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(f"http://127.0.0.1:{port}/cvmfs/{FIX1}", max_retries=2)
    async with Fetcher(settings, failover_rounds=2) as fetcher:
        with pytest.raises(TransferError) as caught:
            await fetcher.fetch_file(".cvmfspublished")
    assert caught.value.exit_code == 4
    assert fetcher.stats.requests == 2 * 3
    assert fetcher.stats.retries == 2 * 2
    assert fetcher.stats.backoffs == 2 * 2 + 1


async def test_request_headers_are_the_clients() -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=b"manifest")

    async with serve_handler("/{tail:.*}", handler) as url:
        settings = make_settings(f"{url}/cvmfs/{FIX1}")
        async with Fetcher(settings) as fetcher:
            await fetcher.fetch_file(".cvmfspublished")
    headers = seen[0]
    assert headers["User-Agent"] == USER_AGENT
    assert headers["Accept-Encoding"] == "identity"
    assert headers["Connection"].lower() == "keep-alive"
    assert "Pragma" not in headers and "Cache-Control" not in headers


def test_escape_path_matches_the_client() -> None:
    assert escape_path("data/ab/cdef-rmd160C") == "data/ab/cdef-rmd160C"
    assert escape_path("a b/ü%") == "a%20b/%C3%BC%25"
