"""The object path: chunks fetched concurrently, one download per content, storage errors."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import random
import stat
import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp import web

from shrinkwrap_async.catalogs.entry import Chunk
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import StorageError, TrustError, UnsafePathError
from shrinkwrap_async.hashing import Algorithm
from shrinkwrap_async.link.tree_writer import TreeWriter
from shrinkwrap_async.network.errors import ObjectMissingError
from shrinkwrap_async.network.fetcher import FetchStats
from shrinkwrap_async.pipeline.decompress_verify import ContentError, InflatingFileSink
from shrinkwrap_async.pipeline.link_stage import refuse_duplicate_names
from shrinkwrap_async.pipeline.object_fetch import chunk_layout, most_serious
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.store import data_store
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.object_names import ObjectMeta
from shrinkwrap_async.testing.chunking import ChunkSizes
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer

FQRN = "objects.test.local"
SMALL_CHUNKS = ChunkSizes(64 << 10, 128 << 10, 256 << 10)


class GatedServer(StaticServer):
    """A chunk request (``...P``) is held until another chunk request is in flight too (or
    5 s passed), so a client fetching chunks one after another shows up as
    ``max_chunks_in_flight == 1``."""

    def __init__(self, docroot: Path) -> None:
        super().__init__(docroot)
        self.chunks_in_flight = 0
        self.max_chunks_in_flight = 0
        self._two_in_flight = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not request.match_info["path"].endswith("P"):
            return await super()._handle(request)
        self.chunks_in_flight += 1
        self.max_chunks_in_flight = max(self.max_chunks_in_flight, self.chunks_in_flight)
        if self.chunks_in_flight >= 2:
            self._two_in_flight.set()
        try:
            await asyncio.wait_for(self._two_in_flight.wait(), 5)
        except TimeoutError:
            pass
        finally:
            self.chunks_in_flight -= 1
        return await super()._handle(request)


def make_source(root: Path) -> Path:
    """A chunked file, and the same content twice under other modes (small and chunked)."""
    rng = random.Random(11)
    root.mkdir(parents=True)
    big = rng.randbytes(1_500_000)
    (root / "big.bin").write_bytes(big)
    (root / "big-exec.bin").write_bytes(big)
    os.chmod(root / "big-exec.bin", 0o755)
    (root / "text.txt").write_bytes(b"same bytes, two modes\n")
    (root / "script.sh").write_bytes(b"same bytes, two modes\n")
    os.chmod(root / "text.txt", 0o644)
    os.chmod(root / "script.sh", 0o755)
    return root


@pytest.fixture
def published(tmp_path: Path) -> Publisher:
    publisher = Publisher(
        tmp_path / "server", FQRN, PublishOptions(chunk_sizes=SMALL_CHUNKS, workers=1)
    )
    publisher.publish(make_source(tmp_path / "source"))
    return publisher


@pytest.fixture
async def server(published: Publisher) -> AsyncIterator[GatedServer]:
    async with GatedServer(published.out) as gated:
        yield gated


def settings_for(publisher: Publisher, server: GatedServer, cache: Path) -> ClientSettings:
    return ClientSettings.for_repository(
        FQRN,
        server.repository_url(FQRN),
        publisher.keys_dir / f"{FQRN}.pub",
        cache_base=cache,
    )


async def export(
    publisher: Publisher, server: GatedServer, dest: Path, spec: str = "/*\n"
) -> ExportStats:
    settings = settings_for(publisher, server, dest.parent / "cache")
    options = ExportOptions(dest_base=dest, max_in_flight=8)
    return await export_repository(settings, Spec.parse(spec), options)


def content_requests(server: GatedServer) -> dict[str, int]:
    """Requests of file content (whole objects and chunks), not catalogs or certificates."""
    return {
        path: count
        for path, count in server.requests.items()
        if "/data/" in path and not path.endswith(("C", "X", "H", "M"))
    }


async def test_chunks_fetched_concurrently_and_assembled(
    published: Publisher, server: GatedServer, tmp_path: Path
) -> None:
    stats = await export(published, server, tmp_path / "dest", spec="/big.bin\n")
    assert not stats.failures
    tree = tmp_path / "dest" / FQRN
    assert (tree / "big.bin").read_bytes() == (tmp_path / "source" / "big.bin").read_bytes()
    chunk_requests = [p for p in content_requests(server) if p.endswith("P")]
    assert len(chunk_requests) >= 4  # several chunks, each requested once
    assert all(server.requests[p] == 1 for p in chunk_requests)
    assert server.max_chunks_in_flight >= 2


async def test_same_content_other_metadata_downloaded_once(
    published: Publisher, server: GatedServer, tmp_path: Path
) -> None:
    stats = await export(published, server, tmp_path / "dest")
    assert not stats.failures
    tree, source = tmp_path / "dest" / FQRN, tmp_path / "source"
    for name in ("big.bin", "big-exec.bin", "text.txt", "script.sh"):
        assert (tree / name).read_bytes() == (source / name).read_bytes(), name
        assert (tree / name).stat().st_mode & 0o777 == (source / name).stat().st_mode & 0o777
    assert (tree / "text.txt").stat().st_ino != (tree / "script.sh").stat().st_ino
    assert all(count == 1 for count in content_requests(server).values())
    assert stats.data_files == 4 and stats.content_copies == 2


async def test_same_content_found_in_store_from_an_earlier_run(
    published: Publisher, server: GatedServer, tmp_path: Path
) -> None:
    first = await export(published, server, tmp_path / "dest", spec="/text.txt\n/big.bin\n")
    assert not first.failures and first.content_copies == 0
    before = sum(content_requests(server).values())
    second = await export(published, server, tmp_path / "dest")
    assert not second.failures
    assert sum(content_requests(server).values()) == before  # no content downloaded again
    assert second.content_copies == 2
    tree, source = tmp_path / "dest" / FQRN, tmp_path / "source"
    assert (tree / "script.sh").read_bytes() == (source / "script.sh").read_bytes()
    assert (tree / "big-exec.bin").read_bytes() == (source / "big-exec.bin").read_bytes()


def test_copy_object_refuses_a_source_of_the_wrong_size(tmp_path: Path) -> None:
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    digest = Algorithm.SHA1.hash(b"x")
    source = Path(
        store.write_object(f"{digest.hex[:2]}/{digest.hex[2:4]}/{digest.hex[4:]}.a", b"x", meta)
    )
    name = f"{digest.hex[:2]}/{digest.hex[2:4]}/{digest.hex[4:]}.b"
    assert store.same_content(name) == str(source.relative_to(store.root))
    assert store.copy_object(str(source.relative_to(store.root)), name, meta, size=2) is None
    made = store.copy_object(str(source.relative_to(store.root)), name, meta, size=1)
    assert made is not None and made.read_bytes() == b"x"
    assert os.stat(made).st_ino != os.stat(source).st_ino


def test_chunk_layout_must_tile_the_file() -> None:
    digest = Algorithm.SHA1.hash(b"")
    good = [Chunk(10, 5, digest), Chunk(0, 10, digest)]
    assert [c.offset for c in chunk_layout(good, 15)] == [0, 10]
    for chunks, size in (
        ([Chunk(0, 10, digest), Chunk(12, 3, digest)], 15),  # gap
        ([Chunk(0, 10, digest), Chunk(8, 7, digest)], 15),  # overlap
        ([Chunk(0, 10, digest)], 15),  # short
        ([Chunk(0, 0, digest), Chunk(0, 15, digest)], 15),  # empty chunk
    ):
        with pytest.raises(ContentError):
            chunk_layout(chunks, size)


async def test_disk_full_while_streaming_is_a_storage_error() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with ThreadPoolExecutor(1) as pool:
            sink = InflatingFileSink(fd, 0, 5, False, pool, label="object ab/cd/ef.00")
            with pytest.raises(StorageError, match=r"object ab/cd/ef\.00: No space left"):
                await sink.write(b"hello")
    finally:
        os.close(fd)


def test_most_serious_error_of_a_failed_run() -> None:
    enospc = OSError(errno.ENOSPC, "No space left on device")
    missing = ObjectMissingError("data/ab/cd", "not found")
    converted = most_serious(ExceptionGroup("run", [missing, ExceptionGroup("x", [enospc])]))
    assert isinstance(converted, StorageError) and converted.__cause__ is enospc
    trust = TrustError("catalog of /n does not match its hash")
    assert most_serious(ExceptionGroup("run", [enospc, ExceptionGroup("x", [trust])])) is trust
    assert most_serious(ExceptionGroup("run", [missing])) is missing


def test_duplicate_names_in_one_listing_refused() -> None:
    refuse_duplicate_names(("a",), ["x", "y", "z"])
    with pytest.raises(UnsafePathError, match="/a/x"):
        refuse_duplicate_names(("a",), ["x", "y", "x"])


def test_retries_count_every_repeated_request() -> None:
    fetch = FetchStats(
        requests=20, retries=2, no_cache_retries=3, failovers=5, failures=10, missing=1, corrupt=1
    )
    stats = ExportStats()
    stats.take_fetch_counters(fetch)
    # 2 same-route retries + 3 no-cache refetches + 3 failovers followed by another attempt
    assert (stats.requests, stats.retries, stats.failed_attempts) == (20, 8, 10)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mountpoint)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_copy_fallback_on_a_full_disk_leaves_no_partial_file(
    tmp_path: Path, tiny_tmpfs: Path
) -> None:
    """Store and tree on different file systems (EXDEV: copy instead of link); the tree's
    disk fills up during the copy: StorageError, nothing under the final or a temp name."""
    obj = tmp_path / "object"
    obj.write_bytes(random.Random(1).randbytes(1 << 20))
    with TreeWriter(tiny_tmpfs / "tree", chown=False, warn=lambda _: None) as writer:
        with pytest.raises(StorageError, match="No space left"):
            writer.link_object(("file",), obj)
        assert os.listdir(tiny_tmpfs / "tree") == []


def test_commit_never_replaces_a_committed_object(tmp_path: Path) -> None:
    """Another process may be hard-linking the object: replacing it (rename over it) would
    make that link fail with ENOENT. The first commit stays, the second temp is dropped."""
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    first = store.write_object("ab/cd/ef.0", b"same", meta)
    inode = os.stat(first).st_ino
    again = store.write_object("ab/cd/ef.0", b"same", meta)
    assert again == first and os.stat(first).st_ino == inode
    assert os.listdir(store.temp_dir) == []


@pytest.mark.parametrize("unnamed", ["1", "0"], ids=["unnamed-temp", "named-temp"])
def test_small_objects_appear_complete_under_their_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: str
) -> None:
    """Written through an O_TMPFILE file linked into place when complete (or, where the
    file system has none, a named temp renamed): content, mode, mtime, nothing left over."""
    monkeypatch.setenv(data_store.UNNAMED_ENV, unnamed)
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    meta = ObjectMeta(0o750, os.getuid(), os.getgid(), 1_700_000_000)
    made = Path(store.write_object("12/34/5678.0", b"content", meta))
    assert made.read_bytes() == b"content"
    st = os.stat(made)
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime == 1_700_000_000
    assert st.st_nlink == 1 and os.listdir(store.temp_dir) == []
    assert store._unnamed is (unnamed == "1" and data_store._UNNAMED_FLAGS is not None)


def test_a_file_system_without_unnamed_temps_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    real_open = os.open

    def no_tmpfile(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & getattr(os, "O_TMPFILE", 0) == getattr(os, "O_TMPFILE", -1):
            raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_tmpfile)
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    assert Path(store.write_object("ab/cd/ef.0", b"x", meta)).read_bytes() == b"x"
    assert not store._unnamed  # not tried again
    assert Path(store.write_object("ab/cd/ef.1", b"y", meta)).read_bytes() == b"y"
    assert os.listdir(store.temp_dir) == []


def test_unnamed_files_that_cannot_be_linked_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that makes O_TMPFILE files but refuses to link them (EPERM, as with
    protected_hardlinks on some setups): the object is written under a temp name instead."""
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    real_link = os.link

    def refuse_proc_links(src: object, dst: object, **kwargs: object) -> None:
        if kwargs.get("src_dir_fd") is not None:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", refuse_proc_links)
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    assert Path(store.write_object("ab/cd/ef.0", b"x", meta)).read_bytes() == b"x"
    assert not store._unnamed
    assert os.listdir(store.temp_dir) == []


