#!/usr/bin/env python3
"""Catalog reader throughput: build a synthetic catalog, then time listing and full walks.

    python3 scripts/bench_catalog.py [--rows 100000] [--per-directory 1000]

Prints rows/s for ``list_directory`` over every directory and for ``iter_entries``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sqlite3
import struct
import tempfile
import time
from pathlib import Path

from shrinkwrap_async.catalogs.reader import Catalog
from shrinkwrap_async.catalogs.schema import CATALOG_DDL, STATISTICS_COUNTERS


def _pair(path: str) -> tuple[int, int]:
    return struct.unpack("<qq", hashlib.md5(path.encode()).digest())


def build(path: Path, rows: int, per_directory: int) -> list[str]:
    db = sqlite3.connect(path)
    for statement in CATALOG_DDL:
        db.execute(statement)
    db.executemany(
        "INSERT INTO properties VALUES (?, ?)",
        [("schema", "2.5"), ("schema_revision", "6"), ("revision", "1")],
    )
    db.executemany("INSERT INTO statistics VALUES (?, 0)", [(c,) for c in STATISTICS_COUNTERS])
    insert = "INSERT INTO catalog VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    db.execute(
        insert, (*_pair(""), 0, 0, 2, None, 4096, 0o40755, 1700000000, 1, "", "", 0, 0, None)
    )
    directories = [f"/d{n:05d}" for n in range(max(1, rows // per_directory))]
    batch = []
    for directory in directories:
        batch.append(
            (
                *_pair(directory),
                *_pair(""),
                2,
                None,
                4096,
                0o40755,
                1700000000,
                1,
                directory[1:],
                "",
                0,
                0,
                None,
            )
        )
        parent = _pair(directory)
        for n in range(per_directory):
            name = f"file-{n:06d}.dat"
            digest = hashlib.sha1(f"{directory}/{name}".encode()).digest()
            batch.append(
                (
                    *_pair(f"{directory}/{name}"),
                    *parent,
                    1,
                    digest,
                    n,
                    0o100644,
                    1700000000,
                    4,
                    name,
                    "",
                    0,
                    0,
                    None,
                )
            )
        if len(batch) > 50000:
            db.executemany(insert, batch)
            batch.clear()
    db.executemany(insert, batch)
    db.commit()
    db.close()
    return directories


async def measure(path: Path, directories: list[str]) -> None:
    async with await Catalog.open(path) as catalog:
        start = time.perf_counter()
        count = 0
        for directory in directories:
            async for _ in catalog.list_directory(directory):
                count += 1
        elapsed = time.perf_counter() - start
        print(f"list_directory: {count} rows in {elapsed:.2f} s = {count / elapsed:,.0f} rows/s")
        start = time.perf_counter()
        count = 0
        async for _ in catalog.iter_entries():
            count += 1
        elapsed = time.perf_counter() - start
        print(f"iter_entries:   {count} rows in {elapsed:.2f} s = {count / elapsed:,.0f} rows/s")
        start = time.perf_counter()
        for directory in directories[:1000]:
            await catalog.lookup(directory)
        elapsed = time.perf_counter() - start
        lookups = min(1000, len(directories))
        print(f"lookup:         {lookups / elapsed:,.0f} lookups/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--per-directory", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "catalog.sqlite"
        start = time.perf_counter()
        directories = build(path, args.rows, args.per_directory)
        size = path.stat().st_size
        print(
            f"built {args.rows} rows ({size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s"
        )
        asyncio.run(measure(path, directories))


if __name__ == "__main__":
    main()
