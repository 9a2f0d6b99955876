"""Progress while an export runs: a live bar on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import TextIO

from shrinkwrap_async.pipeline.summary import ExportStats


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def shows_progress(args: argparse.Namespace) -> bool:
    """Progress unless ``--no-progress``, ``-q`` or ``-p 0`` (cvmfs_shrinkwrap: "0 disables")."""
    return bool(args.progress and args.quiet == 0 and args.stat_period > 0)


class Progress:
    """Reports ``stats`` every ``period`` seconds until stopped; ``live`` redraws one line."""

    def __init__(
        self, stats: ExportStats, *, period: float, live: bool, stream: TextIO = sys.stderr
    ) -> None:
        self.stats = stats
        self.period = period if period > 0 else 10.0  # -p 0 starts no reporter at all
        self.live = live
        self.stream = stream
        self.start = time.monotonic()

    def line(self) -> str:
        s = self.stats
        elapsed = max(time.monotonic() - self.start, 1e-6)
        done = s.linked + s.unchanged
        rate = done / elapsed
        byte_rate = s.data_bytes / elapsed
        eta = ""
        if s.files > done and rate > 0:
            eta = f", ETA {(s.files - done) / rate:.0f} s (walk still running)"
        return (
            f"{done}/{s.files} files, {s.dirs} dirs, {_size(s.data_bytes)} written "
            f"({rate:.0f} files/s, {_size(byte_rate)}/s), {len(s.failures)} failed{eta}"
        )

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(0.5 if self.live else self.period)
                self.emit()
        finally:
            if self.live:
                self.stream.write("\r\x1b[K")
                self.stream.flush()

    def emit(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()
