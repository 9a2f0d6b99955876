"""Reproducible compressed streams for tarballs: none, gzip (mtime 0, no name), zstd."""

from __future__ import annotations

import gzip
import types
from typing import BinaryIO, Literal

from shrinkwrap_async.exitcodes import UsageError

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


class CompressedSink:
    """A write-only stream that compresses into ``raw``; ``close()`` ends the stream but does
    not close ``raw``."""

    def __init__(self, raw: BinaryIO, compression: str, level: int | None = None) -> None:
        self.compression = compression
        self._raw = raw
        self._zstd_writer = None
        self._gzip: gzip.GzipFile | None = None
        if compression == "gzip":
            self._gzip = gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level or 6
            )
        elif compression == "zstd":
            zstandard = _import_zstandard()
            # Single-threaded: the frame layout then depends only on the level and the input.
            compressor = zstandard.ZstdCompressor(level=level or 3, write_content_size=False)
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
