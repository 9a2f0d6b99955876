"""Small objects committed in batches by the worker process (or a thread): verified,
inflated, given their metadata; a bad hash or a bad stream is reported, not committed."""

from __future__ import annotations

import os
import signal
import stat
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shrinkwrap_async.hashing import Algorithm
from shrinkwrap_async.pipeline.decompress_verify import (
    ContentError,
    HashMismatch,
    SmallObject,
    SmallObjectCommitter,
)
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.object_names import ObjectMeta, object_name


@pytest.fixture
def store(tmp_path: Path) -> DataStore:
    data_store = DataStore(tmp_path / ".data", chown=False)
    data_store.prepare()
    return data_store


def plain_meta() -> ObjectMeta:
    return ObjectMeta(0o644, os.getuid(), os.getgid(), 1_600_000_000)


def small(
    content: bytes, meta: ObjectMeta, *, corrupt: bool = False, size: int = -1
) -> SmallObject:
    stored = zlib.compress(content)
    digest = Algorithm.SHA1.hash(stored)
    data = b"\0" + stored[1:] if corrupt else stored
    name = object_name(digest, meta.meta_hash)
    return SmallObject(name, data, len(content) if size < 0 else size, True, meta, digest)


@pytest.mark.parametrize("in_process", [True, False])
async def test_batch_committed_with_metadata_and_failures_reported(
    store: DataStore, in_process: bool
) -> None:
    meta = ObjectMeta(0o751, os.getuid(), os.getgid(), 1_600_000_000)
    good, bad_hash, bad_size = (
        small(b"hello " * 100, meta),
        small(b"other", meta, corrupt=True),
        small(b"sized", meta, size=3),
    )
    with ThreadPoolExecutor(1) as pool:
        committer = SmallObjectCommitter(store, pool, use_process=in_process)
        committer.start()
        assert await committer.wait_started() == in_process
        try:
            results = await committer.commit([good, bad_hash, bad_size])
        finally:
            committer.close()
    assert results[0] is None
    assert isinstance(results[1], HashMismatch) and isinstance(results[2], ContentError)
    path = store.path_for(good.name)
    assert path.read_bytes() == b"hello " * 100
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o751 and st.st_mtime == 1_600_000_000
    assert not store.path_for(bad_hash.name).exists()
    assert not store.path_for(bad_size.name).exists()
    assert os.listdir(store.temp_dir) == []


async def test_a_dead_worker_process_falls_back_to_a_thread(store: DataStore) -> None:
    meta = plain_meta()
    with ThreadPoolExecutor(1) as pool:
        committer = SmallObjectCommitter(store, pool)
        committer.start()
        assert await committer.wait_started()
        try:
            assert await committer.commit([small(b"first", meta)]) == [None]
            process = committer._process
            assert process is not None
            for pid in list(process._processes):  # type: ignore[union-attr]
                os.kill(pid, signal.SIGKILL)
            again = small(b"second", meta)
            assert await committer.commit([again]) == [None]
            assert not committer.in_process
        finally:
            committer.close()
    assert store.path_for(again.name).read_bytes() == b"second"


async def test_the_worker_process_starts_only_after_enough_objects(store: DataStore) -> None:
    """A small refresh commits in the thread; the process starts once a run proves large."""
    meta = plain_meta()
    with ThreadPoolExecutor(1) as pool:
        committer = SmallObjectCommitter(store, pool)
        try:
            few = [small(f"few {i}".encode(), meta) for i in range(8)]
            assert await committer.commit(few) == [None] * len(few)
            assert not committer.in_process
            many = [small(f"many {i}".encode(), meta) for i in range(committer.SPAWN_AFTER)]
            assert await committer.commit(many) == [None] * len(many)
            assert committer.in_process and await committer.wait_started()
            last = small(b"after the start", meta)
            assert await committer.commit([last]) == [None]
        finally:
            committer.close()
    assert store.path_for(last.name).read_bytes() == b"after the start"
    assert all(store.path_for(item.name).is_file() for item in few + many)
