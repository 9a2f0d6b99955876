"""External files (catalog flag 128): fetched by path from CVMFS_EXTERNAL_URL, verified.

A repository is published with some paths external (their content served by a second
web server, by path); the export fetches them from there, a chunked one as byte ranges.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ConfigError
from shrinkwrap_async.hashing import Algorithm, ObjectSuffix
from shrinkwrap_async.link.tree_writer import MARKER_NAME
from shrinkwrap_async.network.errors import (
    ExternalNotConfiguredError,
    FetchError,
    ObjectCorruptError,
    ObjectMissingError,
)
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.store.object_names import meta_hash, object_name
from shrinkwrap_async.testing.chunking import ChunkSizes
from shrinkwrap_async.testing.command_line import run_cli
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, PublishResult
from shrinkwrap_async.testing.servers import GEO_ROUTE, StaticServer, serve_handler
from shrinkwrap_async.testing.shared import write_client_config

FQRN = "external.test.local"
CHUNKS = ChunkSizes(32 << 10, 64 << 10, 128 << 10)
SMALL = "/ext/small.txt"
ODD = "/ext/odd name+ü%.bin"
COPY = "/ext/copy.txt"
BIG = "/ext/big.bin"
NESTED = "/ext/nested/inner.dat"
EMPTY = "/ext/empty"
EXTERNAL = frozenset({SMALL, ODD, COPY, BIG, NESTED, EMPTY})


def write_source(root: Path) -> Path:
    rng = random.Random(7)
    files = {
        "/README.txt": b"regular file, stored in data/\n",
        "/plain/large.bin": rng.randbytes(300_000),
        SMALL: b"hello from the external data server\n",
        COPY: b"hello from the external data server\n",  # same content and metadata
        ODD: rng.randbytes(5000),
        BIG: rng.randbytes(600_000),  # chunked: fetched as byte ranges
        NESTED: b"inside a nested catalog\n" * 100,
        EMPTY: b"",
        "/ext/nested/.cvmfscatalog": b"",
    }
    for path, data in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)
    return root


def publish(
    tmp_path: Path, *, compress: bool = True, compress_external: bool = False
) -> PublishResult:
    source = write_source(tmp_path / "source")
    options = PublishOptions(
        chunk_sizes=CHUNKS,
        workers=1,
        external=EXTERNAL,
        compress=compress,
        compress_external=compress_external,
    )
    return Publisher(tmp_path / "server", FQRN, options).publish(source)


def catalog_rows(result: PublishResult, mountpoint: str) -> dict[str, tuple[int, int]]:
    """``name -> (flags, chunk count)`` of the rows of one published catalog."""
    digest = result.catalogs[mountpoint]
    blob = (result.repository_dir / digest.object_path(ObjectSuffix.CATALOG)).read_bytes()
    path = result.repository_dir.parent.parent / f"catalog-{digest.hex}.db"
    path.write_bytes(zlib.decompress(blob))
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT name, flags, (SELECT COUNT(*) FROM chunks c WHERE c.md5path_1 = "
            "catalog.md5path_1 AND c.md5path_2 = catalog.md5path_2) FROM catalog"
        ).fetchall()
    finally:
        db.close()
    return {name: (flags, count) for name, flags, count in rows}


@dataclass
class Servers:
    result: PublishResult
    repository: StaticServer
    external: StaticServer
    tmp_path: Path

    def argv(self, dest: Path, extra: str | None = None) -> list[str]:
        if extra is None:
            extra = f"CVMFS_EXTERNAL_URL={self.external.url}\n"
        config = write_client_config(
            self.tmp_path / "client",
            self.repository.url,
            self.result.public_key.parent,
            extra=f"CVMFS_BACKOFF_INIT=0\n{extra}",
        )
        spec = self.tmp_path / "all.spec"
        spec.write_text("/*\n")
        return ["export", "-r", FQRN, "-f", str(config), "-t", str(spec), "-x", str(dest)]

    def external_requests(self, path: str) -> int:
        return self.external.requests[path.lstrip("/")]


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    result = publish(tmp_path)
    assert result.external_dir is not None
    async with (
        StaticServer(result.repository_dir.parent.parent) as repository,
        StaticServer(result.external_dir) as external,
    ):
        yield Servers(result, repository, external, tmp_path)


def tree_files(root: Path) -> dict[str, bytes]:
    return {
        "/" + str(Path(d, f).relative_to(root)): Path(d, f).read_bytes()
        for d, _dirs, names in os.walk(root)
        for f in names
        if f not in (".cvmfscatalog", MARKER_NAME)
    }


def store_names(store: Path) -> set[str]:
    return {
        str(Path(d, f).relative_to(store))
        for d, _dirs, names in os.walk(store)
        if ".tmp" not in Path(d).relative_to(store).parts
        for f in names
    }


def test_publisher_marks_external_files_as_the_server_does(tmp_path: Path) -> None:
    result = publish(tmp_path)
    root, nested = catalog_rows(result, ""), catalog_rows(result, "/ext/nested")
    uncompressed = 1 << 11
    assert root["small.txt"] == (4 | 128 | uncompressed, 0)
    assert root["odd name+ü%.bin"] == (4 | 128 | uncompressed, 0)
    flags, chunks = root["big.bin"]
    assert flags == 4 | 128 | 64 | uncompressed and chunks > 1
    assert root["large.bin"][0] == 4 | 64  # a regular chunked file
    assert nested["inner.dat"] == (4 | 128 | uncompressed, 0)
    assert root["README.txt"] == (4, 0)  # regular files: zlib, no external flag
    assert result.external_dir is not None
    assert (result.external_dir / "ext" / "small.txt").read_bytes().startswith(b"hello")
    # the content is not in data/: only the external server has it
    small = Algorithm.SHA1.hash(b"hello from the external data server\n")
    assert not (result.repository_dir / small.object_path()).exists()


async def test_external_files_are_exported_from_the_external_url(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dest"
    assert await run_cli(*servers.argv(dest), "--json", "-q", "--no-progress") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["failures"] == []
    assert tree_files(dest / FQRN) == tree_files(tmp_path / "source")
    # by path from the external server (escaped), a chunked file one range per chunk
    assert servers.external_requests(ODD) == 1
    assert servers.external_requests(NESTED) == 1
    chunks = catalog_rows(servers.result, "")["big.bin"][1]
    assert servers.external_requests(BIG) == chunks > 1
    # same content and metadata: one object, fetched once, both paths linked to it
    assert servers.external_requests(SMALL) + servers.external_requests(COPY) == 1
    small, copy = dest / FQRN / SMALL.lstrip("/"), dest / FQRN / COPY.lstrip("/")
    assert small.stat().st_ino == copy.stat().st_ino
    # named in .data like any object: content hash + metadata hash
    uid, gid = os.geteuid(), os.getegid()
    name = object_name(Algorithm.SHA1.hash(small.read_bytes()), meta_hash(0o100644, uid, gid, ()))
    assert name in store_names(dest / ".data")
    assert os.stat(dest / ".data" / name).st_ino == small.stat().st_ino
    # nothing external went to the repository server
    assert not any(path.startswith("ext/") for path in servers.repository.requests)
    # a second run finds everything in place and asks the external server nothing more
    before = servers.external.total_requests
    assert await run_cli(*servers.argv(dest), "-q", "--no-progress") == 0
    assert servers.external.total_requests == before


async def test_compressed_external_files_are_inflated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An external server without ``-Z none`` serves zlib bytes: the catalog's compression
    bits say so, the hash is over the compressed bytes, the tree gets the inflated file
    (a chunked external file stays raw: each range has to stand alone)."""
    result = publish(tmp_path, compress_external=True)
    assert result.external_dir is not None
    root = catalog_rows(result, "")
    assert root["small.txt"] == (4 | 128, 0)  # compression bits 0: zlib
    assert root["big.bin"][0] == 4 | 128 | 64 | 1 << 11
    served = (result.external_dir / SMALL.lstrip("/")).read_bytes()
    assert zlib.decompress(served) == b"hello from the external data server\n"
    async with (
        StaticServer(result.repository_dir.parent.parent) as repository,
        StaticServer(result.external_dir) as external,
    ):
        servers = Servers(result, repository, external, tmp_path)
        dest = tmp_path / "dest"
        assert await run_cli(*servers.argv(dest), "--json", "-q", "--no-progress") == 0
    assert json.loads(capsys.readouterr().out)["failures"] == []
    assert tree_files(dest / FQRN) == tree_files(tmp_path / "source")


