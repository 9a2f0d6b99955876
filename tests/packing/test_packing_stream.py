"""``pack`` straight from a repository: the same bytes as exporting, then ``pack -x``.

The real fixture fix1 is served on 127.0.0.1; each case exports it with ``export`` and
packs the tree, then packs the same selection with ``pack -f -t`` (no tree), and compares.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy
import pytest
from aiohttp import web

from shrinkwrap_async.packing.entries import MARKER_NAME
from shrinkwrap_async.testing.command_line import (
    run_cli,
    run_cli_process,
    source_arguments,
    start_cli_process,
)
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, SourceNode
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import data_requests, fixtures_dir, write_client_config

FQRN = "fix1.test.local"
MTIME = "1700000123"  # root and marker time for both packs (each pack normalises them)
SPECS = fixtures_dir() / "specs"
HAVE_SQUASHFS = bool(shutil.which("mksquashfs") and shutil.which("unsquashfs"))


async def export_and_pack(
    tmp: Path, config: Path, spec: Path, output: Path, fqrn: str = FQRN
) -> Path:
    """``export`` into ``tmp/export``, then ``pack -x`` it; returns the export base."""
    base = tmp / "export"
    code = await run_cli("export", "-q", "--no-progress", "-r", fqrn, "-f", str(config),
                         "-t", str(spec), "-x", str(base))  # fmt: skip
    assert code == 0
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "--mtime", MTIME,
                         "-o", str(output)) == 0  # fmt: skip
    return base


def listing(image: Path) -> list[str]:
    result = subprocess.run(["unsquashfs", "-lls", "-n", str(image)], check=True,
                            capture_output=True, text=True)  # fmt: skip
    return result.stdout.splitlines()


@pytest.mark.parametrize(
    ("fqrn", "spec_name"),
    [
        (FQRN, "all"),
        (FQRN, "partial"),
        ("fix2.test.local", "all"),  # shake128, small chunks
        ("fix3.test.local", "all"),  # rmd160, uncompressed objects, FIFO and device node
    ],
)
async def test_streamed_tar_equals_packed_export(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path, fqrn: str, spec_name: str
) -> None:
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    spec = SPECS / fqrn / f"{spec_name}.spec"
    exported = tmp_path / "exported.tar"
    await export_and_pack(tmp_path, config, spec, exported, fqrn)

    before = fixture_server.requests.copy()
    streamed = tmp_path / "streamed.tar"
    code = await run_cli("pack", "-q", "-r", fqrn, "-f", str(config), "-t", str(spec),
                         "--mtime", MTIME, "-j", "4", "-o", str(streamed))  # fmt: skip
    assert code == 0
    assert streamed.read_bytes() == exported.read_bytes()

    # It really streamed: objects came from the server again (the catalogs from the cache).
    fetched = [path for path in fixture_server.requests - before if "/data/" in path]
    assert any(path[-1] in "0123456789abcdef" for path in fetched), "no file object fetched"
    assert not any(path.endswith("C") for path in fetched), "catalogs not taken from the cache"
    assert any(path.endswith("P") for path in fetched) == (spec_name == "all")
    with tarfile.open(streamed) as tar:
        members = {m.name: m for m in tar.getmembers()}
    marker = members[f"{fqrn}/{MARKER_NAME}"]
    assert marker.isreg() and marker.mtime == int(MTIME) and marker.mode == 0o644
    assert members[fqrn].isdir() and members[fqrn].mtime == int(MTIME)
    if spec_name == "partial":
        assert f"{fqrn}/README.txt" in members and f"{fqrn}/big/large.bin" not in members
    else:
        assert members[f"{fqrn}/hard/b"].islnk()
        assert members[f"{fqrn}/hard/b"].linkname == f"{fqrn}/hard/a"
        links = members[f"{fqrn}/links/vardefault"]
        assert links.issym() and not links.linkname.startswith("$(")
    if fqrn == "fix3.test.local":
        assert members[f"{fqrn}/special/fifo"].isfifo()
        device = members[f"{fqrn}/special/null_device"]
        assert device.ischr() and (device.devmajor, device.devminor) == (1, 3)
    # Nothing was written next to the output but the output itself.
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tar") == [
        "exported.tar",
        "streamed.tar",
    ]


async def test_default_time_is_the_publish_time_and_failures_leave_no_output(
    fixture_server: StaticServer, fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    spec = SPECS / FQRN / "partial.spec"
    output = tmp_path / "out.tar"
    assert await run_cli("pack", "-q", "-r", FQRN, "-f", str(config), "-t", str(spec),
                         "-o", str(output)) == 0  # fmt: skip
    manifest = (fixture_docroot / "cvmfs" / FQRN / ".cvmfspublished").read_bytes()
    publish_time = int(manifest.split(b"\nT", 1)[1].split(b"\n", 1)[0])
    with tarfile.open(output) as tar:
        assert tar.getmember(FQRN).mtime == publish_time
        assert tar.getmember(f"{FQRN}/{MARKER_NAME}").mtime == publish_time
    output.unlink()

    # File objects missing on the server (catalogs still there): the pack fails with the
    # fetch's exit code, and leaves neither the output nor a temporary file behind.
    for path in (fixture_docroot / "cvmfs" / FQRN / "data").rglob("*"):
        if path.is_file() and path.name[-1] in "0123456789abcdef":
            path.unlink()
    code = await run_cli("pack", "-q", "-r", FQRN, "-f", str(config), "-t", str(spec),
                         "-o", str(output))  # fmt: skip
    assert code == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".out.tar", "out.tar"))]


async def test_streamed_tar_to_stdout_compressed_and_raw_symlinks(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    """``-o -`` with zstd gives the same archive as a file; --keep-variant-symlinks."""
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    spec = SPECS / FQRN / "partial.spec"
    common = ["-r", FQRN, "-f", str(config), "-t", str(spec), "--mtime", MTIME]
    to_file = tmp_path / "out.tar.zst"
    assert await run_cli("pack", "-q", *common, "-o", str(to_file)) == 0
    to_stdout = await run_cli_process("pack", "-q", *common, "--compress", "zstd", "-o", "-")
    assert to_stdout.exit_code == 0, to_stdout.stderr
    assert to_stdout.stdout == to_file.read_bytes()

    raw = tmp_path / "raw.tar"
    assert await run_cli("pack", "-q", *common, "--keep-variant-symlinks", "-o", str(raw)) == 0
    with tarfile.open(raw) as tar:
        assert tar.getmember(f"{FQRN}/links/vardefault").linkname == "$(CVMFS_ARCH:-x86_64)/lib"


class SlowServer(StaticServer):
    """Answers each data object after a pause: a pack lasts long enough to be stopped."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "/data/" in request.match_info["path"]:
            await asyncio.sleep(0.1)
        return await super()._handle(request)


