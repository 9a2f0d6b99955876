"""Fixtures of the network tests: fixture objects, settings, sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.hashing import Algorithm, Digest

FIX1 = "fix1.test.local"


@dataclass(frozen=True)
class StoredObject:
    digest: Digest
    suffix: str
    path: Path

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def stored_objects(repository: Path) -> list[StoredObject]:
    """Every ``data/XX/...`` object of a repository copy, named as the fetcher names it."""
    objects = []
    for path in sorted((repository / "data").glob("??/*")):
        name = path.parent.name + path.name
        for algorithm_suffix in ("-rmd160", "-shake128", ""):
            head = 40 + len(algorithm_suffix)
            if name[40:head] == algorithm_suffix:
                objects.append(StoredObject(Digest.from_hex(name[:head]), name[head:], path))
                break
    return objects


def add_object(docroot: Path, data: bytes, fqrn: str = FIX1) -> StoredObject:
    """Store ``data`` as a SHA-1 named object of ``fqrn`` in a served document root."""
    digest = Algorithm.SHA1.hash(data)
    path = docroot / "cvmfs" / fqrn / digest.object_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return StoredObject(digest, "", path)


@pytest.fixture
def fix1_objects(fixture_docroot: Path) -> list[StoredObject]:
    return stored_objects(fixture_docroot / "cvmfs" / FIX1)


def make_settings(server_urls: list[str] | str, **overrides: Any) -> ClientSettings:
    """Settings with test-sized timeouts and backoff (overridable)."""
    values: dict[str, Any] = {
        "timeout": 2.0,
        "timeout_direct": 2.0,
        "backoff_init": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return ClientSettings.for_repository(FIX1, server_urls, (), **values)


@dataclass
class MemorySink:
    """An ObjectSink that records what happened to it."""

    log: list[str]
    pieces: list[bytes] = field(default_factory=list)

    async def write(self, piece: bytes) -> None:
        self.pieces.append(piece)

    async def commit(self) -> bytes:
        self.log.append("commit")
        return b"".join(self.pieces)

    async def discard(self) -> None:
        self.log.append("discard")


async def fetch_all(
    fetcher: Any, objects: list[StoredObject], *, workers: int = 16, stream: bool = False
) -> dict[Path, bytes]:
    """Fetch ``objects`` with a bounded number of concurrent workers."""
    import asyncio

    results: dict[Path, bytes] = {}
    pending = list(objects)

    async def worker() -> None:
        while pending:
            stored = pending.pop()
            if stream:
                log: list[str] = []
                results[stored.path] = await fetcher.stream_object(
                    stored.digest, stored.suffix, lambda log=log: MemorySink(log)
                )
            else:
                results[stored.path] = await fetcher.fetch_object(stored.digest, stored.suffix)

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
    return results
