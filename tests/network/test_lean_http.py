"""The lean small-object GET: framings, keep-alive, stale connections, timeouts, statuses,
and the fetcher's use of it (DIRECT and through a real Squid)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from shrinkwrap_async.hashing import Algorithm
from shrinkwrap_async.network.errors import TransferError
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.network.lean_http import (
    PAUSE_ABOVE,
    LeanHTTPError,
    LeanPool,
    LeanTimeout,
    LeanTooLarge,
    request_head_suffix,
)
from shrinkwrap_async.testing import nginx, squid

from .conftest import FIX1, MemorySink, make_settings, stored_objects

# request head -> raw response (None: hang up, b"": stall)
Responder = Callable[[bytes], bytes | None]


class ScriptedServer:
    """A raw TCP server on 127.0.0.1 answering each request head with scripted bytes."""

    def __init__(self, respond: Responder, *, close_after: int = 0) -> None:
        self.respond = respond
        self.close_after = close_after  # close each connection after N responses (0: never)
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                answer = self.respond(head)
                if answer is None:
                    return
                if not answer:  # stall: say nothing until the client gives up
                    await reader.read()
                    return
                writer.write(answer)
                await writer.drain()
                served += 1
                if self.close_after and served >= self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def head_for(path: str, endpoint: str) -> bytes:
    suffix = request_head_suffix(endpoint.removeprefix("http://"), {"User-Agent": "t"})
    return b"GET " + path.encode("latin-1") + suffix


@pytest.fixture
async def pool_for() -> AsyncIterator[Callable[..., LeanPool]]:
    pools: list[LeanPool] = []

    def make(endpoint: str, read_timeout: float = 2) -> LeanPool:
        pools.append(LeanPool(endpoint, limit=2, connect_timeout=2, read_timeout=read_timeout))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


async def test_framings_and_keep_alive(pool_for: Callable[..., LeanPool]) -> None:
    bodies = {
        b"/length": ok(b"x" * 1000),
        b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: 1\r\n\r\n",
    }
    async with ScriptedServer(lambda head: bodies[head.split(b" ")[1]]) as server:
        pool = pool_for(server.endpoint)
        for _ in range(3):
            assert (await pool.get(head_for("/length", server.endpoint), None)).body == b"x" * 1000
            chunked = await pool.get(head_for("/chunked", server.endpoint), None)
            assert chunked.body == b"abcdefg" and chunked.status == 200
        assert server.connections == 1  # one keep-alive connection for six requests
    async with ScriptedServer(
        lambda head: b"HTTP/1.0 200 OK\r\n\r\nuntil close", close_after=1
    ) as server:
        response = await pool_for(server.endpoint).get(head_for("/", server.endpoint), None)
        assert response.body == b"until close" and response.content_length is None


async def test_bytes_after_a_body_are_not_part_of_it(pool_for: Callable[..., LeanPool]) -> None:
    """A response followed at once by bytes nobody asked for: the body ends at its length
    and the connection, whose next answer cannot be trusted, is not used again."""
    body = bytes(range(256)) * 40
    async with ScriptedServer(lambda head: ok(body) + b"HTTP/1.1 200 OK\r\n") as server:
        pool = pool_for(server.endpoint)
        for _ in range(2):
            response = await pool.get(head_for("/", server.endpoint), None)
            assert response.body == body and isinstance(response.body, bytes)
        assert server.connections == 2


class SlowConsumer:
    """Takes streamed pieces, sleeping now and then, and watches the client's buffer."""

    def __init__(self, pool: LeanPool) -> None:
        self.pool = pool
        self.pieces: list[bytes] = []
        self.most_buffered = 0

    async def __call__(self, piece: bytes) -> None:
        self.pieces.append(piece)
        for connection in self.pool._idle:  # none: the streaming one is not idle
            raise AssertionError(f"unexpected idle connection {connection}")
        if len(self.pieces) % 8 == 0:
            await asyncio.sleep(0.01)

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)


