"""An aiohttp static file server on 127.0.0.1 for tests: a Stratum-1 is a plain web server.

``StaticServer(docroot)`` serves ``docroot/<path>`` at ``http://127.0.0.1:<port>/<path>``
and counts the requests it answered, per path, so tests can assert which objects were
fetched. ``serve_handler(pattern, handler)`` serves one route of a test's own (a geo API,
a server that records headers).
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GEO_ROUTE = "/cvmfs/{fqrn}/api/v1.0/geo/{token}/{names}"  # a Stratum-1's geo API, for serve_handler


async def start_app(app: web.Application, host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    """Start ``app`` on a free port of ``host``; returns its runner (to clean up) and port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    server = site._server
    assert server is not None
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def serve_handler(pattern: str, handler: Handler) -> AsyncIterator[str]:
    """GET ``pattern`` (aiohttp route syntax) answered by ``handler`` on 127.0.0.1; yields
    the base URL ``http://127.0.0.1:<port>``."""
    app = web.Application()
    app.router.add_get(pattern, handler)
    runner, port = await start_app(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class StaticServer:
    def __init__(self, docroot: str | os.PathLike[str], host: str = "127.0.0.1") -> None:
        self.docroot = Path(docroot).resolve()
        self.host = host
        self.port = 0
        self.requests: collections.Counter[str] = collections.Counter()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def repository_url(self, fqrn: str) -> str:
        return f"{self.url}/cvmfs/{fqrn}"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        self.requests[relative] += 1
        target = (self.docroot / relative).resolve()
        if self.docroot not in target.parents or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target, headers={"Content-Type": "application/octet-stream"})

    async def start(self) -> StaticServer:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self._runner, self.port = await start_app(app, self.host)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> StaticServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
