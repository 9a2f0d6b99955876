"""An aiohttp static file server on 127.0.0.1 for tests: a Stratum-1 is a plain web server.

``StaticServer(docroot)`` serves ``docroot/<path>`` at ``http://127.0.0.1:<port>/<path>``
and counts the requests it answered, per path, so tests can assert which objects were
fetched.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from types import TracebackType

from aiohttp import web


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
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
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
