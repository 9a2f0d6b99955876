#!/usr/bin/env python3
"""Benchmark of the fetch layer alone against nginx on loopback.

For 4 KiB and 1 MiB objects at 1, 64, 256 and 1024 requests in flight it prints
requests/s and MB/s of ``Fetcher.fetch_object`` (hash-verified) through aiohttp (asyncio and
uvloop) and through the built-in lean client (uvloop; the export's path for objects of a
known size on plain ``http://``), beside ``curl --parallel --parallel-max N`` fetching the
same objects (the machine's reference; curl caps --parallel-max at 300). Every run is
bounded by a request count and a time limit.

    python3 scripts/bench_fetch.py [--quick] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.hashing import Algorithm, Digest
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.nginx import BinaryMissing, NginxServer

FQRN = "bench.test.local"
KiB = 1024
MiB = 1024 * KiB
SIZES = {"4 KiB": 4 * KiB, "1 MiB": MiB}
OBJECTS = {"4 KiB": 2000, "1 MiB": 64}
MAX_REQUESTS = {"4 KiB": 20000, "1 MiB": 1500}


def make_objects(docroot: Path, size: int, count: int) -> list[Digest]:
    digests = []
    for _ in range(count):
        data = os.urandom(size)
        digest = Algorithm.SHA1.hash(data)
        path = docroot / "cvmfs" / FQRN / digest.object_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests.append(digest)
    return digests


async def run_fetcher(
    base_url: str,
    digests: list[Digest],
    in_flight: int,
    max_requests: int,
    seconds: float,
    max_size: int | None = None,
) -> tuple[int, int, float]:
    """``max_size`` (the objects' size) takes the lean client; None takes aiohttp."""
    settings = ClientSettings.for_repository(FQRN, base_url, (), timeout_direct=30.0)
    connections = min(in_flight, 128)
    done = 0
    received = 0
    deadline = time.perf_counter() + seconds
    async with Fetcher(
        settings, max_in_flight=in_flight, connections_per_endpoint=connections
    ) as fetcher:
        # Warm the pool so that connection set-up is not part of the figure.
        await asyncio.gather(
            *(fetcher.fetch_object(d, max_size=max_size) for d in digests[:connections])
        )
        start = time.perf_counter()

        async def worker(offset: int) -> None:
            nonlocal done, received
            index = offset
            while done < max_requests and time.perf_counter() < deadline:
                digest = digests[index % len(digests)]
                body = await fetcher.fetch_object(digest, max_size=max_size)
                done += 1
                received += len(body)
                index += in_flight

        async with asyncio.TaskGroup() as group:
            for offset in range(in_flight):
                group.create_task(worker(offset))
        elapsed = time.perf_counter() - start
    return done, received, elapsed


def measure_fetcher(
    base_url: str,
    digests: list[Digest],
    in_flight: int,
    max_requests: int,
    seconds: float,
    use_uvloop: bool,
    max_size: int | None = None,
) -> tuple[float, float]:
    factory = None
    if use_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        done, received, elapsed = runner.run(
            run_fetcher(base_url, digests, in_flight, max_requests, seconds, max_size)
        )
    return done / elapsed, received / elapsed / 1e6


def measure_curl(
    base_url: str, digests: list[Digest], in_flight: int, max_requests: int, tmp: Path
) -> tuple[float, float] | None:
    requests = min(max_requests, len(digests) * max(1, max_requests // len(digests)))
    config = tmp / f"curl-{in_flight}.cfg"
    with config.open("w") as f:
        for index in range(requests):
            f.write(f'url = "{base_url}/{digests[index % len(digests)].object_path()}"\n')
            f.write('output = "/dev/null"\n')
    start = time.perf_counter()
    result = subprocess.run(
        [
            *("curl", "--silent", "--noproxy", "*", "--parallel", "--parallel-immediate"),
            *("--parallel-max", str(min(in_flight, 300)), "--config", str(config)),
            *("--write-out", "%{size_download}\n"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        return None
    received = sum(int(line) for line in result.stdout.split())
    return requests / elapsed, received / elapsed / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="time limit per run")
    parser.add_argument("--quick", action="store_true", help="in-flight 1 and 64 only")
    args = parser.parse_args()
    levels = (1, 64) if args.quick else (1, 64, 256, 1024)

    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp_name:
        tmp = Path(tmp_name)
        docroot = tmp / "docroot"
        objects = {label: make_objects(docroot, SIZES[label], OBJECTS[label]) for label in SIZES}
        try:
            server = NginxServer(docroot, workers=2).start()
        except BinaryMissing as error:
            print(f"bench_fetch: {error}", file=sys.stderr)
            return 2
        try:
            base_url = server.repository_url(FQRN)
            python = sys.version.split()[0]
            print(f"nginx {server.url} (2 workers), {os.cpu_count()} CPUs, python {python}")
            header = (
                f"{'object':>7} {'in flight':>9} | {'asyncio req/s':>13} {'MB/s':>7} | "
                f"{'uvloop req/s':>12} {'MB/s':>7} | {'lean req/s':>10} {'MB/s':>7} | "
                f"{'curl req/s':>10} {'MB/s':>7}"
            )
            print(header)
            print("-" * len(header))
            for label, digests in objects.items():
                for in_flight in levels:
                    cap = MAX_REQUESTS[label] if in_flight > 1 else MAX_REQUESTS[label] // 4
                    plain = measure_fetcher(base_url, digests, in_flight, cap, args.seconds, False)
                    fast = measure_fetcher(base_url, digests, in_flight, cap, args.seconds, True)
                    lean = measure_fetcher(
                        base_url, digests, in_flight, cap, args.seconds, True, SIZES[label]
                    )
                    curl = measure_curl(base_url, digests, in_flight, min(cap, 5000), tmp)
                    curl_text = f"{curl[0]:>10.0f} {curl[1]:>7.1f}" if curl else f"{'n/a':>18}"
                    print(
                        f"{label:>7} {in_flight:>9} | {plain[0]:>13.0f} {plain[1]:>7.1f} | "
                        f"{fast[0]:>12.0f} {fast[1]:>7.1f} | {lean[0]:>10.0f} {lean[1]:>7.1f} | "
                        f"{curl_text}",
                        flush=True,
                    )
        finally:
            server.stop()
    print("MB = 10^6 bytes; fetcher figures include SHA-1 verification of every body;")
    print("connections per endpoint = min(in flight, 128); curl --parallel-max is capped at 300.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