@pytest.mark.parametrize("output", ["out.tar", "-", "out.oci"])
async def test_sigterm_stops_a_streamed_pack_and_says_what_became_of_the_output(
    fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path, output: str
) -> None:
    target = output if output == "-" else str(tmp_path / output)
    form = ["--format", "oci"] if output.endswith(".oci") else []
    async with SlowServer(fixture_docroot) as server:
        source = source_arguments(tmp_path, server.url, fixtures_dir / "keys", FQRN)
        process = await start_cli_process("pack", *source, *form, "-j", "2", "-o", target)
        for _ in range(500):  # until the pack is under way (or has ended: then it fails below)
            if data_requests(server) >= 3 or process.returncode is not None:
                break
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = await process.communicate()
    message = err.decode()
    assert process.returncode == 128 + signal.SIGTERM, message
    if output == "-":
        assert "stopped by SIGTERM; the archive written to stdout is incomplete" in message
    else:
        assert f"stopped by SIGTERM; {target} was not written" in message
    assert "a rerun resumes" not in message
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".out.", "out."))]


@pytest.mark.skipif(not HAVE_SQUASHFS, reason="squashfs-tools not installed")
async def test_streamed_squashfs_lists_like_packed_export(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    spec = SPECS / FQRN / "all.spec"
    base = await export_and_pack(tmp_path, config, spec, tmp_path / "unused.tar")
    exported = tmp_path / "exported.sqfs"
    assert await run_cli("pack", "-q", "-x", str(base), "-r", FQRN, "--mtime", MTIME,
                         "--squashfs-method", "stream", "-o", str(exported)) == 0  # fmt: skip
    streamed = tmp_path / "streamed.sqfs"
    assert await run_cli("pack", "-q", "-r", FQRN, "-f", str(config), "-t", str(spec),
                         "--mtime", MTIME, "-o", str(streamed)) == 0  # fmt: skip
    lines = listing(streamed)
    assert lines == listing(exported)
    assert any(line.endswith(f"/{FQRN}/big/large.bin") for line in lines)


async def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    both = ["pack", "-r", FQRN, "-x", str(tmp_path), "-f", "x.conf", "-t", str(spec), "-o", "o"]
    assert await run_cli(*both) == 2
    assert "not both" in capsys.readouterr().err
    assert await run_cli("pack", "-r", FQRN, "-t", str(spec), "-o", "o.tar") == 2
    assert await run_cli("pack", "-r", FQRN, "-f", str(tmp_path / "missing.conf"), "-t",
                         str(spec), "-o", "o.tar") == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err
    tree_method = ["--format", "squashfs", "--squashfs-method", "tree"]
    assert await run_cli("pack", "-r", FQRN, "-f", "x.conf", "-t", str(spec), *tree_method,
                         "-o", str(tmp_path / "o.sqfs")) == 2  # fmt: skip
    assert not list(tmp_path.glob("o.*"))


class RandomBytes:
    """Incompressible content, generated on demand (the publisher calls it once)."""

    def __init__(self, seed: int, size: int) -> None:
        self.seed, self.size = seed, size

    def __call__(self) -> bytes:
        return numpy.random.default_rng(self.seed).bytes(self.size)


@contextlib.asynccontextmanager
async def served(tmp: Path, public_key: Path) -> AsyncIterator[tuple[StaticServer, Path, Path]]:
    """Serve the repositories published below ``tmp/repo``: (server, config, ``/*`` spec)."""
    spec = tmp / "all.spec"
    spec.write_text("/*\n")
    async with StaticServer(tmp / "repo") as server:
        config = tmp / "client.conf"
        config.write_text(
            f"CVMFS_SERVER_URL={server.url}/cvmfs/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\n"
            f"CVMFS_PUBLIC_KEY={public_key}\nCVMFS_CACHE_BASE={tmp / 'cache'}\n"
        )
        yield server, config, spec


async def test_one_inode_per_content_and_metadata(tmp_path: Path) -> None:
    """Files the export would hard-link to one object: the later ones are hard links that
    carry the first one's mtime; other metadata (mode) makes a member of its own."""
    fqrn = "links.test.local"

    def file(name: str, mode: int, mtime: int) -> SourceNode:
        return SourceNode(name, "file", 0o100000 | mode, mtime, size=5000,
                          content=RandomBytes(3, 5000))  # fmt: skip

    tree = SourceNode("", "dir", 0o40755, 1_700_000_000, children=[
        file("a.txt", 0o644, 1_000_000_000),
        file("b.txt", 0o644, 1_000_000_200),
        file("c.txt", 0o600, 1_000_000_300),
        SourceNode("sub", "dir", 0o40755, 1_700_000_000, children=[
            file("d.txt", 0o644, 1_000_000_400),
        ]),
    ])  # fmt: skip
    publisher = Publisher(tmp_path / "repo", fqrn, PublishOptions(workers=1))
    public_key = (await asyncio.to_thread(publisher.publish, tree)).public_key
    output = tmp_path / "links.tar"
    async with served(tmp_path, public_key) as (server, config, spec):
        assert await run_cli("pack", "-q", "-r", fqrn, "-f", str(config), "-t", str(spec),
                             "-o", str(output)) == 0  # fmt: skip
        object_requests = sum(
            count
            for path, count in server.requests.items()
            if "/data/" in path and path[-1] in "0123456789abcdef"
        )
    with tarfile.open(output) as tar:
        members = {m.name[len(fqrn) + 1 :]: m for m in tar.getmembers()}
        first = members["a.txt"]
        assert first.isreg() and first.mtime == 1_000_000_000
        for name in ("b.txt", "sub/d.txt"):
            assert members[name].islnk() and members[name].linkname == f"{fqrn}/a.txt"
            assert members[name].mtime == 1_000_000_000
        other = members["c.txt"]
        assert other.isreg() and other.mode == 0o600 and other.mtime == 1_000_000_300
        content = RandomBytes(3, 5000)()
        for name in ("a.txt", "c.txt"):
            stream = tar.extractfile(members[name])
            assert stream is not None and stream.read() == content
    assert object_requests == 2  # a.txt and c.txt: the links need no content


async def test_hard_linked_members_carry_the_mtime_the_export_gives_their_inode(
    tmp_path: Path,
) -> None:
    """sub/d.txt and z.txt share one object but not their mtimes: the export gives the
    inode z.txt's (a directory's files come before its subdirectories in cvmfs_shrinkwrap's
    walk), while sub/d.txt comes first in the archive. The streamed tar carries the
    export's mtime and equals the tar of the export, byte for byte."""
    fqrn = "linktimes.test.local"

    def file(name: str, mtime: int) -> SourceNode:
        return SourceNode(name, "file", 0o100644, mtime, size=5000,
                          content=RandomBytes(5, 5000))  # fmt: skip

    tree = SourceNode("", "dir", 0o40755, 1_700_000_000, children=[
        SourceNode("sub", "dir", 0o40755, 1_700_000_000, children=[
            file("d.txt", 1_000_000_400),
        ]),
        file("z.txt", 1_000_000_900),
    ])  # fmt: skip
    publisher = Publisher(tmp_path / "repo", fqrn, PublishOptions(workers=1))
    public_key = (await asyncio.to_thread(publisher.publish, tree)).public_key
    streamed, exported = tmp_path / "streamed.tar", tmp_path / "exported.tar"
    async with served(tmp_path, public_key) as (_server, config, spec):
        source = ["-r", fqrn, "-f", str(config), "-t", str(spec)]
        assert await run_cli("pack", "-q", *source, "--mtime", MTIME, "-o", str(streamed)) == 0
        base = await export_and_pack(tmp_path, config, spec, exported, fqrn)
    assert (base / fqrn / "sub" / "d.txt").stat().st_mtime == 1_000_000_900
    with tarfile.open(streamed) as tar:
        members = {m.name[len(fqrn) + 1 :]: m for m in tar.getmembers()}
    assert members["sub/d.txt"].isreg() and members["z.txt"].islnk()
    assert members["sub/d.txt"].mtime == members["z.txt"].mtime == 1_000_000_900
    assert streamed.read_bytes() == exported.read_bytes()


BIG = 256 << 20

# Run apart, so that the test process never holds the big file: a child forked from a big
# process would report the parent's size as its own peak (ru_maxrss), here and elsewhere.
PUBLISH_BIG = """
import hashlib, sys
from pathlib import Path
import numpy
from shrinkwrap_async.testing.chunking import ChunkSizes
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, SourceNode
out, fqrn, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
data = numpy.random.default_rng(7).bytes(size)
tree = SourceNode("", "dir", 0o40755, 1_700_000_000, children=[
    SourceNode("big.bin", "file", 0o100644, 1_700_000_000, size=size, content=lambda: data),
    SourceNode("small.txt", "file", 0o100644, 1_700_000_000, size=6, content=lambda: b"small\\n"),
])
sizes = ChunkSizes(4 << 20, 8 << 20, 16 << 20)
options = PublishOptions(compress=False, workers=1, chunk_sizes=sizes)
result = Publisher(out, fqrn, options).publish(tree)
print(result.public_key, hashlib.sha1(data).hexdigest())
"""

# VmHWM, not ru_maxrss (see above).
MEASURED_CLI = """
import re, sys
from shrinkwrap_async import cli
code = cli.main(sys.argv[1:])
peak = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(f"peak_kib={peak}", file=sys.stderr)
sys.exit(code)
"""


async def test_large_chunked_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """A 256 MiB chunked file goes through a pack process whose peak RSS stays far below it."""
    fqrn = "big.test.local"
    publish = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PUBLISH_BIG, str(tmp_path / "repo"), fqrn, str(BIG),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    published, _ = await publish.communicate()
    assert publish.returncode == 0
    public_key, digest = published.decode().split()
    output = tmp_path / "big.tar"
    async with served(tmp_path, Path(public_key)) as (_, config, spec):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MEASURED_CLI, "pack", "-r", fqrn, "-f", str(config),
            "-t", str(spec), "-j", "8", "--prefetch-mib", "32", "-o", str(output),
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
    text = err.decode()
    assert process.returncode == 0, text
    peak_kib = int(text.rsplit("peak_kib=", 1)[1].split()[0])
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB while packing a {BIG} byte file"
    with tarfile.open(output) as tar:
        member = tar.getmember(f"{fqrn}/big.bin")
        assert member.size == BIG
        stream = tar.extractfile(member)
        assert stream is not None
        hasher = hashlib.sha1()
        while piece := stream.read(1 << 20):
            hasher.update(piece)
    assert hasher.hexdigest() == digest
