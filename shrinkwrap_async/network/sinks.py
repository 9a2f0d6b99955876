"""Where a downloaded body goes: the sink protocol and the guards around a sink's calls.

A sink receives the pieces of one attempt and is committed only once the pieces' hash
matched. Its own failures (a full disk, ...) are wrapped in :class:`SinkFailed` on the way
through the fetcher, so that they are never taken for network errors and retried
elsewhere: the fetcher unwraps and raises them.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ObjectSink(Protocol[T_co]):
    """Receives the pieces of one download attempt.

    ``commit`` is called once, only after the hash of all pieces matched; ``discard`` when
    the attempt failed (the retry gets a fresh sink from the factory).
    """

    async def write(self, piece: bytes) -> None: ...

    async def commit(self) -> T_co: ...

    async def discard(self) -> None: ...


class SinkFailed(Exception):
    """Wraps an error raised by a sink, so it is never mistaken for a network error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


async def sink_write(sink: ObjectSink[Any], piece: bytes) -> None:
    """``sink.write``; a local failure (disk full, ...) is not the server's fault."""
    try:
        await sink.write(piece)
    except Exception as error:
        raise SinkFailed(error) from error


async def sink_commit(sink: ObjectSink[T]) -> T:
    try:
        return await sink.commit()
    except Exception as error:
        raise SinkFailed(error) from error


async def discard_sink(sink: ObjectSink[Any], error: BaseException) -> None:
    """Discard ``sink`` after ``error``; a failure to discard is the sink's own failure
    (unless the attempt already failed by the sink)."""
    try:
        await sink.discard()
    except Exception as discard_error:
        if isinstance(error, SinkFailed):
            return
        raise SinkFailed(discard_error) from discard_error


class MemorySink:
    """An ``ObjectSink`` collecting the pieces in memory; ``commit`` returns the bytes."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    async def write(self, piece: bytes) -> None:
        self._pieces.append(piece)

    async def commit(self) -> bytes:
        return b"".join(self._pieces)

    async def discard(self) -> None:
        self._pieces = []