def test_the_store_root_descriptor_is_closed_once(tmp_path: Path) -> None:
    """The store works through a descriptor of its root: closed by ``close`` (reopened if
    the store is used again), and never closed a second time when the store is collected,
    when its number may already belong to another file."""
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    first = store.root_fd
    assert Path(store.write_object("ab/cd/ef.0", b"x", meta)).read_bytes() == b"x"
    store.close()
    with pytest.raises(OSError):
        os.fstat(first)
    assert Path(store.write_object("ab/cd/ef.1", b"y", meta)).read_bytes() == b"y"
    store.close()
    other = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)  # may reuse the number
    try:
        del store
        gc.collect()
        os.fstat(other)
    finally:
        os.close(other)


def test_look_up_answers_alike_for_met_and_unmet_fan_out_directories(tmp_path: Path) -> None:
    """A fan-out directory the store has met is asked with a stat, another one is listed:
    either way a committed object is found, an object of the same content under other
    metadata is offered, and a missing directory means absent."""
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    writer = DataStore(tmp_path / ".data", chown=False)
    writer.prepare()
    writer.write_object("ab/cd/ef.0", b"x", meta)
    names = ["ab/cd/ef.0", "ab/cd/ef.1", "ab/ce/ef.0", "12/34/56.0"]
    expected = ["ab/cd/ef.0", "ab/cd/ef.0", "", ""]
    assert writer.look_up(names) == expected  # "ab/cd" met when written
    reader = DataStore(tmp_path / ".data", chown=False)  # another process's view
    assert reader.look_up(names) == expected
    assert reader.look_up(names) == expected  # now "ab/cd" is met: the stat path
    assert reader.same_content("ab/cd/ef.2") == "ab/cd/ef.0"