async def test_bodies_are_streamed_in_every_framing(pool_for: Callable[..., LeanPool]) -> None:
    large = bytes(range(256)) * (3 * PAUSE_ABOVE // 256)  # more than the client buffers
    bodies = {
        b"/length": ok(large),
        b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (large[:70000], large[70000:]))
        + b"0\r\n\r\n",
    }
    async with ScriptedServer(lambda head: bodies[head.split(b" ")[1]]) as server:
        pool = pool_for(server.endpoint)
        for path in ("/length", "/chunked", "/length"):
            consumer = SlowConsumer(pool)
            response = await pool.get(head_for(path, server.endpoint), None, consumer)
            assert response.status == 200 and response.body == b""
            assert consumer.body == large and len(consumer.pieces) > 1
        assert server.connections == 1  # the connection is reused after each stream
    async with ScriptedServer(
        lambda head: b"HTTP/1.0 200 OK\r\n\r\n" + large, close_after=1
    ) as server:
        consumer = SlowConsumer(pool_for(server.endpoint))
        await consumer.pool.get(head_for("/", server.endpoint), None, consumer)
        assert consumer.body == large


async def test_a_streamed_body_cut_short_fails(pool_for: Callable[..., LeanPool]) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 5000
    async with ScriptedServer(lambda head: cut, close_after=1) as server:
        consumer = SlowConsumer(pool_for(server.endpoint))
        with pytest.raises(LeanHTTPError, match="short transfer: 5000 of 100000"):
            await consumer.pool.get(head_for("/", server.endpoint), None, consumer)
        assert consumer.body == b"z" * 5000  # what came was handed on; the caller discards


async def test_a_non_200_is_not_streamed(pool_for: Callable[..., LeanPool]) -> None:
    async with ScriptedServer(
        lambda head: b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"
    ) as server:
        consumer = SlowConsumer(pool_for(server.endpoint))
        response = await consumer.pool.get(head_for("/", server.endpoint), None, consumer)
        assert response.status == 404 and consumer.pieces == []


async def test_stale_keep_alive_connection_is_replaced(
    pool_for: Callable[..., LeanPool],
) -> None:
    async with ScriptedServer(lambda head: ok(b"fresh"), close_after=1) as server:
        pool = pool_for(server.endpoint)
        for _ in range(3):  # the server closes after each answer; the pool notices
            assert (await pool.get(head_for("/", server.endpoint), None)).body == b"fresh"
            await asyncio.sleep(0.05)
        assert server.connections == 3


async def test_failures(pool_for: Callable[..., LeanPool]) -> None:
    answers = {
        b"/short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"/big": ok(b"y" * 100),
        b"/garbled": b"SPDY nonsense\r\n\r\n",
        b"/404": b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Squid-Error: x\r\n\r\n"
        b"not found",
    }

    def respond(head: bytes) -> bytes | None:
        path = head.split(b" ")[1]
        if path == b"/hang":
            return b""
        return answers[path]

    async with ScriptedServer(respond, close_after=1) as server:
        endpoint = server.endpoint
        pool = pool_for(endpoint, read_timeout=0.3)
        with pytest.raises(LeanHTTPError, match="short transfer: 3 of 10"):
            await pool.get(head_for("/short", server.endpoint), None)
        with pytest.raises(LeanTooLarge, match="100 bytes announced, at most 50"):
            await pool.get(head_for("/big", server.endpoint), 50)
        with pytest.raises(LeanHTTPError, match="not an HTTP"):
            await pool.get(head_for("/garbled", server.endpoint), None)
        missing = await pool.get(head_for("/404", server.endpoint), None)
        assert missing.status == 404 and "X-Squid-Error" in missing.headers
        with pytest.raises(LeanTimeout):
            await pool.get(head_for("/hang", server.endpoint), None)
    with pytest.raises(LeanHTTPError):  # nothing listens there any more
        await pool.get(head_for("/", endpoint), None)


