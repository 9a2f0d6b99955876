"""A fault-injecting HTTP forward proxy on loopback (127.0.0.1 by default), for failover tests.

Clients use it like a Squid: they send absolute-URI requests (``GET http://host/path``).
The proxy fetches the object from the origin (loopback origins only) and answers it,
possibly damaged. Per request it picks a :class:`Fault`, either from a deterministic
*schedule* (consumed in order, then falling back to probabilities) or at random with the
given probabilities (seeded, so runs are reproducible). ``max_faults_per_path`` bounds
the faults one path can meet, so that a client with enough retries always gets through
whatever order its concurrent requests arrive in. Several instances form a proxy
group. Every request is counted, with the fault applied and the headers it carried.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import random
from collections.abc import Iterable, Mapping
from types import TracebackType

import aiohttp
from aiohttp import web
from yarl import URL

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class Fault(enum.StrEnum):
    OK = "ok"
    RESET = "reset"  # close the connection without answering
    ERROR = "error"  # answer ``error_status`` (503 by default)
    TRUNCATE = "truncate"  # announce the full length, send half, close
    FLIP = "flip"  # flip one byte of the body
    STALL = "stall"  # say nothing for ``stall_seconds``, then close
    MISSING = "missing"  # answer 404


class FaultProxy:
    """``async with FaultProxy(faults={"flip": 0.2}) as proxy: ... proxy.url ...``"""

    def __init__(
        self,
        *,
        faults: Mapping[Fault | str, float] | None = None,
        schedule: Iterable[Fault | str] = (),
        seed: int = 0,
        error_status: int = 503,
        squid_error_header: bool = False,
        stall_seconds: float = 30.0,
        max_faults_per_path: int | None = None,
        name: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not host.startswith("127."):
            raise ValueError(f"{host}: the test proxy listens on loopback only")
        self.name = name
        self.host = host
        self.port = port
        self.max_faults_per_path = max_faults_per_path
        self.error_status = error_status
        self.squid_error_header = squid_error_header
        self.stall_seconds = stall_seconds
        self._rng = random.Random(seed)
        self.set_faults(faults or {}, schedule)
        self.requests = 0
        self.requests_by_path: collections.Counter[str] = collections.Counter()
        self.applied: collections.Counter[Fault] = collections.Counter()
        self.faults_by_path: collections.Counter[str] = collections.Counter()
        self.headers_seen: list[tuple[str, dict[str, str]]] = []
        self._runner: web.ServerRunner | None = None
        self._upstream: aiohttp.ClientSession | None = None

    def set_faults(
        self, faults: Mapping[Fault | str, float], schedule: Iterable[Fault | str] = ()
    ) -> None:
        """Replace the fault probabilities and the schedule (takes effect at once)."""
        self._faults = [(Fault(kind), float(p)) for kind, p in faults.items()]
        if sum(p for _, p in self._faults) > 1.0:
            raise ValueError("fault probabilities add up to more than 1")
        self._schedule = collections.deque(Fault(kind) for kind in schedule)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _next_fault(self) -> Fault:
        if self._schedule:
            return self._schedule.popleft()
        draw = self._rng.random()
        for kind, probability in self._faults:
            if draw < probability:
                return kind
            draw -= probability
        return Fault.OK

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        target = URL(request.raw_path)
        if not target.is_absolute() or target.host not in LOOPBACK_HOSTS:
            return web.Response(status=403, text="this test proxy only forwards to loopback\n")
        self.requests += 1
        self.requests_by_path[target.path] += 1
        self.headers_seen.append((target.path, dict(request.headers)))
        fault = self._next_fault()
        if fault is not Fault.OK:
            limit = self.max_faults_per_path
            if limit is not None and self.faults_by_path[target.path] >= limit:
                fault = Fault.OK
            else:
                self.faults_by_path[target.path] += 1
        self.applied[fault] += 1

        if fault is Fault.RESET:
            _abort(request)
            return web.Response()
        if fault is Fault.STALL:
            await asyncio.sleep(self.stall_seconds)
            _abort(request)
            return web.Response()
        if fault is Fault.MISSING:
            return web.Response(status=404, text="not found (injected)\n")
        if fault is Fault.ERROR:
            headers = {"X-Squid-Error": "ERR_INJECTED 0"} if self.squid_error_header else {}
            return web.Response(status=self.error_status, text="injected\n", headers=headers)

        status, body, content_type = await self._fetch_origin(target, request)
        if status != 200:
            return web.Response(status=status, body=body)
        if fault is Fault.FLIP:
            damaged = bytearray(body or b"\0")
            position = self._rng.randrange(len(damaged))
            damaged[position] ^= 0xFF
            return web.Response(body=bytes(damaged), content_type=content_type)
        if fault is Fault.TRUNCATE:
            response = web.StreamResponse(headers={"Content-Type": content_type})
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            _abort(request)
            return response
        return web.Response(body=body, content_type=content_type)

    async def _fetch_origin(self, target: URL, request: web.BaseRequest) -> tuple[int, bytes, str]:
        assert self._upstream is not None
        forwarded = {
            name: value
            for name, value in request.headers.items()
            if name in ("User-Agent", "Pragma", "Cache-Control", "Accept-Encoding")
        }
        try:
            async with self._upstream.get(target, headers=forwarded) as response:
                body = await response.read()
                content_type = response.headers.get("Content-Type", "application/octet-stream")
                return response.status, body, content_type.split(";")[0]
        except (aiohttp.ClientError, OSError):
            return 502, b"origin unreachable\n", "text/plain"

    async def start(self) -> FaultProxy:
        self._upstream = aiohttp.ClientSession(auto_decompress=False, trust_env=False)
        server = web.Server(self._handle, handler_cancellation=True)
        self._runner = web.ServerRunner(server, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _abort(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
