"""Reproducible compressed streams for tarballs and OCI layers: none, gzip, zstd.

Both compressors use every usable core (at most ``MAX_THREADS``) and still give bytes that
depend only on the input and the level, never on the number of threads: gzip is deflated in
fixed blocks, each primed with the 32 KiB of input before it and ended with a sync flush, as
pigz does (one gzip member, mtime 0, no name); zstd runs in its multi-threaded mode, whose
frames are the same for any number of workers from one up.
"""

from __future__ import annotations

import struct
import types
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Literal

from shrinkwrap_async.exitcodes import UsageError
from shrinkwrap_async.runtime import cpu_count

Compression = Literal["none", "gzip", "zstd"]
COMPRESSIONS: tuple[str, ...] = ("none", "gzip", "zstd")

_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.zst", "zstd"),
    (".tzst", "zstd"),
    (".tar.zstd", "zstd"),
    (".tar.gz", "gzip"),
    (".tgz", "gzip"),
)


def compression_for_filename(name: str) -> str:
    """The compression a file name asks for (``x.tar.zst`` -> zstd), ``none`` otherwise."""
    lowered = name.lower()
    for suffix, compression in _SUFFIXES:
        if lowered.endswith(suffix):
            return compression
    return "none"


def _import_zstandard() -> types.ModuleType:
    try:
        import zstandard
    except ImportError:
        raise UsageError(
            "zstd compression needs the Python package 'zstandard' "
            "(pip install 'shrinkwrap-async[zstd]'), or use --compress gzip"
        ) from None
    return zstandard


MAX_THREADS = 16
GZIP_BLOCK = 1 << 20  # input bytes per deflate block: changing it changes the output bytes
_DICTIONARY = 32 << 10  # deflate's window: what a block may refer back to
_GZIP_OS_UNKNOWN = 255


def compression_threads(requested: int | None = None) -> int:
    return max(1, requested) if requested else min(cpu_count(), MAX_THREADS)


def _deflate_block(block: bytes, dictionary: bytes, level: int, final: bool) -> bytes:
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(block) + compressor.flush(
        zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH
    )


class ParallelGzipWriter:
    """One gzip member written to ``raw``, its blocks deflated on a thread pool (zlib
    releases the GIL), written in order with at most two blocks per thread in flight."""

    def __init__(self, raw: BinaryIO, level: int = 6, threads: int = 1) -> None:
        self._raw = raw
        self._level = level
        self._pending = bytearray()
        self._dictionary = b""
        self._crc = 0
        self._size = 0
        self._pool = ThreadPoolExecutor(threads, "gzip") if threads > 1 else None
        self._in_flight: deque[Future[bytes]] = deque()
        self._max_in_flight = 2 * threads
        extra_flags = b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00"
        raw.write(b"\x1f\x8b\x08\x00" + b"\x00" * 4 + extra_flags + bytes([_GZIP_OS_UNKNOWN]))

    def write(self, data: bytes) -> int:
        self._pending += data
        while len(self._pending) >= GZIP_BLOCK:
            block = bytes(self._pending[:GZIP_BLOCK])
            del self._pending[:GZIP_BLOCK]
            self._submit(block, final=False)
        return len(data)

    def _submit(self, block: bytes, *, final: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        dictionary, self._dictionary = self._dictionary, (self._dictionary + block)[-_DICTIONARY:]
        if self._pool is None:
            self._raw.write(_deflate_block(block, dictionary, self._level, final))
            return
        self._in_flight.append(
            self._pool.submit(_deflate_block, block, dictionary, self._level, final)
        )
        while len(self._in_flight) > self._max_in_flight:
            self._raw.write(self._in_flight.popleft().result())

    def close(self) -> None:
        self._submit(bytes(self._pending), final=True)
        self._pending.clear()
        while self._in_flight:
            self._raw.write(self._in_flight.popleft().result())
        self._raw.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        if self._pool is not None:
            self._pool.shutdown()


class CompressedSink:
    """A write-only stream that compresses into ``raw``; ``close()`` ends the stream but does
    not close ``raw``."""

    def __init__(
        self,
        raw: BinaryIO,
        compression: str,
        level: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.compression = compression
        self._raw = raw
        self._zstd_writer = None
        self._gzip: ParallelGzipWriter | None = None
        if compression == "gzip":
            self._gzip = ParallelGzipWriter(raw, level or 6, compression_threads(threads))
        elif compression == "zstd":
            zstandard = _import_zstandard()
            # Multi-threaded mode even on one core: its frames are the same for any number
            # of workers (they differ from the single-threaded mode's).
            compressor = zstandard.ZstdCompressor(
                level=level or 3, write_content_size=False, threads=compression_threads(threads)
            )
            self._zstd_writer = compressor.stream_writer(raw, closefd=False)
        elif compression != "none":
            raise UsageError(f"unknown compression {compression!r} (use none, gzip or zstd)")

    def write(self, data: bytes) -> int:
        if self._gzip is not None:
            return self._gzip.write(data)
        if self._zstd_writer is not None:
            return int(self._zstd_writer.write(data))
        return self._raw.write(data)

    def close(self) -> None:
        if self._gzip is not None:
            self._gzip.close()
            self._gzip = None
        if self._zstd_writer is not None:
            self._zstd_writer.close()
            self._zstd_writer = None
        self._raw.flush()
