"""A lean HTTP/1.1 client for the many small object GETs of an export.

aiohttp costs the event loop about 70 µs per request on a 2-core VM (session, request and
response objects, header multidicts, tracing, timers); for a repository of small files
that is most of the loop's time. This client does one thing: ``GET`` a path over keep-alive
connections, one request at a time per connection, from one endpoint (an origin reached
DIRECT, or a proxy asked with the absolute URL). It reads ``Content-Length``, chunked and
read-until-close bodies, enforces a connect timeout, a read timeout between arrivals of
data and a size limit, and reports failures as :class:`LeanHTTPError` (transport-class,
to be retried) or :class:`LeanTooLarge`. A body is returned whole, or handed piece by
piece to a callback as it arrives (large objects and chunks; reading pauses while more
than ``PAUSE_ABOVE`` bytes wait). The fetcher uses it on plain ``http://`` routes; https,
external data and the geo API stay on aiohttp.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from multidict import CIMultiDict

from shrinkwrap_async.decimal_text import is_decimal

MAX_HEAD = 64 * 1024  # status line and headers; the trailer of a chunked body
MAX_CHUNK_LINE = 4096  # a chunk's size line, extensions included
MAX_CHUNK_DIGITS = 15  # hex digits of a chunk's size (up to 1 PiB)
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
PAUSE_ABOVE = 256 * 1024  # a streamed body: bytes buffered before reading pauses

OnPiece = Callable[[bytes], Awaitable[None]]


class LeanHTTPError(ConnectionError):
    """The request failed on the wire (refused, reset, closed early, timed out, garbled)."""


class LeanTimeout(LeanHTTPError, TimeoutError):
    """Connect or read timeout."""


class LeanTooLarge(Exception):
    """The body is larger than the caller's limit (announced or received)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class LeanResponse:
    """Status, headers (as received) and the whole body of one response.

    The header lines are split into names and values only when asked for: an object's
    response is judged by its status and length alone.
    """

    __slots__ = ("_headers", "_lines", "body", "content_length", "status")

    def __init__(
        self,
        status: int,
        header_lines: list[str],
        body: bytes,
        content_length: int | None,
    ) -> None:
        self.status = status
        self._lines = header_lines
        self.body = body
        self.content_length = content_length
        self._headers: CIMultiDict[str] | None = None

    @property
    def raw_headers(self) -> list[tuple[str, str]]:
        """``(name, value)`` of each header line, in order."""
        pairs = []
        for line in self._lines:
            name, _, value = line.partition(":")
            pairs.append((name, value.strip()))
        return pairs

    @property
    def headers(self) -> CIMultiDict[str]:
        if self._headers is None:
            self._headers = CIMultiDict(self.raw_headers)
        return self._headers


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``request`` sends a head and returns the response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # has served a response (an idle close then is not an error)
        self.answered = False  # some byte of the current response arrived
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._error: BaseException | None = None
        self._paused = False
        self._streaming = False  # a body is being handed to a callback (may pause reading)

    # -- protocol callbacks ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        self._buffer += data
        if self._streaming and len(self._buffer) > PAUSE_ABOVE and not self._paused:
            self._paused = True  # the consumer of a streamed body is behind: stop reading
            assert self.transport is not None
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self._eof = True
        if exc is not None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- one exchange ---------------------------------------------------------------
    async def _more(self, timeout: float | None) -> None:
        """Wait for more data (or EOF); raise LeanTimeout after ``timeout`` s of silence.

        One timer per wait rather than ``asyncio.timeout`` and a shield: a small object's
        request waits once or twice, and that machinery cost more than the parsing.
        """
        if self._eof:
            raise LeanHTTPError(self._closed_message())
        waiter = self.loop.create_future()
        self._waiter = waiter
        watchdog = None
        if timeout is not None:
            watchdog = self.loop.call_later(timeout, self._silent_for, waiter, timeout)
        try:
            await waiter
        finally:
            self._waiter = None
            if watchdog is not None:
                watchdog.cancel()

    @staticmethod
    def _silent_for(waiter: asyncio.Future[None], timeout: float) -> None:
        """The wait's timer: no data (nor EOF) woke ``waiter`` within ``timeout`` s."""
        if not waiter.done():
            waiter.set_exception(LeanTimeout(f"no data for {timeout:g} s"))

    def _closed_message(self) -> str:
        if self._error is not None:
            return f"{type(self._error).__name__}: {self._error}"
        return "connection closed by the server"

    async def request(
        self,
        head: bytes,
        max_size: int | None,
        timeout: float | None,
        on_piece: OnPiece | None = None,
    ) -> LeanResponse:
        """Send ``head``; the response, with its body, or with ``b""`` if ``on_piece`` took
        the body piece by piece (only a 200's body is read)."""
        self._streaming = on_piece is not None
        try:
            return await self._exchange(head, max_size, timeout, on_piece)
        finally:
            self._streaming = False

    async def _exchange(
        self, head: bytes, max_size: int | None, timeout: float | None, on_piece: OnPiece | None
    ) -> LeanResponse:
        assert self.transport is not None
        self.answered = False
        self.transport.write(head)
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > MAX_HEAD:
                raise LeanHTTPError("response head too long")
            await self._more(timeout)
        status, header_lines, length, chunked, keep_alive = _parse_head(bytes(buffer[:end]))
        del buffer[: end + 4]
        if status != 200:  # the caller classifies the status; the body is not wanted
            self.used = True
            self.close()
            return LeanResponse(status, header_lines, b"", length)
        if length is not None and max_size is not None and length > max_size:
            self.close()
            raise LeanTooLarge(f"{length} bytes announced, at most {max_size} expected")
        if chunked:
            body = await self._read_chunked(max_size, timeout, on_piece)
        elif length is not None and on_piece is not None:
            await self._stream(length, timeout, on_piece)
            body = b""
        elif length is not None:
            while len(buffer) < length:
                if self._eof:
                    raise LeanHTTPError(f"short transfer: {len(buffer)} of {length} bytes")
                await self._more(timeout)
            body = _cut(buffer, length)
        else:  # until the server closes the connection
            keep_alive = False
            received = 0
            while not self._eof:
                if max_size is not None and received + len(buffer) > max_size:
                    self.close()
                    raise LeanTooLarge(f"more than {max_size} bytes received")
                if on_piece is not None and buffer:
                    received += len(buffer)
                    await on_piece(self._take(len(buffer)))
                    continue
                await self._more(timeout)
            if self._error is not None:
                raise LeanHTTPError(self._closed_message())
            if on_piece is not None:
                if buffer:
                    await on_piece(self._take(len(buffer)))
                body = b""
            else:
                body = bytes(buffer)
                buffer.clear()
        self.used = True
        if not keep_alive or buffer:
            self.close()  # no reuse after a close request or unexpected extra bytes
        return LeanResponse(status, header_lines, body, length)

    def _take(self, size: int) -> bytes:
        """The first ``size`` buffered bytes, removed (reading resumes once drained)."""
        buffer = self._buffer
        piece = _cut(buffer, size)
        if self._paused and len(buffer) <= PAUSE_ABOVE // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return piece

    async def _stream(self, length: int, timeout: float | None, on_piece: OnPiece) -> None:
        """Hand the next ``length`` bytes to ``on_piece`` as they arrive."""
        remaining = length
        while remaining:
            if not self._buffer:
                if self._eof:
                    raise LeanHTTPError(f"short transfer: {length - remaining} of {length} bytes")
                await self._more(timeout)
                continue
            piece = self._take(min(len(self._buffer), remaining))
            remaining -= len(piece)
            await on_piece(piece)

    async def _read_chunked(
        self, max_size: int | None, timeout: float | None, on_piece: OnPiece | None
    ) -> bytes:
        buffer = self._buffer
        pieces: list[bytes] = []
        total = 0
        while True:
            while (end := buffer.find(b"\r\n")) < 0:
                if len(buffer) > MAX_CHUNK_LINE:
                    raise LeanHTTPError("chunk size line too long in chunked body")
                await self._more(timeout)
            size = _chunk_size(bytes(buffer[:end]))
            del buffer[: end + 2]
            if size == 0:
                await self._skip_trailer(timeout)
                return b"".join(pieces)
            total += size
            if max_size is not None and total > max_size:
                self.close()
                raise LeanTooLarge(f"more than {max_size} bytes received")
            if on_piece is not None:
                await self._stream(size, timeout, on_piece)
            else:
                while len(buffer) < size:
                    await self._more(timeout)
                pieces.append(_cut(buffer, size))
            while len(buffer) < 2:
                await self._more(timeout)
            if buffer[:2] != b"\r\n":
                raise LeanHTTPError("chunk not followed by CRLF in chunked body")
            del buffer[:2]

    async def _skip_trailer(self, timeout: float | None) -> None:
        """Read past the trailer fields after the last chunk, up to the empty line."""
        buffer = self._buffer
        skipped = 0
        while (end := buffer.find(b"\r\n")) != 0:
            if skipped + (end + 2 if end > 0 else len(buffer)) > MAX_HEAD:
                raise LeanHTTPError("trailer too long in chunked body")
            if end > 0:
                skipped += end + 2
                del buffer[: end + 2]
                continue
            await self._more(timeout)
        del buffer[:2]