async def test_tampered_external_files_are_refused(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    external = servers.result.external_dir
    assert external is not None
    odd = external / ODD.lstrip("/")
    odd.write_bytes(bytes(b ^ 1 for b in odd.read_bytes()))  # same size, other bytes
    big = external / BIG.lstrip("/")
    data = bytearray(big.read_bytes())
    data[100_000] ^= 0xFF  # inside one chunk, not the first
    big.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    assert await run_cli(*servers.argv(dest), "--json", "-q", "--no-progress") == 1
    summary = json.loads(capsys.readouterr().out)
    failed = {failure["path"]: failure["reason"] for failure in summary["failures"]}
    assert set(failed) == {BIG, ODD}
    for reason in failed.values():
        assert "corrupt data" in reason and "content hash mismatch" in reason
        assert "\n" not in reason
    assert "[bytes " in failed[BIG]  # the chunk that failed is named
    tree = dest / FQRN
    for path in failed:
        assert not (tree / path.lstrip("/")).exists()
    # the untouched external files and the regular ones are there
    assert (tree / SMALL[1:]).read_bytes() == (tmp_path / "source" / SMALL[1:]).read_bytes()
    assert (tree / "README.txt").is_file()
    # nothing unverified is left in .data: only the objects of the exported files
    linked = {os.stat(Path(d, f)).st_ino for d, _s, files in os.walk(tree) for f in files}
    stored = {os.stat(dest / ".data" / n).st_ino for n in store_names(dest / ".data")}
    assert stored <= linked
    assert os.listdir(dest / ".data" / ".tmp") == [] or all(
        not files for _d, _s, files in os.walk(dest / ".data" / ".tmp")
    )
    # the bad bytes were asked for again with no-cache before giving up
    assert servers.external_requests(ODD) >= 2


async def test_without_external_url_each_external_file_fails_clearly(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dest"
    code = await run_cli(*servers.argv(dest, extra=""), "--json", "-q", "--no-progress")
    assert code == 1
    summary = json.loads(capsys.readouterr().out)
    failed = {failure["path"]: failure["reason"] for failure in summary["failures"]}
    assert set(failed) == set(EXTERNAL)
    assert set(failed.values()) == {ExternalNotConfiguredError.MESSAGE}
    assert "CVMFS_EXTERNAL_URL is not set" in ExternalNotConfiguredError.MESSAGE
    assert servers.external.total_requests == 0
    assert (dest / FQRN / "plain" / "large.bin").is_file()


async def test_external_and_regular_files_of_the_same_bytes_share_an_object(
    tmp_path: Path,
) -> None:
    """Uncompressed, a regular file's object hash is over the raw bytes too: same name."""
    source = write_source(tmp_path / "source")
    regular = source / "plain" / "same.txt"
    regular.write_bytes((source / SMALL[1:]).read_bytes())
    regular.chmod(0o644)
    options = PublishOptions(chunk_sizes=CHUNKS, workers=1, external=EXTERNAL, compress=False)
    result = Publisher(tmp_path / "server", FQRN, options).publish(source)
    assert result.external_dir is not None
    async with (
        StaticServer(result.repository_dir.parent.parent) as repository,
        StaticServer(result.external_dir) as external,
    ):
        servers = Servers(result, repository, external, tmp_path)
        dest = tmp_path / "dest"
        assert await run_cli(*servers.argv(dest), "-q", "--no-progress") == 0
    tree = dest / FQRN
    assert (tree / "plain" / "same.txt").stat().st_ino == (tree / SMALL[1:]).stat().st_ino
    digest = Algorithm.SHA1.hash(regular.read_bytes())
    fetched = repository.requests[f"cvmfs/{FQRN}/{digest.object_path()}"]
    fetched += servers.external_requests(SMALL) + servers.external_requests(COPY)
    assert fetched == 1


# -- the fetcher ---------------------------------------------------------------------------


class WholeFileServer:
    """A web server on 127.0.0.1 that ignores Range headers (always 200, whole file)."""

    def __init__(self, docroot: Path) -> None:
        self.docroot = docroot
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        target = self.docroot / request.match_info["path"]
        if not target.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=target.read_bytes())

    async def __aenter__(self) -> WholeFileServer:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def fetcher_settings(*external: str) -> ClientSettings:
    return ClientSettings.for_repository(
        FQRN,
        "http://127.0.0.1:9/cvmfs/unused",
        external_urls=list(external),
        backoff_init=0,
        trusted_certs=(),
    )


async def test_fetcher_gets_paths_and_ranges_from_the_external_chain(tmp_path: Path) -> None:
    docroot = tmp_path / "external"
    target = docroot / "sub dir" / "f ü.bin"
    target.parent.mkdir(parents=True)
    data = random.Random(3).randbytes(10_000)
    target.write_bytes(data)
    path = "/sub dir/f ü.bin"
    whole = Algorithm.SHA1.hash(data)
    part = Algorithm.SHA1.hash(data[4096:8192])
    async with WholeFileServer(docroot) as ignoring, StaticServer(docroot) as ranged:
        settings = fetcher_settings(f"{ignoring.url}/", ranged.url)
        assert settings.external_urls == (ignoring.url, ranged.url)
        async with Fetcher(settings, max_in_flight=4) as fetcher:
            assert await fetcher.fetch_external(path, whole) == data
            assert ignoring.requests == 1 and ranged.total_requests == 0
            # the first host answers a Range request with the whole file: the next one serves
            got = await fetcher.fetch_external(path, part, byte_range=(4096, 4096))
            assert got == data[4096:8192]
            assert ranged.requests["sub dir/f ü.bin"] == 1
            # bad bytes: refused (the other host cannot serve the range at all)
            with pytest.raises(FetchError, match=r"\[bytes 0-4095\].*content hash mismatch"):
                await fetcher.fetch_external(path, part, byte_range=(0, 4096))
        async with Fetcher(fetcher_settings(ranged.url), max_in_flight=4) as fetcher:
            with pytest.raises(ObjectCorruptError, match="content hash mismatch"):
                await fetcher.fetch_external(path, part, byte_range=(0, 4096))
            assert fetcher.stats.no_cache_retries >= 1
            with pytest.raises(ObjectMissingError):
                await fetcher.fetch_external("/missing", whole)
    async with Fetcher(fetcher_settings(), max_in_flight=4) as fetcher:
        with pytest.raises(ExternalNotConfiguredError):
            await fetcher.fetch_external(path, whole)


def test_external_settings_from_configuration(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k.pub").write_text("key")
    config = tmp_path / "client.conf"
    base = f"CVMFS_SERVER_URL=http://127.0.0.1:1/cvmfs/@fqrn@\nCVMFS_KEYS_DIR={keys}\n"
    config.write_text(base)
    plain = ClientSettings.load([config], FQRN)
    assert plain.external_urls == () and plain.external_proxy_groups == (("DIRECT",),)
    assert plain.external_timeout_for(proxied=True) == plain.timeout
    config.write_text(
        base + "CVMFS_TIMEOUT_DIRECT=7\n"
        "CVMFS_EXTERNAL_URL='http://127.0.0.1:2/@fqrn@/;http://127.0.0.1:3/x;http://127.0.0.1:4'\n"
        "CVMFS_EXTERNAL_MAX_SERVERS=2\nCVMFS_EXTERNAL_HTTP_PROXY='127.0.0.1:3128|127.0.0.1:3129'\n"
        "CVMFS_EXTERNAL_TIMEOUT=20\n"
    )
    settings = ClientSettings.load([config], FQRN)
    assert settings.external_urls == (f"http://127.0.0.1:2/{FQRN}", "http://127.0.0.1:3/x")
    assert settings.external_proxy_groups == (("http://127.0.0.1:3128", "http://127.0.0.1:3129"),)
    assert settings.proxy_groups == (("DIRECT",),)  # the regular chain is untouched
    assert settings.external_timeout_for(proxied=True) == 20
    assert settings.external_timeout_for(proxied=False) == 7  # as CVMFS_TIMEOUT_DIRECT
    config.write_text(base + "CVMFS_EXTERNAL_URL=ftp://127.0.0.1/data\n")
    with pytest.raises(ConfigError, match=r"client.conf:3: CVMFS_EXTERNAL_URL entry"):
        ClientSettings.load([config], FQRN)


async def test_external_requests_use_the_external_proxies_only(tmp_path: Path) -> None:
    """CVMFS_EXTERNAL_HTTP_PROXY carries external requests (a bad answer is refetched with
    no-cache through it); the regular chain stays DIRECT."""
    docroot = tmp_path / "docroot"
    (docroot / "data").mkdir(parents=True)
    data = b"external bytes through a proxy\n" * 50
    (docroot / "data" / "file.bin").write_bytes(data)
    (docroot / "root-file").write_bytes(b"regular")
    async with StaticServer(docroot) as origin, FaultProxy(schedule=[Fault.FLIP]) as proxy:
        settings = ClientSettings.for_repository(
            FQRN,
            origin.url,
            external_urls=f"{origin.url}/data",
            external_proxy_groups=proxy.url,
            backoff_init=0,
            trusted_certs=(),
        )
        async with Fetcher(settings, max_in_flight=4) as fetcher:
            assert await fetcher.fetch_external("/file.bin", Algorithm.SHA1.hash(data)) == data
            assert await fetcher.fetch_file("root-file") == b"regular"
    assert proxy.requests_by_path == {"/data/file.bin": 2}
    assert proxy.applied[Fault.FLIP] == 1
    first, second = (headers for _path, headers in proxy.headers_seen)
    assert "Pragma" not in first and second.get("Pragma") == "no-cache"
    assert origin.requests == {"data/file.bin": 2, "root-file": 1}


async def test_a_changed_external_file_is_refetched_on_refresh(
    servers: Servers, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    assert await run_cli(*servers.argv(dest), "-q", "--no-progress") == 0
    source = tmp_path / "source"
    (source / NESTED[1:]).write_bytes(b"changed in revision 2\n")
    options = PublishOptions(chunk_sizes=CHUNKS, workers=1, external=EXTERNAL)
    Publisher(tmp_path / "server", FQRN, options).publish(source)
    before = {path: servers.external_requests(path) for path in EXTERNAL}
    assert await run_cli(*servers.argv(dest), "-q", "--no-progress") == 0
    assert (dest / FQRN / NESTED[1:]).read_bytes() == b"changed in revision 2\n"
    assert servers.external_requests(NESTED) == before[NESTED] + 1
    assert all(servers.external_requests(p) == before[p] for p in EXTERNAL - {NESTED})
    assert tree_files(dest / FQRN) == tree_files(source)


async def test_shards_split_external_files_by_content(servers: Servers, tmp_path: Path) -> None:
    """``--workers 2``: each external object is fetched by the shard owning its content,
    once, whatever shard owns its directory."""
    dest = tmp_path / "dest"
    assert await run_cli(*servers.argv(dest), "--workers", "2", "-q", "--no-progress") == 0
    assert tree_files(dest / FQRN) == tree_files(tmp_path / "source")
    chunks = catalog_rows(servers.result, "")["big.bin"][1]
    assert servers.external_requests(BIG) == chunks
    assert servers.external_requests(ODD) == servers.external_requests(NESTED) == 1
    assert servers.external_requests(SMALL) + servers.external_requests(COPY) == 1


async def test_geo_api_of_the_repository_servers_orders_the_external_hosts(
    tmp_path: Path,
) -> None:
    asked: list[str] = []

    async def geo(request: web.Request) -> web.Response:
        asked.append(request.match_info["names"])
        return web.Response(text="2,1\n")

    async with serve_handler(GEO_ROUTE, geo) as url:
        first, second = "http://localhost:1/data", "http://127.0.0.1:2/data"
        settings = ClientSettings.for_repository(
            FQRN,
            f"{url}/cvmfs/{FQRN}",
            external_urls=[first, second],
            use_geoapi=True,
            trusted_certs=(),
            max_retries=0,
            backoff_init=0.0,
            backoff_max=0.0,
        )
        async with Fetcher(settings) as fetcher:
            assert fetcher.external_state is not None
            assert asked == []  # not at start: most runs fetch no external file
            with pytest.raises(FetchError):  # nothing listens there; the order is the point
                await fetcher.fetch_external("/a", Algorithm.SHA1.hash(b"a"))
            assert fetcher.external_state.hosts == [second, first]
            assert fetcher.state.hosts == [f"{url}/cvmfs/{FQRN}"]
    assert asked == ["localhost,127.0.0.1"]  # one server: only the external chain is sorted


async def test_dry_run_plans_external_files_as_the_export_fetches_them(
    servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "dest"
    argv = [*servers.argv(dest), "--no-progress"]
    assert await run_cli(*argv, "--dry-run", "--json", "--exact") == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["external"] == [] and servers.external.total_requests == 0
    assert await run_cli(*argv, "--json", "-q") == 0
    done = json.loads(capsys.readouterr().out)
    assert done["failures"] == [] and done["data_files"] == planned["objects_needed"]
    # without CVMFS_EXTERNAL_URL the plan names the files the export would fail on
    without = servers.argv(tmp_path / "other", extra="")
    assert await run_cli(*without, "--no-progress", "--dry-run", "--json", "--exact") == 0
    assert set(json.loads(capsys.readouterr().out)["external"]) == set(EXTERNAL)


async def test_pack_from_the_repository_fetches_external_files(
    servers: Servers, tmp_path: Path
) -> None:
    """``pack -r`` gives the same archive as an export followed by ``pack -x``."""
    dest = tmp_path / "dest"
    export = servers.argv(dest)
    assert await run_cli(*export, "-q", "--no-progress") == 0
    mtime = "1700000123"
    packed = tmp_path / "packed.tar"
    assert await run_cli("pack", "-q", "-x", str(dest), "-r", FQRN, "--mtime", mtime,
                         "-o", str(packed)) == 0  # fmt: skip
    before = servers.external.total_requests
    streamed = tmp_path / "streamed.tar"
    source = export[1:7]  # -r FQRN -f CONFIG -t SPEC
    assert await run_cli("pack", "-q", *source, "--mtime", mtime, "-o", str(streamed)) == 0
    assert streamed.read_bytes() == packed.read_bytes()
    assert servers.external.total_requests > before  # the external files came by path again
    assert servers.external_requests(BIG) == 2 * catalog_rows(servers.result, "")["big.bin"][1]
