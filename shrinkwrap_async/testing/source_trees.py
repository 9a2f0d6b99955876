"""Source trees for tests: the fixtures' layout with every entry kind, and revision changes.

:func:`build_source_tree` writes a tree like the real-tool fixtures' revision A (plain,
empty, executable, suid files; odd modes and owners; non-ASCII and space names; symlinks
including ``$(VAR)`` variant symlinks; hard-link groups; xattrs; chunkable big files; a
FIFO and a device node; nested catalogs). :func:`modify_for_next_revision` applies
changes in the spirit of the fixtures' revision B. Owners and the device node need root;
without it they are skipped (see :data:`CAN_CHOWN`).
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

MTIME = 1_700_000_000
CHANGED_MTIME = 1_700_086_400
CAN_CHOWN = os.geteuid() == 0

NESTED_CATALOGS = ("/sw", "/sw/v1", "/sw/v2/nested/deeper", "/data", "/empty_catalog")


def _write(root: Path, relative: str, data: bytes | str, mode: int = 0o644) -> Path:
    path = root / relative.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def _big_content(size: int, seed: int) -> bytes:
    """Mixed text, random and repeated blocks, so that chunk cut marks occur."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.randrange(3)
        length = rng.randrange(20_000, 200_000)
        if kind == 0:
            block = rng.randbytes(length)
        elif kind == 1:
            block = (b"line of text %d\n" % rng.randrange(10**6)) * (length // 20)
        else:
            block = b"Z" * length
        parts.append(block)
        total += len(block)
    return b"".join(parts)[:size]


def build_source_tree(
    root: Path,
    fqrn: str,
    *,
    chunk_min: int = 256 << 10,
    large_size: int = 3_300_000,
    zeros_size: int = 5 << 19,
    special: bool = True,
) -> Path:
    """Write the fixture-like tree into ``root`` (created) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    _write(root, "README.txt", "A test repository.\n")
    _write(root, "etc/conf.ini", "[main]\nkey = value\n")
    _write(root, "readonly.txt", "read only\n", 0o444)
    _write(root, "empty_file", b"")
    (root / "empty_dir").mkdir(exist_ok=True)
    _write(root, "bin/run.sh", "#!/bin/sh\necho run\n", 0o755)
    _write(root, "bin/tool", bytes(range(256)) * 40, 0o755)
    _write(root, "bin/setuid_like", "same data\n", 0o4755)
    _write(root, "bin/setgid_sticky", "same data\n", 0o2755)
    (root / "sticky_dir").mkdir(exist_ok=True)
    (root / "sticky_dir").chmod(0o1777)
    _write(root, "private/secret.txt", "secret\n", 0o600)
    (root / "private").chmod(0o700)
    owned = _write(root, "owned_by_1234.txt", "owned by 1234\n")
    if CAN_CHOWN:
        os.chown(root / "private" / "secret.txt", 1000, 1000)
        os.chown(root / "private", 1000, 1000)
        os.chown(owned, 1234, 5678)
    for mode in (0o000, 0o777, 0o751):
        _write(root, f"modes/m{mode:04o}", f"mode {mode:o}\n", mode)
    _write(root, "modes/ro_dir/inside.txt", "inside a read-only dir\n")
    _write(root, "dir with space/file with space.txt", "spaces\n")
    _write(root, "ünïcødé/日本語.txt", "nihongo\n")
    _write(root, "ünïcødé/naïve café.txt", "cafe\n")
    _write(root, "weird/semi;colon&amp'quote\".txt", "weird\n")
    _write(root, "weird/-leading-dash", "dash\n")
    _write(root, "weird/.hidden", "hidden\n")
    _write(root, "weird/" + "L" * 200, "long name\n")
    links = root / "links"
    links.mkdir(exist_ok=True)
    for name, target in (
        ("rel", "../README.txt"),
        ("abs", f"/cvmfs/{fqrn}/README.txt"),
        ("dangling", "does/not/exist"),
        ("dirlink", "../bin"),
        ("escape", "../../../../../../etc/passwd"),
        ("varsym", "/opt/$(SOME_VAR)/lib"),
        ("vardefault", "$(CVMFS_ARCH:-x86_64)/lib"),
        ("var_from_config", "$(CVMFS_REPOSITORY_NAME:-unset)/lib"),
        ("fqrnsym", "/cvmfs/@fqrn@/bin"),
    ):
        os.symlink(target, links / name)
    hard = _write(root, "hard/a", "hard link group\n")
    for name in ("b", "c"):
        os.link(hard, root / "hard" / name)
    pair = _write(root, "hard/pair1", "pair of links\n", 0o755)
    os.link(pair, root / "hard" / "pair2")
    xdir = _write(root, "xdir/one/f", "cross directory\n")
    (root / "xdir" / "two").mkdir()
    os.link(xdir, root / "xdir" / "two" / "f")
    for name in ("dups/copy1.txt", "dups/copy2.txt", "dups/sub/copy3.txt"):
        _write(root, name, "duplicate content\n" * 100)
    _write(root, "big/large.bin", _big_content(large_size, 1))
    _write(root, "big/zeros.bin", bytes(zeros_size))
    for suffix, size in (("minus1", chunk_min - 1), ("exact", chunk_min), ("plus1", chunk_min + 1)):
        _write(root, f"big/threshold_{suffix}.bin", b"T" * size)
    deep = "deep/" + "/".join(f"d{i}" for i in range(1, 26))
    _write(root, f"{deep}/leaf.txt", "deep leaf\n")
    _write(root, "sw/README", "software area\n")
    _write(root, "sw/v1/lib/libfoo.so", b"\x7fELF" + bytes(2000))
    _write(root, "sw/v1/include/foo.h", "int foo(void);\n")
    os.symlink("libfoo.so", root / "sw/v1/lib/libfoo.so.1")
    _write(root, "sw/v2/nested/deeper/leaf.txt", "third level\n")
    for index in range(100):
        _write(root, f"data/set{index % 5}/file{index:04d}.txt", f"data {index}\n" * (index + 1))
    (root / "empty_catalog").mkdir(exist_ok=True)
    for mountpoint in NESTED_CATALOGS:
        _write(root, f"{mountpoint}/.cvmfscatalog", b"")
    xattr_file = _write(root, "xattr/file_with_xattr", "has xattrs\n")
    (root / "xattr" / "dir_with_xattr").mkdir()
    os.setxattr(xattr_file, "user.foo", b"bar")
    os.setxattr(xattr_file, "user.binary", bytes(range(40)))
    os.setxattr(root / "xattr" / "dir_with_xattr", "user.dirattr", b"on a directory")
    _write(root, "typechange/file_becomes_dir", "file\n")
    _write(root, "typechange/dir_becomes_file/inner.txt", "inner\n")
    os.symlink("target_a", root / "typechange" / "symlink_retarget")
    if special:
        _write(root, "special/regular.txt", "regular\n")
        os.mkfifo(root / "special" / "fifo", 0o640)
        (root / "special" / "fifo").chmod(0o640)
        if CAN_CHOWN:
            os.mknod(root / "special" / "null_device", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            (root / "special" / "null_device").chmod(0o666)
    set_mtimes(root, MTIME)
    return root


def set_mtimes(root: Path, mtime: int) -> None:
    """Give every entry (without following symlinks) the same mtime."""
    for directory, names, files in os.walk(root, topdown=False):
        for name in [*names, *files]:
            os.utime(os.path.join(directory, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def touch(path: Path, mtime: int = CHANGED_MTIME) -> None:
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def modify_for_next_revision(root: Path) -> None:
    """Changes like the fixtures' revision B; ``/empty_catalog`` and ``/sw/v1`` untouched.

    README rewritten, ``etc/conf.ini`` deleted, ``/sw/v2`` (with its nested catalog)
    deleted, ``/new`` added as a nested catalog, ``/data/set0/file0000.txt`` rewritten,
    ``bin/run.sh`` chmod 0700, the middle of ``big/large.bin`` overwritten, a symlink
    retargeted, ``hard/c`` removed, an xattr changed.
    """
    import shutil

    _write(root, "README.txt", "A test repository, revision B.\n")
    touch(root / "README.txt")
    (root / "etc" / "conf.ini").unlink()
    touch(root / "etc")
    shutil.rmtree(root / "sw" / "v2")
    touch(root / "sw")
    _write(root, "new/added.txt", "added in B\n")
    _write(root, "new/.cvmfscatalog", b"")
    for index in range(12):
        _write(root, f"new/many/f{index:03d}", f"{index}\n")
    set_mtimes(root / "new", CHANGED_MTIME)
    _write(root, "data/set0/file0000.txt", "rewritten\n")
    touch(root / "data" / "set0" / "file0000.txt")
    (root / "bin" / "run.sh").chmod(0o700)
    large = root / "big" / "large.bin"
    data = bytearray(large.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16384] = random.Random(2).randbytes(16384)
    large.write_bytes(bytes(data))
    touch(large)
    link = root / "typechange" / "symlink_retarget"
    link.unlink()
    os.symlink("target_b_changed", link)
    touch(link)
    (root / "hard" / "c").unlink()
    os.setxattr(root / "xattr" / "file_with_xattr", "user.foo", b"bar2")
    for directory in ("hard", "typechange", "big", "bin", "xattr"):
        touch(root / directory)
    touch(root)