def _chunk_size(line: bytes) -> int:
    """The size on a chunk's size line (extensions after ``;`` ignored): hex digits only.

    ``int(..., 16)`` alone would also take a sign, ``0x``, underscores and spaces; a
    negative size would make a streamed body's reader loop without end."""
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not 0 < len(digits) <= MAX_CHUNK_DIGITS or not _HEX_DIGITS.issuperset(digits):
        raise LeanHTTPError(f"bad chunk size {digits[:20]!r} in chunked body")
    return int(digits, 16)


def _cut(buffer: bytearray, size: int) -> bytes:
    """The first ``size`` bytes of ``buffer``, removed from it, copied once (a slice of a
    bytearray is a copy of its own)."""
    if size == len(buffer):
        piece = bytes(buffer)
        buffer.clear()
        return piece
    with memoryview(buffer) as view:
        piece = bytes(view[:size])
    del buffer[:size]
    return piece


_HEADER_NAME_LENGTHS = frozenset(map(len, ("content-length", "transfer-encoding", "connection")))


def _parse_head(head: bytes) -> tuple[int, list[str], int | None, bool, bool]:
    """(status, header lines, content length, chunked, keep-alive) of a response head.

    Every header line must have a colon; only the three headers that decide how the body
    is read are looked at (a name of another length is none of them).
    """
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not is_decimal(parts[1], 3):
        raise LeanHTTPError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    status = int(parts[1])
    keep_alive = parts[0] != "HTTP/1.0"
    del lines[0]
    length: int | None = None
    chunked = False
    for line in lines:
        colon = line.find(":")
        if colon < 0:
            raise LeanHTTPError(f"bad header line {line[:80]!r}")
        if colon not in _HEADER_NAME_LENGTHS:
            continue
        key = line[:colon].lower()
        if key == "content-length":
            value = line[colon + 1 :].strip()
            if not is_decimal(value):
                raise LeanHTTPError(f"bad Content-Length {value[:40]!r}")
            length = int(value)
        elif key == "transfer-encoding":
            chunked = "chunked" in line[colon + 1 :].lower()
        elif key == "connection":
            token = line[colon + 1 :].lower()
            if "close" in token:
                keep_alive = False
            elif "keep-alive" in token:
                keep_alive = True
    if chunked:
        length = None
    if status in (204, 304) or 100 <= status < 200:
        length = 0
    return status, lines, length, chunked, keep_alive


