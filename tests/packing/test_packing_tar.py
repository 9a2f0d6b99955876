"""The tar packer: unpack with tarfile and GNU tar and compare with the tree, reproducibility,
compression, and the streaming API."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _packtree import BAD_UTF8, FQRN, IS_ROOT, LONG_NAME, MTIME, assert_same_tree, pack

from shrinkwrap_async.cli import main
from shrinkwrap_async.packing.entries import (
    MARKER_NAME,
    EntryKind,
    PackEntry,
    entries_from_tree,
    export_timestamp,
)
from shrinkwrap_async.packing.linkindex import HardLinkIndex
from shrinkwrap_async.packing.tar import BLOCK, RECORD, TarWriter, write_tar

needs_gnu_tar = pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar not installed")


def test_walk_order_is_sorted_depth_first(export: Path) -> None:
    paths = [entry.path for entry in entries_from_tree(export, FQRN)]
    assert paths[0] == ""
    assert len(paths) == len(set(paths))
    # A parent comes right before its sorted children, each subtree complete.
    assert paths.index("bin") < paths.index("bin/setuid_like") < paths.index("bin/tool")
    top = [p for p in paths if p and "/" not in p]
    assert top == sorted(top, key=os.fsencode)
    deep = [p for p in paths if p.startswith("deep/")]
    assert deep == sorted(deep, key=os.fsencode)
    assert not any(p.startswith(".data") for p in paths)


def test_gnu_tar_restores_the_tree(export: Path, tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar not installed")
    archive = tmp_path / "a.tar"
    pack(export, archive)
    out = tmp_path / "gnu"
    out.mkdir()
    args = ["tar", "--xattrs", "--xattrs-include=user.*", "--numeric-owner", "-xpf"]
    subprocess.run([*args, str(archive), "-C", str(out)], check=True, capture_output=True)
    assert sorted(os.listdir(out)) == [FQRN]
    assert_same_tree(export / FQRN, out / FQRN, xattrs=True, symlink_mtimes=True)


def test_python_tarfile_restores_the_tree(export: Path, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    pack(export, archive)
    out = tmp_path / "py"
    with tarfile.open(archive) as tar:
        tar.extractall(out, numeric_owner=True, filter="fully_trusted")
    # tarfile neither restores xattrs nor symlink times.
    assert_same_tree(export / FQRN, out / FQRN, xattrs=False, symlink_mtimes=False)


def test_members_headers_and_links(export: Path, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    pack(export, archive)
    data = archive.read_bytes()
    assert len(data) % RECORD == 0
    assert data[-2 * BLOCK :] == b"\0" * (2 * BLOCK)
    assert data[257:265] == b"ustar\x0000"  # POSIX ustar magic, not the GNU one
    assert b"atime=" not in data and b"ctime=" not in data
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert all(n == FQRN or n.startswith(f"{FQRN}/") for n in members)
        assert all(m.uname == "" and m.gname == "" for m in members.values())
        assert members[f"{FQRN}/{MARKER_NAME}"].size == 48
        # Hard-link groups: the first member in order carries the data.
        copies = [members[f"{FQRN}/dups/{n}"] for n in ("copy1.txt", "copy2.txt", "sub/copy3.txt")]
        assert copies[0].isreg() and copies[0].size == len(b"same content\n")
        assert all(m.islnk() and m.linkname == f"{FQRN}/dups/copy1.txt" for m in copies[1:])
        assert members[f"{FQRN}/hard/a"].isreg()
        assert members[f"{FQRN}/hard/c"].linkname == f"{FQRN}/hard/a"
        assert members[f"{FQRN}/links/dangling"].issym()
        assert members[f"{FQRN}/links/dangling"].linkname == "does/not/exist"
        assert members[f"{FQRN}/links/long_target"].linkname.startswith("/xxx")
        assert members[f"{FQRN}/special/fifo"].isfifo()
        assert members[f"{FQRN}/special/fifo"].mode == 0o640
        assert members[f"{FQRN}/modes/m0000"].mode == 0
        assert members[f"{FQRN}/sticky_dir"].mode == 0o1777
        assert members[f"{FQRN}/bin/setuid_like"].mode == 0o4755
        assert members[f"{FQRN}/weird/{LONG_NAME}"].isreg()
        assert f"{FQRN}/ünïcødé/日本語.txt" in members
        assert os.fsencode(f"{FQRN}/") + BAD_UTF8 in {os.fsencode(n) for n in members}
        assert members[f"{FQRN}/README.txt"].mtime == MTIME + 86_400
        xattr_member = members[f"{FQRN}/xattr/file_with_xattr"]
        if os.listxattr(export / FQRN / "xattr/file_with_xattr"):
            headers = xattr_member.pax_headers
            assert headers["SCHILY.xattr.user.foo"] == "bar"
            assert headers["SCHILY.xattr.user.binary"].encode() == bytes(range(40))
            assert not any(k in headers for k in ("atime", "ctime"))
        if IS_ROOT:
            assert members[f"{FQRN}/special/null_device"].ischr()
            assert (members[f"{FQRN}/special/null_device"].devmajor,
                    members[f"{FQRN}/special/null_device"].devminor) == (1, 3)  # fmt: skip
            assert (members[f"{FQRN}/owned_by_1234.txt"].uid,
                    members[f"{FQRN}/owned_by_1234.txt"].gid) == (1234, 5678)  # fmt: skip


def test_reproducible_bytes_and_fixed_times(export: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    pack(export, first, "--mtime", str(MTIME))
    os.utime(export / FQRN, (MTIME + 5000, MTIME + 5000))  # a later run touches the root
    os.utime(export / FQRN / MARKER_NAME, (MTIME + 5000, MTIME + 5000))
    pack(export, second, "--mtime", str(MTIME))
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        assert tar.getmember(FQRN).mtime == MTIME
        assert tar.getmember(f"{FQRN}/{MARKER_NAME}").mtime == MTIME


def test_time_from_provenance(export: Path, tmp_path: Path) -> None:
    assert export_timestamp(export, FQRN) is None
    (export / ".provenance" / FQRN / "revision.json").write_text('{"timestamp": 1700000123}')
    assert export_timestamp(export, FQRN) == 1700000123
    archive = tmp_path / "a.tar"
    pack(export, archive)
    with tarfile.open(archive) as tar:
        assert tar.getmember(FQRN).mtime == 1700000123


@pytest.mark.parametrize(
    ("name", "extra", "magic"),
    [
        ("a.tar.gz", (), b"\x1f\x8b"),
        ("a.tar.zst", (), b"\x28\xb5\x2f\xfd"),
        ("a.bin", ("--compress", "zstd"), b"\x28\xb5\x2f\xfd"),
        ("a.tar", ("--compress", "gzip"), b"\x1f\x8b"),
    ],
)
def test_compressed_round_trip(
    export: Path, tmp_path: Path, name: str, extra: tuple[str, ...], magic: bytes
) -> None:
    plain = tmp_path / "plain.tar"
    pack(export, plain, "--mtime", str(MTIME))
    packed = tmp_path / name
    pack(export, packed, "--mtime", str(MTIME), *extra)
    again = tmp_path / ("again-" + name)
    pack(export, again, "--mtime", str(MTIME), *extra)
    data = packed.read_bytes()
    assert data.startswith(magic)
    assert data == again.read_bytes()
    if magic == b"\x1f\x8b":
        assert data[4:8] == b"\0\0\0\0"  # gzip mtime 0
        assert gzip.decompress(data) == plain.read_bytes()
    else:
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            assert reader.read() == plain.read_bytes()


@needs_gnu_tar
def test_stdout_stream(export: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        ["shrinkwrap-async", "pack", "-x", str(export), "-r", FQRN, "-o", "-", "--mtime", "1"],
        capture_output=True,
        check=True,
    )
    file_copy = tmp_path / "f.tar"
    pack(export, file_copy, "--mtime", "1")
    assert result.stdout == file_copy.read_bytes()


def test_errors(export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["pack", "-x", str(export), "-r"]
    assert main([*base, "missing.example.org", "-o", str(tmp_path / "x.tar")]) == 2
    assert "no export of missing.example.org" in capsys.readouterr().err
    assert main([*base, FQRN, "-o", "-", "--format", "squashfs"]) == 2
    assert main([*base, FQRN, "-o", str(tmp_path / "x.sqfs"), "--compress", "gzip"]) == 2
    assert not list(tmp_path.glob(".x.*"))  # no temporary file left behind
    capsys.readouterr()
    # An output that cannot be written is refused before anything is read: exit 5.
    assert main([*base, FQRN, "-o", str(tmp_path / "no-such-dir" / "x.tar")]) == 5
    assert f"directory {tmp_path / 'no-such-dir'} does not exist" in capsys.readouterr().err
    assert main([*base, FQRN, "-o", str(tmp_path)]) == 5
    assert f"cannot write {tmp_path}: it is a directory" in capsys.readouterr().err


async def test_async_producer_feeds_the_writer() -> None:
    """The pipeline can feed entries without a tree: content comes from an opener."""

    async def produce() -> AsyncIterator[PackEntry]:
        yield PackEntry("", EntryKind.DIRECTORY, 0o755, 0, 0, 10)
        for name in ("a", "b"):
            await asyncio.sleep(0)
            yield PackEntry(
                name, EntryKind.REGULAR, 0o644, 7, 8, 20, size=5, hardlink_key="obj",
                open_content=lambda: io.BytesIO(b"hello"), xattrs=(("user.k", b"v"),),
            )  # fmt: skip
        yield PackEntry("dev", EntryKind.BLOCK_DEVICE, 0o600, 0, 0, 30, rdev=(8, 1))

    sink = io.BytesIO()
    writer = TarWriter(sink, "repo.example")
    await writer.write_all_async(produce())
    writer.close()
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "repo.example", "repo.example/a", "repo.example/b", "repo.example/dev",
        ]  # fmt: skip
        assert tar.extractfile(members[1]).read() == b"hello"  # type: ignore[union-attr]
        assert members[2].islnk() and members[2].linkname == "repo.example/a"
        assert members[1].pax_headers["SCHILY.xattr.user.k"] == "v"
        assert members[3].isblk() and (members[3].devmajor, members[3].devminor) == (8, 1)


def test_large_numbers_go_to_pax_records() -> None:
    sink = io.BytesIO()
    entry = PackEntry("f", EntryKind.REGULAR, 0o644, 2**31, 3, -5, size=0)
    write_tar([entry, PackEntry("g", EntryKind.REGULAR, 0o644, 1, 1, 2**40)], sink, "r")
    sink.seek(0)
    with tarfile.open(fileobj=sink) as tar:
        f, g = tar.getmembers()
        assert f.uid == 2**31 and f.mtime == -5
        assert g.mtime == 2**40


def test_content_that_changes_size_is_an_error() -> None:
    entry = PackEntry(
        "f", EntryKind.REGULAR, 0o644, 0, 0, 0, size=10, open_content=lambda: io.BytesIO(b"short")
    )
    with pytest.raises(Exception, match="changed size"):
        write_tar([entry], io.BytesIO(), "r")


def test_hardlink_index_spills_to_disk() -> None:
    index = HardLinkIndex(memory_limit=3)
    for i in range(10):
        assert index.first_path(("dev", i), f"p{i}") is None
    for i in range(10):
        assert index.first_path(("dev", i), "other") == f"p{i}"
    index.close()


def test_default_time_is_the_newest_in_the_tree(export: Path, tmp_path: Path) -> None:
    """Without --mtime, two exports of one revision (different run times) pack the same."""
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    pack(export, first)
    os.utime(export / FQRN / MARKER_NAME, (MTIME + 9999, MTIME + 9999))
    os.utime(export / FQRN, (MTIME + 9999, MTIME + 9999))
    pack(export, second)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        assert tar.getmember(FQRN).mtime == MTIME + 86_400  # README.txt is the newest
