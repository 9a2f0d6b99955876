"""aiohttp, for what the lean client does not do: ``https://``, external data (ranges),
the geo API, and everything when ``SHRINKWRAP_ASYNC_LEAN_HTTP=0``.

aiohttp is imported on first use (:func:`load_aiohttp`), never with this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from shrinkwrap_async.network.attempts import (
    HOST_ERROR,
    TRANSFER,
    AttemptFailed,
    check_range_answer,
    classify_status,
    describe,
)
from shrinkwrap_async.network.headers import escape_path, request_headers

if TYPE_CHECKING:
    import aiohttp

    from shrinkwrap_async.network.endpoints import Route

READ_BUFFER = 256 * 1024  # aiohttp's default 64 KiB pauses the socket too often
MAX_REDIRECTS = 4  # with CVMFS_FOLLOW_REDIRECTS, as the client's libcurl (CURLOPT_MAXREDIRS)


def load_aiohttp() -> ModuleType:
    """aiohttp, imported on first use rather than with the fetcher.

    Importing it costs about 0.15 s of start-up (it builds two SSL contexts at import),
    as much as the rest of a no-change refresh. The root files, the certificate and
    small objects on plain ``http://`` go through the lean client, so a run that needs
    nothing else (an unchanged repository) never imports it.
    """
    import aiohttp

    return aiohttp


def new_session(
    connections: int, timeout: float, on_resent: Callable[[Route], None]
) -> aiohttp.ClientSession:
    """A session for one endpoint: ``connections`` at most, ``timeout`` (0: none) to
    connect and between reads, no decompression, no proxy from the environment."""
    aiohttp = load_aiohttp()
    connector = aiohttp.TCPConnector(
        limit=connections,
        limit_per_host=connections,
        ttl_dns_cache=300,
        keepalive_timeout=30,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=timeout or None, sock_read=timeout or None
        ),
        auto_decompress=False,
        read_bufsize=READ_BUFFER,
        raise_for_status=False,
        trust_env=False,
        skip_auto_headers=("Accept-Encoding",),
        trace_configs=[_resend_counter(on_resent)],
    )


def _resend_counter(on_resent: Callable[[Route], None]) -> aiohttp.TraceConfig:
    """Reports the attempts aiohttp makes on its own: a GET whose kept-alive connection
    turns out to be closed is sent again on a new connection (RFC 9112 9.3.1.1) without
    the caller seeing a failure (the lean client reports its own). ``trace_request_ctx``:
    the route."""
    trace = load_aiohttp().TraceConfig()

    async def started(_session: object, context: Any, _params: object) -> None:
        context.connections = context.redirects = 0

    async def connected(_session: object, context: Any, _params: object) -> None:
        context.connections += 1

    async def redirected(_session: object, context: Any, _params: object) -> None:
        context.redirects += 1

    async def ended(_session: object, context: Any, _params: object) -> None:
        for _ in range(context.connections - 1 - context.redirects):
            on_resent(context.trace_request_ctx)

    trace.on_request_start.append(started)
    trace.on_connection_create_end.append(connected)
    trace.on_connection_reuseconn.append(connected)
    trace.on_request_redirect.append(redirected)
    trace.on_request_end.append(ended)
    trace.on_request_exception.append(ended)
    return trace


class AiohttpRequest:
    """``async with`` one GET on a route; status and transport errors become
    :class:`~shrinkwrap_async.network.attempts.AttemptFailed`."""

    __slots__ = (
        "_context", "_response", "follow_redirects", "headers", "no_cache", "path", "ranged",
        "route", "session",
    )  # fmt: skip

    def __init__(
        self,
        session: aiohttp.ClientSession,
        route: Route,
        path: str,
        no_cache: bool,
        headers: Mapping[str, str] | None = None,
        ranged: tuple[int, int] | None = None,
        *,
        follow_redirects: bool = False,
    ) -> None:
        self.session = session
        self.route = route
        self.path = path
        self.no_cache = no_cache
        self.headers = headers  # added to the client's usual headers
        self.ranged = ranged  # (offset, size) asked with a Range header
        self.follow_redirects = follow_redirects  # at most MAX_REDIRECTS, as the client
        self._context: Any = None
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        from yarl import URL  # with aiohttp, which a request has needed anyway

        aiohttp = load_aiohttp()
        route = self.route
        url = URL(f"{route.host}/{escape_path(self.path)}", encoded=True)
        headers = request_headers(no_cache=self.no_cache)
        if self.headers:
            headers = {**headers, **self.headers}
        try:
            self._context = self.session.get(
                url,
                proxy=route.proxy,
                headers=headers,
                trace_request_ctx=route,
                allow_redirects=self.follow_redirects,
                max_redirects=MAX_REDIRECTS + 1,  # aiohttp fails at this count, curl after it
            )
            response = await self._context.__aenter__()
        except aiohttp.TooManyRedirects:
            self._context = None
            raise AttemptFailed(HOST_ERROR, f"more than {MAX_REDIRECTS} redirects") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self._context = None
            raise AttemptFailed(TRANSFER, describe(error)) from None
        try:
            if self.ranged is None:
                classify_status(response, route)
            else:
                check_range_answer(response, route, *self.ranged)
        except BaseException:
            response.close()
            await self._context.__aexit__(None, None, None)
            self._context = None
            raise
        self._response = response
        return response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        aiohttp = load_aiohttp()
        context, self._context = self._context, None
        response, self._response = self._response, None
        if context is not None:
            if exc is not None and response is not None:
                response.close()  # never hand a half-read connection back to the pool
            await context.__aexit__(exc_type, exc, tb)
        if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
            raise AttemptFailed(TRANSFER, describe(exc)) from None
        return False
