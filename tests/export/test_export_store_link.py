"""The .data store and the link stage on hand-made trees (pure local)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shrinkwrap_async.exitcodes import UnsafePathError
from shrinkwrap_async.hashing import Algorithm, Digest
from shrinkwrap_async.link.directory_spool import DirectorySpool
from shrinkwrap_async.link.tree_writer import (
    MARKER_NAME,
    TreeWriter,
    split_path,
    validate_name,
    validate_symlink_target,
)
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.object_names import (
    ObjectMeta,
    chunk_list_digest,
    meta_hash,
    object_name,
)


def test_meta_hash_matches_real_tool_values() -> None:
    assert meta_hash(0o644, 0, 0) == "ec39f54ab7a04aa0bdbb21582e4726e8"
    assert meta_hash(0o755, 0, 0) == "11c5b125467fe0202f9208b6f380d339"
    assert meta_hash(0o4755, 0, 0) == "11c5b125467fe0202f9208b6f380d339"  # suid ignored
    assert meta_hash(0, 0, 0) == "3449c9e5e332f1dbb81505cd739fbf3f"
    assert meta_hash(0o644, 0, 0, [("security.selinux", b"x")]) == meta_hash(0o644, 0, 0)
    assert meta_hash(0o644, 0, 0, [("user.foo", b"bar")]) != meta_hash(0o644, 0, 0)


def test_object_name_layout() -> None:
    digest = Digest.from_hex("e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78")
    assert (
        object_name(digest, meta_hash(0o644, 0, 0))
        == "e8/ec/3d88b62ebf526e4e5a4ff6162a3aa48a6b78.ec39f54ab7a04aa0bdbb21582e4726e8"
    )
    shake = Digest(Algorithm.SHAKE128, bytes(20))
    assert object_name(shake, "m").endswith("-shake128.m")
    chunks = [Digest(Algorithm.SHA1, b"\1" * 20), Digest(Algorithm.SHA1, b"\2" * 20)]
    chunked = chunk_list_digest(chunks)
    assert chunked == Algorithm.SHA1.hash(b"\1" * 20 + b"\2" * 20)


def test_store_commits_atomically_and_sweeps_stale_temps(tmp_path: Path) -> None:
    root = tmp_path / ".data"
    stale = root / ".tmp" / "999999999"
    stale.mkdir(parents=True)
    (stale / "half-written").write_bytes(b"partial")
    # Names no process has: beyond pid_t, not ASCII digits, 0 (os.kill(0, 0) would succeed)
    odd = [root / ".tmp" / name for name in ("99999999999", "\u00b2", "0")]
    for directory in odd:
        directory.mkdir()
        (directory / "temp").write_bytes(b"partial")
    store = DataStore(root, chown=os.geteuid() == 0)
    assert store.prepare() == 4
    assert not stale.exists() and not any(directory.exists() for directory in odd)
    assert not (root / "ab").exists()  # fan-out made lazily
    meta = ObjectMeta(0o640, os.geteuid(), os.getegid(), 1700000000, (("user.k", b"v"),))
    name = object_name(Algorithm.SHA1.hash(b"x"), meta.meta_hash)
    assert not store.exists(name)
    path = Path(store.write_object(name, b"hello", meta))
    assert store.exists(name) and path.read_bytes() == b"hello"
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and int(st.st_mtime) == 1700000000
    assert sorted(os.listdir(root)) == [".tmp", name[:2]]
    assert os.listdir(store.temp_dir) == []


def test_names_are_validated() -> None:
    for bad in ("", ".", "..", "a/b", "a\0b"):
        with pytest.raises(UnsafePathError):
            validate_name(bad)
    assert split_path("/a/b c/ü") == ("a", "b c", "ü")
    with pytest.raises(UnsafePathError):
        split_path("/a/../../etc")
    # what a Linux file system holds: names of 255 bytes, symlink targets of 4095
    for fits in ("n" * 255, "\u00e9" * 127, "\udcff" * 255):  # 254 bytes; 255 raw bytes
        assert validate_name(fits) == fits
    for too_long in ("n" * 256, "\u00e9" * 128):
        with pytest.raises(UnsafePathError, match="more than 255 bytes"):
            validate_name(too_long)
    assert validate_symlink_target(("l",), "t" * 4095) == "t" * 4095
    for bad_target in ("t" * 4096, "\u00e9" * 2048, "a\0b"):
        with pytest.raises(UnsafePathError, match="refusing symlink 'l'"):
            validate_symlink_target(("l",), bad_target)


def test_tree_writer_entries_and_type_changes(tmp_path: Path) -> None:
    store = DataStore(tmp_path / ".data", chown=False)
    store.prepare()
    meta = ObjectMeta(0o644, os.geteuid(), os.getegid(), 1700000000)
    obj = Path(
        store.write_object(object_name(Algorithm.SHA1.hash(b"a"), meta.meta_hash), b"a", meta)
    )
    tree = tmp_path / "repo"
    with TreeWriter(tree, chown=False) as writer:
        writer.write_marker()
        writer.make_directory(("d",))
        assert writer.link_object(("d", "f"), obj) == "linked"
        assert writer.link_object(("d", "f"), obj) == "unchanged"
        writer.make_symlink(("d", "l"), "../x", 1600000000)
        writer.make_special(("d", "fifo"), stat.S_IFIFO | 0o640, 0, 0, 0, 1600000000)
        # type changes: file -> dir, dir -> file, symlink retarget
        writer.make_directory(("d", "f"))
        writer.link_object(("d", "l"), obj)
        writer.make_symlink(("d", "f"), "elsewhere", 1600000000)
        writer.set_directory_metadata(("d",), 0o555, 0, 0, 1500000000)
        assert writer.prune((), {"d"}) == []
    assert (tree / MARKER_NAME).read_text() == MARKER_NAME
    assert os.readlink(tree / "d" / "f") == "elsewhere"
    assert os.stat(tree / "d" / "l").st_ino == obj.stat().st_ino
    assert stat.S_ISFIFO(os.lstat(tree / "d" / "fifo").st_mode)
    assert stat.S_IMODE(os.lstat(tree / "d" / "fifo").st_mode) == 0o640
    assert int(os.lstat(tree / "d" / "l").st_mtime) == 1700000000
    assert int(os.stat(tree / "d").st_mtime) == 1500000000


def test_tree_writer_never_writes_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "repo"
    with TreeWriter(tree, chown=False) as writer:
        writer.make_symlink(("evil",), str(outside), 0)
        with pytest.raises(UnsafePathError):
            writer.make_symlink(("evil", "planted"), "x", 0)
        with pytest.raises(UnsafePathError):
            writer.make_directory(("..",))
    assert os.listdir(outside) == []


def test_device_nodes_skipped_unprivileged(tmp_path: Path) -> None:
    warnings: list[str] = []
    with TreeWriter(tmp_path / "t", chown=False, privileged=False, warn=warnings.append) as w:
        assert not w.make_special(("null",), stat.S_IFCHR | 0o666, os.makedev(1, 3), 0, 0, 0)
    assert len(warnings) == 1 and "/null" in warnings[0]
    assert not (tmp_path / "t" / "null").exists()


def test_directory_spool_deepest_first(tmp_path: Path) -> None:
    spool = DirectorySpool(tmp_path)
    spool.add((), 0o755, 0, 0, 1)
    spool.add(("a", "b"), 0o700, 0, 0, 3)
    spool.add(("a",), 0o555, 0, 0, 2)
    assert [p for p, *_ in spool.deepest_first()] == [("a", "b"), ("a",), ()]
    spool.close()


def test_marker_kept_when_right_and_temps_of_a_killed_run_removed(tmp_path: Path) -> None:
    """Every run writes the marker first: one that already holds its name is left alone (a
    kill between the temp and its rename would leave the temp), and the tree's one writer
    removes temp names a killed run left at the root."""
    tree = tmp_path / "repo"
    stale = ".shrinkwrap-async.0123456789abcdef0123456789abcdef.tmp"
    with TreeWriter(tree, chown=False) as writer:
        writer.make_directory(())
        writer.write_marker()
        inode = os.stat(tree / MARKER_NAME).st_ino
        writer.write_marker()
        assert os.stat(tree / MARKER_NAME).st_ino == inode  # not rewritten
        (tree / MARKER_NAME).write_text("something else")
        writer.write_marker()
        assert (tree / MARKER_NAME).read_text() == MARKER_NAME
        (tree / stale).write_text("half")
        (tree / "keep.tmp").write_text("not ours")
        assert writer.remove_temps() == [stale]
    assert sorted(os.listdir(tree)) == [MARKER_NAME, "keep.tmp"]
