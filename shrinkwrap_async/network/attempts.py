"""The outcome of one HTTP attempt, on either client (the lean one or aiohttp).

An attempt that fails raises :class:`AttemptFailed` with a *kind*, and the kind alone
decides what the fetcher does next (see ``network.fetcher``): retry on the same route,
repeat once without the proxies' cache, ask another host, or switch proxy. The checks here
turn an answer (status, range, length, rate of arrival) into that kind.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

    from shrinkwrap_async.network.endpoints import Route
    from shrinkwrap_async.network.lean_http import LeanResponse

TRANSFER = "transfer"  # retry on the same route, then fail over
BAD_DATA = "bad data"  # repeat once with no-cache, then fail over
MISSING = "missing"  # 404 from the host: ask the other hosts once
HOST_ERROR = "host error"  # switch host, no retry
PROXY_ERROR = "proxy error"  # switch proxy, no retry


class AttemptFailed(Exception):
    """One attempt on one route failed; ``kind`` is one of the kinds above."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class LowSpeedGuard:
    """Fails a transfer whose rate stays below ``limit`` bytes/s for ``window`` seconds."""

    __slots__ = ("limit", "received", "start", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.start = time.monotonic()
        self.received = 0

    def update(self, count: int) -> None:
        if self.limit <= 0:
            return
        self.received += count
        elapsed = time.monotonic() - self.start
        if elapsed >= self.window:
            if self.received < self.limit * elapsed:
                raise AttemptFailed(
                    TRANSFER, f"too slow ({self.received / elapsed:.0f} B/s < {self.limit})"
                )
            self.start += elapsed
            self.received = 0


def classify_status(response: aiohttp.ClientResponse | LeanResponse, route: Route) -> None:
    """Nothing for a 200; otherwise the failure its status (and its source) stands for."""
    status = response.status
    if status == 200:
        return
    from_proxy = route.proxy is not None and (
        "X-Squid-Error" in response.headers or "error=" in response.headers.get("Proxy-Status", "")
    )
    detail = f"HTTP {status}"
    if from_proxy:
        raise AttemptFailed(PROXY_ERROR, f"{detail} from the proxy")
    if status == 404:
        raise AttemptFailed(MISSING, detail)
    if status in (301, 302, 303, 307, 308):  # as the client: a host error unless followed
        where = response.headers.get("Location", "")
        raise AttemptFailed(
            HOST_ERROR,
            f"{detail}, a redirect to {where[:200]!r} (set CVMFS_FOLLOW_REDIRECTS=yes to follow)",
        )
    if status >= 500 or status == 429:
        raise AttemptFailed(TRANSFER, detail)
    raise AttemptFailed(PROXY_ERROR if route.proxy is not None else HOST_ERROR, detail)


def check_range_answer(
    response: aiohttp.ClientResponse, route: Route, offset: int, size: int
) -> None:
    """The answer to ``Range: bytes=offset-(offset+size-1)`` must be exactly that range.

    206 with the matching ``Content-Range``; a 200 (the whole file) only when the range
    is the whole file. Anything else from a host that ignores ranges is a host (or proxy)
    error: another route may serve them.
    """
    if response.status == 206:
        wanted = f"bytes {offset}-{offset + size - 1}/"
        answered = response.headers.get("Content-Range", "")
        if not answered.startswith(wanted):
            raise AttemptFailed(BAD_DATA, f"asked for {wanted[:-1]}, got {answered!r}")
        return
    classify_status(response, route)
    if offset != 0 or response.content_length != size:
        kind = PROXY_ERROR if route.proxy is not None else HOST_ERROR
        raise AttemptFailed(kind, "HTTP 200 to a Range request (byte ranges not served)")


def check_length(response: aiohttp.ClientResponse, received: int) -> None:
    expected = response.content_length
    if expected is not None and received != expected:
        raise AttemptFailed(TRANSFER, f"short transfer: {received} of {expected} bytes")


def describe(error: BaseException) -> str:
    """A transport error in a few words, for the failure's detail."""
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if str(error) else text