def test_a_store_empty_at_the_start_answers_for_its_own_objects_only(tmp_path: Path) -> None:
    """A first export's store holds only what its process made or set out to make: other
    fan-out directories are not asked (an object put there behind its back is not seen);
    one that was noted pending, or that it made itself, is asked as usual."""
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    behind_its_back = DataStore(tmp_path / ".data", chown=False)
    behind_its_back.write_object("ab/cd/ef.0", b"x", meta)
    behind_its_back.write_object("12/34/56.0", b"y", meta)
    assert store.look_up(["ab/cd/ef.0", "ab/cd/ef.1", "12/34/56.0"]) == ["", "", ""]
    store.note_pending("ab/cd/ef.1")  # being fetched: its directory is asked from now on
    assert store.look_up(["ab/cd/ef.0", "ab/cd/ef.1"]) == ["ab/cd/ef.0", "ab/cd/ef.0"]
    store.write_object("77/88/99.0", b"z", meta)
    assert store.look_up(["77/88/99.0", "12/34/56.0"]) == ["77/88/99.0", ""]
    # A store that held objects when prepared is asked for every name.
    again = DataStore(tmp_path / ".data", chown=False)
    again.prepare()
    assert again.look_up(["12/34/56.0", "ab/cd/ef.0"]) == ["12/34/56.0", "ab/cd/ef.0"]