async def test_fetcher_uses_it_through_squid(fixture_docroot: Path) -> None:
    nginx.skip_if_missing(nginx.NGINX)
    squid.skip_if_missing(squid.SQUID)
    objects = stored_objects(fixture_docroot / "cvmfs" / FIX1)[:40]
    with nginx.NginxServer(fixture_docroot) as origin, squid.SquidProxy() as proxy:
        settings = make_settings(origin.repository_url(FIX1), proxy_groups=proxy.url, timeout=10)
        async with Fetcher(settings, max_in_flight=8) as fetcher:
            for stored in objects:
                fetched = await fetcher.fetch_object_unverified(  # bounded, as the export asks
                    stored.digest, stored.suffix, max_size=len(stored.data)
                )
                assert fetched.data == stored.data and fetched.route.proxy == proxy.url
            assert fetcher._lean_pools  # the lean path was taken
        log = await _access_log_with(proxy, "TCP_MISS/200", len(objects))
    assert fetcher.stats.failures == 0 and fetcher.stats.requests == len(objects)
    assert log.count("TCP_MISS/200") == len(objects)


async def _access_log_with(proxy: squid.SquidProxy, marker: str, count: int) -> str:
    """Squid's access log once it has ``count`` lines with ``marker`` (or after 5 s).

    Squid writes a line when it ends a transaction, which may be just after the client has
    read the whole response: read right away, the last line can be missing.
    """
    log = proxy.access_log
    for _ in range(50):
        if log.count(marker) >= count:
            break
        await asyncio.sleep(0.1)
        log = proxy.access_log
    return log


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
GARBLED = {
    "negative chunk size": (CHUNKED_HEAD + b"-5\r\nhello world\r\n0\r\n\r\n", "bad chunk size"),
    "signed chunk size": (CHUNKED_HEAD + b"+5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    "0x chunk size": (CHUNKED_HEAD + b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    "huge chunk size": (CHUNKED_HEAD + b"1" * 20 + b"\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
    "chunk without CRLF": (CHUNKED_HEAD + b"5\r\nhelloXY0\r\n\r\n", "chunk not followed by CRLF"),
    "endless size line": (CHUNKED_HEAD + b"a" * 10_000, "chunk size line too long"),
    "endless trailer": (CHUNKED_HEAD + b"0\r\n" + b"X-Trailer: x\r\n" * 10_000, "trailer too long"),
    "non-ASCII length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",
        "bad Content-Length",
    ),
    "5000-digit length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        "bad Content-Length",
    ),
    "non-ASCII status": (b"HTTP/1.1 \xb200 OK\r\nContent-Length: 2\r\n\r\nab", "not an HTTP"),
}


@pytest.mark.parametrize("case", GARBLED)
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_garbled_framing_fails_with_an_http_error(
    pool_for: Callable[..., LeanPool], case: str, streamed: bool
) -> None:
    """A broken or hostile server (or anything between it and us: plain HTTP is not
    authenticated) gets a transfer error, never a hang, a busy loop or another exception."""
    answer, error = GARBLED[case]
    async with ScriptedServer(lambda head: answer, close_after=1) as server:
        consumer = SlowConsumer(pool_for(server.endpoint, read_timeout=5)) if streamed else None
        pool = consumer.pool if consumer is not None else pool_for(server.endpoint, 5)
        with pytest.raises(LeanHTTPError, match=error):
            await asyncio.wait_for(pool.get(head_for("/", server.endpoint), None, consumer), 3)


async def test_a_streamed_object_with_a_negative_chunk_size_is_a_transfer_error() -> None:
    """Through the fetcher: every attempt fails at once as a transfer error (it used to hand
    empty pieces to the sink in a busy loop), and the object ends as a TransferError."""
    digest = Algorithm.SHA1.hash(b"hello world")
    answer = CHUNKED_HEAD + b"-5\r\nhello world\r\n0\r\n\r\n"
    async with ScriptedServer(lambda head: answer, close_after=1) as server:
        settings = make_settings(f"{server.endpoint}/cvmfs/{FIX1}", max_retries=2)
        log: list[str] = []
        async with Fetcher(settings, max_in_flight=2, failover_rounds=1) as fetcher:
            with pytest.raises(TransferError, match="bad chunk size"):
                await asyncio.wait_for(
                    fetcher.stream_object(digest, "", lambda: MemorySink(log), size_hint=2 << 20),
                    10,
                )
    assert "commit" not in log and len(server.heads) == 3  # the first attempt and 2 retries