class LeanPool:
    """Keep-alive connections to one endpoint (``http://host[:port]``), at most ``limit``."""

    def __init__(
        self,
        endpoint: str,
        *,
        limit: int,
        connect_timeout: float | None,
        read_timeout: float | None,
        on_resend: Callable[[], None] | None = None,
    ) -> None:
        """``on_resend``: called for each request sent again on another connection because
        a kept-alive one closed before it answered (the caller counts the attempt)."""
        parts = urlsplit(endpoint)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"lean HTTP needs an http:// endpoint, not {endpoint!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.connect_timeout = connect_timeout or None
        self.read_timeout = read_timeout or None
        self._slots = asyncio.Semaphore(limit)
        self._idle: deque[_Connection] = deque()
        self._closed = False
        self._on_resend = on_resend

    async def get(
        self, head: bytes, max_size: int | None, on_piece: OnPiece | None = None
    ) -> LeanResponse:
        """Send ``head`` (a complete GET request) and return the response; with
        ``on_piece``, a 200's body goes to it piece by piece (see ``request``)."""
        async with self._slots:
            while self._idle:
                connection = self._idle.pop()
                if connection.closed or connection._eof or connection._buffer:
                    connection.close()  # closed, or said something while idle
                    continue
                try:
                    response = await connection.request(head, max_size, self.read_timeout, on_piece)
                except LeanTimeout:
                    connection.close()
                    raise
                except LeanHTTPError:
                    connection.close()
                    if not connection.answered:  # closed while idle (keep-alive timeout)
                        if self._on_resend is not None:
                            self._on_resend()
                        continue  # try another
                    raise
                except BaseException:
                    connection.close()
                    raise
                self._release(connection)
                return response
            connection = await self._connect()
            try:
                response = await connection.request(head, max_size, self.read_timeout, on_piece)
            except BaseException:
                connection.close()
                raise
            self._release(connection)
            return response

    def _release(self, connection: _Connection) -> None:
        if not connection.closed and not self._closed:
            self._idle.append(connection)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port
                )
        except TimeoutError:
            raise LeanTimeout(f"connect timed out after {self.connect_timeout:g} s") from None
        except OSError as error:
            raise LeanHTTPError(f"{type(error).__name__}: {error}") from error
        return protocol

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()


def request_head_suffix(host: str, headers: Mapping[str, str]) -> bytes:
    """What follows the request-target in a GET head (protocol, ``Host``, ``headers``):
    the same for every request to one endpoint, so made once per endpoint."""
    lines = [" HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