@pytest.mark.parametrize("unnamed", ["1", "0"], ids=["unnamed-temp", "named-temp"])
def test_streamed_objects_appear_complete_under_their_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: str
) -> None:
    """A large object is written piece by piece into a file of ``new_object_file`` (unnamed
    where the file system has them: a killed run leaves nothing) and put in place whole."""
    monkeypatch.setenv(data_store.UNNAMED_ENV, unnamed)
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    meta = ObjectMeta(0o755, os.getuid(), os.getgid(), 1_700_000_000)
    fd, temp = store.new_object_file()
    assert (temp is None) is (unnamed == "1" and data_store._UNNAMED_FLAGS is not None)
    os.pwrite(fd, b"world", 5)
    os.pwrite(fd, b"hello", 0)
    assert not (tmp_path / ".data" / "ab").exists()  # nothing under its name yet
    made = Path(store.commit_object_file(fd, temp, "ab/cd/ef.0", meta))
    assert made.read_bytes() == b"helloworld"
    st = os.stat(made)
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_mtime == 1_700_000_000
    assert st.st_nlink == 1 and os.listdir(store.temp_dir) == []


def test_a_streamed_object_that_cannot_be_linked_is_copied_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its bytes are only in the unnamed file: where that cannot be linked (EPERM), they
    are copied into a named temp, which is committed; later objects use named temps."""
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    fd, temp = store.new_object_file()
    if temp is not None:
        pytest.skip("no O_TMPFILE here")
    os.write(fd, b"payload")
    real_link = os.link

    def refuse_proc_links(src: object, dst: object, **kwargs: object) -> None:
        if kwargs.get("src_dir_fd") is not None and str(src).isdigit():
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "link", refuse_proc_links)
    meta = ObjectMeta(0o644, os.getuid(), os.getgid(), 1_700_000_000)
    made = Path(store.commit_object_file(fd, temp, "ab/cd/ef.0", meta))
    assert made.read_bytes() == b"payload" and not store._unnamed
    assert os.listdir(store.temp_dir) == []
    assert store.new_object_file()[1] is not None  # named from now on
