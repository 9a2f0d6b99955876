"""A kept-alive connection the server closes just as it is reused: the GET is sent again on a
new connection, and that second attempt is counted, whichever HTTP client made it."""

from __future__ import annotations

import asyncio

import pytest

from shrinkwrap_async.network.fetcher import LEAN_HTTP_ENV, TRANSFER, Fetcher

from .conftest import make_settings

BODY = b"signed manifest stand-in\n"


class ClosingServer:
    """Answers the first GET of each connection and keeps the connection open; a second GET
    on it closes it unanswered (a server whose keep-alive timeout fired meanwhile)."""

    def __init__(self) -> None:
        self.connections = 0
        self.answered = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/cvmfs/repo"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
            writer.write(head + BODY)
            await writer.drain()
            self.answered += 1
            await reader.readuntil(b"\r\n\r\n")  # the reuse: closed without an answer
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(params=["aiohttp", "lean"])
def http_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "aiohttp":
        monkeypatch.setenv(LEAN_HTTP_ENV, "0")
    else:
        monkeypatch.delenv(LEAN_HTTP_ENV, raising=False)
    return str(request.param)


@pytest.mark.usefixtures("http_client")
async def test_a_silent_resend_on_a_new_connection_is_counted() -> None:
    closing = ClosingServer()
    async with closing as url:
        settings = make_settings(url, max_retries=1)
        async with Fetcher(settings, max_in_flight=1) as fetcher:
            assert await fetcher.fetch_file(".cvmfspublished") == BODY
            assert await fetcher.fetch_file(".cvmfspublished") == BODY
    # The second GET went out on the first connection, which closed, then on a second one.
    assert (closing.connections, closing.answered) == (2, 2)
    stats = fetcher.stats
    assert (stats.requests, stats.retries, stats.failures) == (3, 1, 1)
    assert stats.failure_kinds[TRANSFER] == 1
    assert sum(endpoint.requests for endpoint in stats.per_endpoint.values()) == 3
    assert sum(endpoint.failures for endpoint in stats.per_endpoint.values()) == 1
