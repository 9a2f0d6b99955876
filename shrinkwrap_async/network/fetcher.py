"""The fetch layer: per-endpoint connection pools, failover, retries, verified streaming.

A request walks *routes* (host × proxy) in the order the shared
:class:`~shrinkwrap_async.network.endpoints.FailoverState` gives it:

- transfer errors (connection refused or reset, timeouts, too slow, truncated body, 5xx,
  429) are retried on the same route ``max_retries`` times with exponential backoff and
  jitter, then the proxy (or, DIRECT, the host) is burned and the next route is tried;
- bad data (hash mismatch) is repeated once at once with ``Pragma``/``Cache-Control:
  no-cache``, then the next route is tried;
- 404 from a host means "this host does not have it": the other hosts are asked once, no
  proxy is burned, no retry; 404 everywhere is :class:`ObjectMissingError`;
- other HTTP errors switch proxy (when the answer came from a proxy) or host;
- when every proxy failed for a host, the host is burned and the next host is tried.

A bulk export cannot afford to give up on an object because of a flaky proxy, so when a
whole pass over the routes failed with transient errors, the request makes up to
``failover_rounds`` passes in all (with backoff between them) before raising. Bodies are
hashed as they arrive and nothing is committed before the hash matched.

External files (catalog flag 128) are fetched by their repository path from the separate
host chain ``CVMFS_EXTERNAL_URL`` with its own proxies and timeouts
(:meth:`Fetcher.stream_external`); the chunks of a chunked external file are byte ranges
of that one URL. The same failover, retry and verification rules apply.

One attempt's failure kinds and the checks of an answer are in ``network.attempts``, the
sinks bodies go to in ``network.sinks``; a GET goes through the built-in client
(``network.lean_http``) on plain ``http://``, else through aiohttp
(``network.aiohttp_transport``).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from shrinkwrap_async.hashing import Digest, ObjectSuffix, stored_size_limit
from shrinkwrap_async.network import geo
from shrinkwrap_async.network.aiohttp_transport import AiohttpRequest, load_aiohttp, new_session
from shrinkwrap_async.network.attempts import (
    BAD_DATA,
    HOST_ERROR,
    MISSING,
    TRANSFER,
    AttemptFailed,
    LowSpeedGuard,
    check_length,
    classify_status,
)
from shrinkwrap_async.network.endpoints import DIRECT, FailoverState, Route
from shrinkwrap_async.network.errors import (
    ExternalNotConfiguredError,
    FetchError,
    ObjectCorruptError,
    ObjectMissingError,
    TransferError,
)
from shrinkwrap_async.network.headers import (
    INFO_HEADER,
    escape_path,
    request_headers,
    request_info,
)
from shrinkwrap_async.network.lean_http import (
    LeanHTTPError,
    LeanPool,
    LeanResponse,
    LeanTimeout,
    LeanTooLarge,
    OnPiece,
    request_head_suffix,
)
from shrinkwrap_async.network.proxy_addresses import (
    AddressPolicy,
    ProxyResolver,
    expand_proxy_groups,
)
from shrinkwrap_async.network.sinks import (
    MemorySink,
    ObjectSink,
    SinkFailed,
    discard_sink,
    sink_commit,
    sink_write,
)

if TYPE_CHECKING:
    import aiohttp

    from shrinkwrap_async.config.settings import ClientSettings

T = TypeVar("T")

MiB = 1024 * 1024
PIECE_SIZE = 256 * 1024  # stream pieces handed to sinks (bounded memory per request)
READ_WHOLE_LIMIT = MiB  # fetch_object reads bodies up to this size in one call
DEFAULT_FILE_MAX = 16 * MiB
LEAN_HTTP_ENV = "SHRINKWRAP_ASYNC_LEAN_HTTP"  # "0": everything through aiohttp
LEAN_BODY_LIMIT = 16 * MiB  # whole-body GETs with a known bound this size go lean
# Catalogs stored in up to this many bytes (most: tens to hundreds of KiB) are fetched whole
# by the lean client, so a refresh that needs nothing else never starts aiohttp.
LEAN_CATALOG_SIZE = 4 * MiB
# Streamed data objects up to this inflated size are fetched whole (at most -j of them in
# memory at once) and handed to their sink in one piece; larger ones and chunks stream.
LEAN_OBJECT_SIZE = 1 * MiB


class _TooLargeForLean(Exception):
    """A lean GET was refused for its size; the object is to be streamed instead."""


@dataclass
class EndpointStats:
    requests: int = 0
    failures: int = 0
    bytes_received: int = 0


@dataclass
class FetchStats:
    """Counters of a :class:`Fetcher` (HTTP requests, not objects)."""

    requests: int = 0
    retries: int = 0  # same-route retries after transfer errors
    backoffs: int = 0  # sleeps before a retry or a new pass
    no_cache_retries: int = 0
    failovers: int = 0  # routes abandoned for the next one
    failures: int = 0  # failed HTTP attempts
    bytes_received: int = 0
    objects: int = 0  # successful fetches
    missing: int = 0
    corrupt: int = 0
    unreachable: int = 0
    failure_kinds: Counter[str] = field(default_factory=Counter)
    per_endpoint: dict[str, EndpointStats] = field(default_factory=dict)

    def endpoint(self, name: str) -> EndpointStats:
        stats = self.per_endpoint.get(name)
        if stats is None:
            stats = self.per_endpoint[name] = EndpointStats()
        return stats


@dataclass(frozen=True, slots=True)
class _LeanRoute:
    pool: LeanPool
    target: str  # request-target up to the object path (absolute URL through a proxy)
    suffixes: tuple[bytes, bytes]  # the head after the target (Host, ...): normal, no-cache

    def head(self, path: str, no_cache: bool, info: str | None = None) -> bytes:
        """The GET head for the repository path ``path`` (``info``: a cvmfs-info line)."""
        target = (self.target + escape_path(path)).encode("latin-1")
        suffix = self.suffixes[no_cache]
        if info is not None:  # before the blank line that ends the head
            suffix = suffix[:-2] + f"{INFO_HEADER}: {info}\r\n\r\n".encode("latin-1")
        return b"GET " + target + suffix


@dataclass(slots=True)
class UnverifiedObject:
    """Bytes of an object whose hash the caller still has to check (see
    :meth:`Fetcher.fetch_object_unverified`); ``route`` is where they came from."""

    data: bytes
    route: Route
    suffix: str
    max_size: int | None


class _Intake(Generic[T]):
    """Where the pieces of a streamed body go, on either client: counted, held to the
    low-speed limit, hashed, and written to ``sink``; :meth:`commit` after the transfer."""

    __slots__ = ("endpoint", "guard", "hasher", "sink", "stats")

    def __init__(self, fetcher: Fetcher, route: Route, digest: Digest, sink: ObjectSink[T]):
        self.stats = fetcher.stats
        self.endpoint = fetcher.stats.endpoint(route.endpoint)
        self.guard = LowSpeedGuard(fetcher.settings.low_speed_limit, fetcher._timeout_for(route))
        self.hasher = digest.algorithm.new()
        self.sink = sink

    async def __call__(self, piece: bytes) -> None:
        size = len(piece)
        self.stats.bytes_received += size
        self.endpoint.bytes_received += size
        self.guard.update(size)
        self.hasher.update(piece)
        await sink_write(self.sink, piece)

    async def commit(self, transfer: Coroutine[Any, Any, object], digest: Digest) -> T:
        """Run ``transfer`` (which feeds this intake); commit the sink if the hash matched,
        else (or on any failure) discard it."""
        try:
            await transfer
            if self.hasher.digest() != digest.raw:
                raise AttemptFailed(BAD_DATA, "content hash mismatch")
        except BaseException as error:
            await discard_sink(self.sink, error)
            raise
        return await sink_commit(self.sink)


class Fetcher:
    """HTTP access to a repository's servers; use as ``async with Fetcher(settings) as f``.

    ``max_in_flight`` caps HTTP requests in flight over all endpoints (the ``-j`` of the
    command line); ``connections_per_endpoint`` is the pool size of each proxy (and of
    each host reached DIRECT), the politeness cap towards shared infrastructure.
    """

    def __init__(
        self,
        settings: ClientSettings,
        *,
        max_in_flight: int = 64,
        connections_per_endpoint: int = 16,
        failover_rounds: int = 3,
        rng: random.Random | None = None,
    ) -> None:
        if max_in_flight < 1 or connections_per_endpoint < 1 or failover_rounds < 1:
            raise ValueError("max_in_flight, connections_per_endpoint, rounds must be >= 1")
        self.settings = settings
        self.max_in_flight = max_in_flight
        self.connections_per_endpoint = connections_per_endpoint
        self.failover_rounds = failover_rounds
        self._rng = rng or random.Random()

        def chain(hosts: Sequence[str], proxies: Sequence[Sequence[str]]) -> FailoverState:
            return FailoverState(
                hosts,
                proxies,
                proxy_reset_after=settings.proxy_reset_after,
                host_reset_after=settings.host_reset_after,
                rng=self._rng,
            )

        self.state = chain(settings.server_urls, settings.proxy_groups)
        if not settings.use_geoapi:  # else after the geo order (__aenter__)
            self.state.keep_first_hosts(settings.max_servers)
        # The external-data chain (CVMFS_EXTERNAL_URL), when configured.
        self.external_state: FailoverState | None = None
        if settings.external_urls:
            self.external_state = chain(settings.external_urls, settings.external_proxy_groups)
        self.stats = FetchStats()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self.requests_in_flight = 0  # attempts holding a slot of ``max_in_flight`` now
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._lean: dict[Route, _LeanRoute | None] = {}
        self._routes: dict[tuple[str, str | None, bool], Route] = {}
        self._lean_pools: dict[str, LeanPool] = {}
        self._closed = False
        self._external_sorted: asyncio.Lock | None = None
        self._external_sort_done = False

    def has_requests_in_flight(self) -> bool:
        """Whether requests hold slots now: work that a call blocking the loop holds up
        (see ``pipeline.blocking_calls``)."""
        return self.requests_in_flight > 0

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Fetcher:
        if self.settings.use_geoapi and (
            len(self.state.hosts) > 1 or self.settings.fallback_proxy_groups > 1
        ):
            await self._geo_sort_repository()
        self.state.keep_first_hosts(self.settings.max_servers)
        await self._expand_proxy_names()
        return self

    async def _expand_proxy_names(self) -> None:
        """Each proxy named by a host name becomes one proxy per address (after the geo
        order, which names proxies by their host names)."""
        chains = [s for s in (self.state, self.external_state) if s is not None and s.uses_proxies]
        if not chains:
            return
        policy = AddressPolicy.of(self.settings)
        resolver = ProxyResolver(policy)
        for chain in chains:
            groups = await expand_proxy_groups(
                chain.proxy_groups, policy, self._rng, resolver.resolve
            )
            if groups != chain.proxy_groups:
                chain.replace_proxy_groups(groups)

    async def _sort_external_hosts_once(self) -> None:
        """Geo-order the external hosts before the first external request (not at start:
        most runs fetch no external file, and an unchanged repository fetches nothing)."""
        if self._external_sorted is None:
            self._external_sorted = asyncio.Lock()
        async with self._external_sorted:
            state = self.external_state
            if state is not None and not self._external_sort_done:
                self._external_sort_done = True
                if self.settings.use_geoapi and len(state.hosts) > 1:
                    await self._geo_sort(state)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        for pool in self._lean_pools.values():
            pool.close()
        self._lean_pools, self._lean = {}, {}
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _session(self, route: Route) -> aiohttp.ClientSession:
        name = route.pool_key
        session = self._sessions.get(name)
        if session is None:
            if self._closed:
                raise RuntimeError("Fetcher is closed")
            session = new_session(
                self.connections_per_endpoint, self._timeout_for(route), self._count_resent
            )
            self._sessions[name] = session
        return session

    def _aiohttp_request(
        self,
        route: Route,
        path: str,
        no_cache: bool,
        headers: Mapping[str, str] | None = None,
        ranged: tuple[int, int] | None = None,
    ) -> AiohttpRequest:
        """One GET on ``route`` through aiohttp, counted as a request."""
        self._count_request(route)
        if self.settings.send_info_header and (info := request_info(self.settings.fqrn)):
            headers = {**(headers or {}), INFO_HEADER: info}
        return AiohttpRequest(
            self._session(route),
            route,
            path,
            no_cache,
            headers,
            ranged,
            follow_redirects=self.settings.follow_redirects,
        )

    @property
    def labels_requests(self) -> bool:
        """Whether requests carry the cvmfs-info label (``CVMFS_SEND_INFO_HEADER``): callers
        set the label (:class:`~shrinkwrap_async.network.headers.requests_for`) only then."""
        return self.settings.send_info_header

    def _timeout_for(self, route: Route) -> float:
        if route.external:
            return self.settings.external_timeout_for(proxied=route.proxy is not None)
        return self.settings.timeout if route.proxy is not None else self.settings.timeout_direct

    # -- public API ---------------------------------------------------------------------

    async def fetch_file(
        self, name: str, *, max_size: int = DEFAULT_FILE_MAX, fresh: bool = False
    ) -> bytes:
        """A file at the repository root (``.cvmfspublished``, ...); no hash to check.

        ``fresh``: ask proxies for a new copy (``Pragma: no-cache``), as after a copy that
        failed its signature check; counted as a retry."""
        path = name.lstrip("/")
        if fresh:
            self.stats.no_cache_retries += 1

        async def attempt(route: Route, no_cache: bool) -> bytes:
            return await self._get_whole(route, path, no_cache or fresh, max_size)

        return await self._run(path, attempt)

    async def fetch_object(
        self, digest: Digest, suffix: str = "", *, max_size: int | None = None
    ) -> bytes:
        """The stored bytes of ``data/…`` (compressed as served), verified against ``digest``.

        With ``max_size`` up to :data:`LEAN_BODY_LIMIT` the GET goes through the lean
        client (plain ``http://`` routes), without it through aiohttp.
        """
        path = digest.object_path(suffix)
        return await self._run(path, self._verified_attempt(digest, suffix, max_size))

    async def fetch_object_unverified(
        self, digest: Digest, suffix: str = "", *, max_size: int | None = None
    ) -> UnverifiedObject:
        """The stored bytes of ``data/…``, *not yet* checked against ``digest``.

        For callers that hash many small bodies in a batch off the event loop. A body whose
        hash does not match must go back through :meth:`refetch_object`, which counts the
        failed attempt and continues exactly as :meth:`fetch_object` would have (no-cache
        repeat on the route that served it, then failover).
        """
        path = digest.object_path(suffix)

        async def attempt(route: Route, no_cache: bool) -> UnverifiedObject:
            body = await self._get_whole(route, path, no_cache, max_size)
            return UnverifiedObject(body, route, suffix, max_size)

        return await self._run(path, attempt)

    async def refetch_object(self, digest: Digest, bad: UnverifiedObject) -> bytes:
        """``bad`` (from :meth:`fetch_object_unverified`) failed its hash: fetch it verified.

        The failed attempt is counted as :meth:`fetch_object` counts a mismatch, and the
        route that served it is asked again first with ``no-cache``.
        """
        self.stats.objects -= 1  # counted as fetched when the bytes arrived
        self._count_failure(bad.route, BAD_DATA)
        self.stats.no_cache_retries += 1
        return await self._run(
            digest.object_path(bad.suffix),
            self._verified_attempt(digest, bad.suffix, bad.max_size),
            no_cache_route=bad.route,
        )

    def _verified_attempt(
        self, digest: Digest, suffix: str, max_size: int | None
    ) -> Callable[[Route, bool], Awaitable[bytes]]:
        path = digest.object_path(suffix)

        async def attempt(route: Route, no_cache: bool) -> bytes:
            body = await self._get_whole(route, path, no_cache, max_size)
            if not digest.matches(body):
                raise AttemptFailed(BAD_DATA, "content hash mismatch")
            return body

        return attempt

    async def stream_object(
        self,
        digest: Digest,
        suffix: str,
        sink_factory: Callable[[], ObjectSink[T]],
        *,
        size_hint: int | None = None,
    ) -> T:
        """Stream ``data/…`` into a fresh sink per attempt; commit only a verified one.

        On a route the lean client can take (plain ``http://``) the body is streamed
        through it, else through aiohttp. Catalogs are usually small: a catalog's whole
        body is first fetched (up to :data:`LEAN_CATALOG_SIZE`) and handed to the sink in
        one piece. So is a data object whose inflated size ``size_hint`` is at most
        :data:`LEAN_OBJECT_SIZE`. A body announced larger is refused after its head and
        streamed instead, at the cost of one extra request; one sent without a length
        (chunked) is only found larger at the limit, after reading that much in vain
        (Stratum-1s and Squid announce the length of a static object).
        """
        path = digest.object_path(suffix)
        lean_below = None
        if suffix == ObjectSuffix.CATALOG:
            lean_below = LEAN_CATALOG_SIZE
        elif size_hint is not None and size_hint <= LEAN_OBJECT_SIZE:
            lean_below = stored_size_limit(size_hint)
        too_large_for_lean = False

        async def attempt(route: Route, no_cache: bool) -> T:
            nonlocal too_large_for_lean
            lean = self._lean_route(route)
            if lean is None:
                request = self._aiohttp_request(route, path, no_cache)
                return await self._stream_verified(route, request, digest, sink_factory(), None)
            if lean_below is not None and not too_large_for_lean:
                try:
                    response = await self._lean_request(
                        route, lean, path, no_cache, lean_below, refuse_large=True
                    )
                except _TooLargeForLean:
                    too_large_for_lean = True
                else:
                    return await self._commit_whole(digest, response.body, sink_factory())
            return await self._lean_stream(route, lean, path, no_cache, digest, sink_factory())

        return await self._run(path, attempt)

    async def stream_external(
        self,
        path: str,
        digest: Digest,
        sink_factory: Callable[[], ObjectSink[T]],
        *,
        byte_range: tuple[int, int] | None = None,
        max_size: int | None = None,
    ) -> T:
        """Stream the external file at repository path ``path`` (``/dir/file``) from the
        ``CVMFS_EXTERNAL_URL`` hosts into a fresh sink per attempt; commit only a verified one.

        The URL is an external host followed by ``path`` (URL-escaped). ``digest`` is the
        catalog's hash of the bytes as served. ``byte_range`` ``(offset, size)`` asks for
        those bytes only (``Range``; a chunk of a chunked external file). At most
        ``max_size`` bytes are accepted (a range: its size). Raises
        :class:`ExternalNotConfiguredError` when no external URL is configured, else the
        errors of :meth:`stream_object`.
        """
        if self.external_state is None:
            raise ExternalNotConfiguredError(path)
        if not self._external_sort_done:
            await self._sort_external_hosts_once()
        relative = path.lstrip("/")
        label = "/" + relative
        headers: Mapping[str, str] | None = None
        if byte_range is not None:
            offset, size = byte_range
            if offset < 0 or size <= 0:
                raise ValueError(f"bad byte range {byte_range} for {label}")
            last = offset + size - 1
            label = f"{label} [bytes {offset}-{last}]"
            headers = {"Range": f"bytes={offset}-{last}"}
            max_size = size if max_size is None else min(max_size, size)

        async def attempt(route: Route, no_cache: bool) -> T:
            request = self._aiohttp_request(route, relative, no_cache, headers, byte_range)
            return await self._stream_verified(route, request, digest, sink_factory(), max_size)

        return await self._run(label, attempt, external=True)

    async def fetch_external(
        self,
        path: str,
        digest: Digest,
        *,
        byte_range: tuple[int, int] | None = None,
        max_size: int | None = None,
    ) -> bytes:
        """The bytes of an external file (or of ``byte_range`` of it), verified against
        ``digest``; see :meth:`stream_external`."""
        return await self.stream_external(
            path, digest, MemorySink, byte_range=byte_range, max_size=max_size
        )

    async def _stream_verified(
        self,
        route: Route,
        request: AiohttpRequest,
        digest: Digest,
        sink: ObjectSink[T],
        max_size: int | None,
    ) -> T:
        """One streamed GET through aiohttp into ``sink``: hashed as it arrives, committed
        only if it matched."""
        intake = _Intake(self, route, digest, sink)

        async def transfer() -> None:
            async with request as response:
                length = response.content_length
                if max_size is not None and length is not None and length > max_size:
                    raise AttemptFailed(
                        BAD_DATA, f"{length} bytes announced, at most {max_size} expected"
                    )
                received = 0
                while piece := await response.content.read(PIECE_SIZE):
                    received += len(piece)
                    if max_size is not None and received > max_size:
                        raise AttemptFailed(BAD_DATA, f"more than {max_size} bytes received")
                    await intake(piece)
                check_length(response, received)

        return await intake.commit(transfer(), digest)

    async def _lean_stream(
        self,
        route: Route,
        lean: _LeanRoute,
        path: str,
        no_cache: bool,
        digest: Digest,
        sink: ObjectSink[T],
    ) -> T:
        """:meth:`_stream_verified` on the lean client."""
        intake = _Intake(self, route, digest, sink)
        transfer = self._lean_request(route, lean, path, no_cache, None, on_piece=intake)
        return await intake.commit(transfer, digest)

    async def _commit_whole(self, digest: Digest, body: bytes, sink: ObjectSink[T]) -> T:
        """A whole verified-or-refused body through ``sink`` (see :meth:`stream_object`)."""
        try:
            if not digest.matches(body):
                raise AttemptFailed(BAD_DATA, "content hash mismatch")
            await sink_write(sink, body)
        except BaseException as error:
            await discard_sink(sink, error)
            raise
        return await sink_commit(sink)

    # -- one HTTP attempt ---------------------------------------------------------------

    def _lean_route(self, route: Route) -> _LeanRoute | None:
        """How to send a small GET on ``route`` without aiohttp (plain http only)."""
        try:
            return self._lean[route]
        except KeyError:
            pass
        lean = None
        # The lean client does not follow redirects: with CVMFS_FOLLOW_REDIRECTS, aiohttp does.
        lean_wanted = (
            os.environ.get(LEAN_HTTP_ENV, "1") != "0" and not self.settings.follow_redirects
        )
        if not self._closed and lean_wanted:
            host = urlsplit(route.host)
            endpoint = route.endpoint
            if host.scheme == "http" and endpoint.startswith("http://") and host.hostname:
                pool = self._lean_pools.get(endpoint)
                if pool is None:
                    timeout = self._timeout_for(route)
                    pool = self._lean_pools[endpoint] = LeanPool(
                        endpoint,
                        limit=self.connections_per_endpoint,
                        connect_timeout=timeout,
                        read_timeout=timeout,
                        on_resend=lambda route=route: self._count_resent(route),
                    )
                target = route.host if route.proxy is not None else host.path
                suffixes = (
                    request_head_suffix(host.netloc, request_headers(no_cache=False)),
                    request_head_suffix(host.netloc, request_headers(no_cache=True)),
                )
                lean = _LeanRoute(pool, target.rstrip("/") + "/", suffixes)
        self._lean[route] = lean
        return lean

    async def _lean_request(
        self,
        route: Route,
        lean: _LeanRoute,
        path: str,
        no_cache: bool,
        max_size: int | None,
        *,
        on_piece: OnPiece | None = None,
        refuse_large: bool = False,
    ) -> LeanResponse:
        """One GET on the lean client, counted, its failures and status classified as
        aiohttp's would be. A 200's body comes whole (over ``max_size``: bad data, or with
        ``refuse_large`` :class:`_TooLargeForLean`, and the caller streams it), or is
        handed to ``on_piece`` as it arrives."""
        self._count_request(route)
        info = request_info(self.settings.fqrn) if self.settings.send_info_header else None
        try:
            response = await lean.pool.get(lean.head(path, no_cache, info), max_size, on_piece)
        except LeanTooLarge as error:
            if refuse_large:
                raise _TooLargeForLean(str(error)) from None
            raise AttemptFailed(BAD_DATA, str(error)) from None
        except LeanTimeout:
            raise AttemptFailed(TRANSFER, "timed out") from None
        except (LeanHTTPError, OSError) as error:
            raise AttemptFailed(TRANSFER, str(error) or type(error).__name__) from None
        classify_status(response, route)
        if response.body:
            self.stats.bytes_received += len(response.body)
            self.stats.endpoint(route.endpoint).bytes_received += len(response.body)
        return response

    async def _get_whole(
        self, route: Route, path: str, no_cache: bool, max_size: int | None
    ) -> bytes:
        """One GET of a whole body: lean when the body is bounded and the route allows."""
        if max_size is not None and max_size <= LEAN_BODY_LIMIT:
            lean = self._lean_route(route)
            if lean is not None:
                response = await self._lean_request(route, lean, path, no_cache, max_size)
                return response.body
        async with self._aiohttp_request(route, path, no_cache) as response:
            return await self._read_body(route, response, max_size)

    async def _read_body(
        self, route: Route, response: aiohttp.ClientResponse, max_size: int | None
    ) -> bytes:
        length = response.content_length
        if max_size is not None and length is not None and length > max_size:
            raise AttemptFailed(BAD_DATA, f"{length} bytes announced, at most {max_size} expected")
        if length is not None and length <= READ_WHOLE_LIMIT:
            body = await response.read()
            pieces = [body]
            received = len(body)
        else:
            pieces = []
            received = 0
            guard = LowSpeedGuard(self.settings.low_speed_limit, self._timeout_for(route))
            while piece := await response.content.read(PIECE_SIZE):
                pieces.append(piece)
                received += len(piece)
                guard.update(len(piece))
                if max_size is not None and received > max_size:
                    raise AttemptFailed(BAD_DATA, f"more than {max_size} bytes received")
        self.stats.bytes_received += received
        self.stats.endpoint(route.endpoint).bytes_received += received
        check_length(response, received)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    # -- failover -----------------------------------------------------------------------

    def _route(self, host: str, proxy: str | None, external: bool) -> Route:
        """The one :class:`Route` of these parts (made once: every request walks them)."""
        key = (host, proxy, external)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = Route(host, proxy, external)
        return route

    async def _run(
        self,
        path: str,
        attempt: Callable[[Route, bool], Awaitable[T]],
        *,
        no_cache_route: Route | None = None,
        external: bool = False,
    ) -> T:
        """Walk the routes (see the module docstring); ``no_cache_route``, met in the first
        pass, starts with the no-cache repeat (its first answer was already bad data).
        ``external``: the routes of the external-data chain."""
        state = self.external_state if external else self.state
        assert state is not None
        missing_on: set[str] = set()
        outcomes: list[tuple[Route, str, str]] = []
        for round_number in range(self.failover_rounds):
            if round_number:
                await self._backoff(round_number, self.settings.backoff_init)
            outcomes = []
            hosts = [h for h in state.host_order() if h not in missing_on]
            for host in hosts:
                host_started = state.clock()
                proxy_failures = 0
                proxies = state.proxy_order()
                for proxy in proxies:
                    route = self._route(host, proxy, external)
                    started = state.clock()
                    no_cache = route == no_cache_route
                    if no_cache:
                        no_cache_route = None  # only for the route's next attempt
                    try:
                        result = await self._try_route(route, path, attempt, no_cache=no_cache)
                    except AttemptFailed as failure:
                        outcomes.append((route, failure.kind, failure.detail))
                        self.stats.failovers += 1
                        if failure.kind == MISSING:
                            missing_on.add(host)
                            break
                        if failure.kind == HOST_ERROR or not state.uses_proxies:
                            state.host_failed(host, started)
                            break
                        state.proxy_failed(proxy, started)
                        proxy_failures += 1
                        continue
                    self.stats.objects += 1
                    return result
                if proxy_failures == len(proxies):
                    # Every proxy failed for this host: count it as a host failure (§10.5).
                    state.host_failed(host, host_started)
            if missing_on and len(missing_on) == len(state.hosts):
                self.stats.missing += 1
                raise ObjectMissingError(path, f"not found (404) on {_plural(len(missing_on))}")
            if not outcomes:
                break
        raise self._final_error(path, outcomes, missing_on)

    def _final_error(
        self, path: str, outcomes: list[tuple[Route, str, str]], missing_on: set[str]
    ) -> FetchError:
        summary = "; ".join(f"{route}: {detail}" for route, _, detail in outcomes[-4:])
        if len(outcomes) > 4:
            summary = f"... {summary}"
        if missing_on:
            summary = f"404 on {len(missing_on)} host(s); {summary}"
        rounds = f"after {self.failover_rounds} pass(es) over all hosts and proxies"
        if outcomes and all(kind == BAD_DATA for _, kind, _ in outcomes):
            self.stats.corrupt += 1
            return ObjectCorruptError(path, f"corrupt data {rounds}: {summary}")
        self.stats.unreachable += 1
        return TransferError(path, f"failed {rounds}: {summary}")

    async def _try_route(
        self,
        route: Route,
        path: str,
        attempt: Callable[[Route, bool], Awaitable[T]],
        *,
        no_cache: bool = False,
    ) -> T:
        retries = 0
        while True:
            try:
                async with self._in_flight:
                    self.requests_in_flight += 1
                    try:
                        return await attempt(route, no_cache)
                    finally:
                        self.requests_in_flight -= 1
            except SinkFailed as failure:
                raise failure.error from None
            except AttemptFailed as failure:
                self._count_failure(route, failure.kind)
                if failure.kind == BAD_DATA and not no_cache:
                    no_cache = True
                    self.stats.no_cache_retries += 1
                    continue
                if failure.kind == TRANSFER and retries < self.settings.max_retries:
                    retries += 1
                    self.stats.retries += 1
                    await self._backoff(retries, self.settings.backoff_init)
                    continue
                raise

    def _count_request(self, route: Route) -> None:
        self.stats.requests += 1
        self.stats.endpoint(route.endpoint).requests += 1

    def _count_resent(self, route: Route) -> None:
        """A GET sent again on a new connection by the HTTP client itself (a kept-alive
        connection closed before answering): one more request, a failed attempt, a retry."""
        self._count_request(route)
        self._count_failure(route, TRANSFER)
        self.stats.retries += 1

    def _count_failure(self, route: Route, kind: str) -> None:
        self.stats.failures += 1
        self.stats.failure_kinds[kind] += 1
        self.stats.endpoint(route.endpoint).failures += 1

    async def _backoff(self, attempt: int, initial: float) -> None:
        """Sleep before retry ``attempt`` (1-based): uniform in [0, init], then doubling."""
        if initial <= 0:
            return
        delay = self._rng.uniform(0, initial) * 2 ** (attempt - 1)
        delay = min(delay, self.settings.backoff_max or delay)
        self.stats.backoffs += 1
        await asyncio.sleep(delay)

    # -- geo ordering -------------------------------------------------------------------

    async def _geo_sort_repository(self) -> None:
        """Order the repository's servers and its fallback proxy groups by the geo API of
        the servers (one request, as the client makes it)."""
        state = self.state
        first_fallback = len(state.proxy_groups) - self.settings.fallback_proxy_groups
        route_proxy = state.proxy_order()[0]
        order = await geo.sort_servers_and_fallback(
            state.hosts,
            [group[0] for group in state.proxy_groups[first_fallback:]],
            proxy=route_proxy,
            regular_proxies=first_fallback > 0 and state.uses_proxies,
            fetch_text=lambda url: self._fetch_url_text(url, route_proxy),
            rng=self._rng,
        )
        if order is not None:
            state.reorder_hosts(order.servers)
            state.reorder_proxy_groups(first_fallback, order.fallback_groups)

    async def _geo_sort(self, chain: FailoverState) -> None:
        """Order the hosts of ``chain`` (the external-data hosts) by the geo API of the
        repository's servers, asked through the regular proxies."""
        route_proxy = self.state.proxy_order()[0]
        order = await geo.sort_servers(
            chain.hosts,
            proxy=route_proxy,
            fetch_text=lambda url: self._fetch_url_text(url, route_proxy),
            rng=self._rng,
            ask=self.state.hosts,
        )
        if order is not None:
            chain.reorder_hosts(order)

    async def _fetch_url_text(self, url: str, proxy: str | None) -> str | None:
        from yarl import URL

        aiohttp = load_aiohttp()
        route = Route(url, proxy)
        session = self._session(route)
        self.stats.requests += 1
        try:
            async with session.get(
                URL(url, encoded=True),
                proxy=proxy,
                headers=request_headers(no_cache=False),
                trace_request_ctx=route,
            ) as response:
                if response.status != 200:
                    return None
                body = await response.content.read(64 * 1024)
                return body.decode("ascii", "replace")
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None


def _plural(count: int) -> str:
    return f"{count} host" + ("" if count == 1 else "s")


__all__ = [
    "DIRECT",
    "EndpointStats",
    "FetchStats",
    "Fetcher",
    "ObjectSink",
    "UnverifiedObject",
]
