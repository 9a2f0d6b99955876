"""Hostile but correctly signed repositories: refused with one clear line, nothing outside."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from shrinkwrap_async.catalogs.schema import Flag
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.store.object_names import meta_hash, object_name, serialize_xattrs
from shrinkwrap_async.testing import catalog_writer as cw
from shrinkwrap_async.testing import hostile as hp
from shrinkwrap_async.testing.nginx import NginxServer

from . import harness as h

Build = Callable[[hp.HostilePublisher, h.Workspace], None]


def _content(pub: hp.HostilePublisher, text: str) -> tuple[Digest, int]:
    data = text.encode()
    return pub.store_content(data), len(data)


def unsafe_name(name: str) -> Build:
    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        digest, size = _content(pub, "pwned\n")
        pub.extra_rows[""] = [hp.file_row("/d", name, digest, size)]

    return build


def symlink_then_directory(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
    """/x is a symlink to the sentinel AND a directory (same name) with /x/pwned below."""
    digest, size = _content(pub, "pwned\n")
    pub.extra_rows[""] = [
        hp.symlink_row("", "x", str(ws.sentinel)),
        hp.dir_row("", "x", path="/x-as-directory"),
        hp.file_row("/x", "pwned", digest, size),
    ]


def nested_mount_named_like_symlink(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
    """In the nested catalog /n, a symlink /n/sub → sentinel; the root catalog lists a
    directory /n/sub with a file below it (a directory of one catalog, a symlink of another)."""
    digest, size = _content(pub, "pwned\n")
    pub.extra_rows["/n"] = [hp.symlink_row("/n", "sub", str(ws.sentinel))]
    pub.extra_rows[""] = [
        hp.dir_row("/n", "sub"),
        hp.file_row("/n/sub", "pwned", digest, size),
    ]


def two_files_of_one_name(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
    """/d lists ok.txt twice: the real one and a second row (another md5path)."""
    digest, size = _content(pub, "pwned\n")
    pub.extra_rows[""] = [hp.file_row("/d", "ok.txt", digest, size, path="/d/ok-2")]


def absurd_size(size: int) -> Build:
    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        digest, _ = _content(pub, "small\n")
        pub.extra_rows[""] = [hp.file_row("/d", "huge", digest, size)]

    return build


def decompression_bomb(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
    digest = pub.store_blob(hp.bomb_blob(1 << 30))
    pub.extra_rows[""] = [hp.file_row("/d", "bomb", digest, 100)]


def catalog_not_sqlite(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
    raw = b"this is not an SQLite database\n" * 200
    pub.catalog_blobs["/n"] = (zlib.compress(raw), len(raw))


def catalog_bomb(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
    pub.catalog_blobs["/n"] = (hp.bomb_blob(1 << 30), 40960)


def column_of_another_type(column: str, value: object) -> Build:
    """/d/odd with ``value`` in ``column``: SQLite keeps the type a value was written with
    (TEXT or REAL in an INTEGER column, an INTEGER in a BLOB one), whatever the declared one."""

    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        digest, size = _content(pub, "odd\n")
        pub.extra_rows[""] = [hp.file_row("/d", "odd", digest, size)]
        update = f"UPDATE catalog SET {column} = ? WHERE name = 'odd'"
        pub.catalog_sql[""] = [(update, (value,))]

    return build


def symlink_to(target: str) -> Build:
    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        pub.extra_rows[""] = [hp.symlink_row("/d", "link", target)]

    return build


CASES: dict[str, tuple[Build, int, str]] = {
    # name: (builder, expected exit code, path that must not exist in the tree)
    "name with slash": (unsafe_name("a/b"), 3, "d/a"),
    "name ..": (unsafe_name(".."), 3, ""),
    "name climbing out": (unsafe_name("../../../sentinel/pwned"), 3, ""),
    "name with NUL": (unsafe_name("a\0b"), 3, "d/a"),
    "empty name": (unsafe_name(""), 3, ""),
    "symlink and directory of one name": (symlink_then_directory, 3, ""),
    "two files of one name": (two_files_of_one_name, 3, ""),
    # The nested catalog owns /n: root-catalog rows below it are not part of the tree.
    "symlink in one catalog, directory in another": (nested_mount_named_like_symlink, 0, ""),
    "absurd size 2**62": (absurd_size(1 << 62), 1, "d/huge"),
    "negative size": (absurd_size(-1), 1, "d/huge"),
    "decompression bomb (1 GiB, declared 100 B)": (decompression_bomb, 1, "d/bomb"),
    "nested catalog not SQLite": (catalog_not_sqlite, 3, "n/inner.txt"),
    "nested catalog bomb (1 GiB, declared 40 KiB)": (catalog_bomb, 3, "n/inner.txt"),
    "name of 300 bytes": (unsafe_name("n" * 300), 3, ""),
    "symlink target with NUL": (symlink_to("/etc\0passwd"), 3, "d/link"),
    "symlink target of 5000 bytes": (symlink_to("t" * 5000), 3, "d/link"),
    "uid 2**40": (column_of_another_type("uid", 1 << 40), 3, "d/odd"),
    "gid -5": (column_of_another_type("gid", -5), 3, "d/odd"),
    "mtime 2**62": (column_of_another_type("mtime", 1 << 62), 0, ""),
    "mtime -2**62": (column_of_another_type("mtime", -(1 << 62)), 0, ""),
    "mode as text": (column_of_another_type("mode", "rw-r--r--"), 3, "d/odd"),
    "flags as text": (column_of_another_type("flags", "file"), 3, "d/odd"),
    "size as text": (column_of_another_type("size", "big"), 3, "d/odd"),
    "mtime as real": (column_of_another_type("mtime", 1.5), 3, "d/odd"),
    "uid as text": (column_of_another_type("uid", "root"), 3, "d/odd"),
    "hardlinks as text": (column_of_another_type("hardlinks", "two"), 3, "d/odd"),
    "hash as text": (column_of_another_type("hash", "x" * 20), 3, "d/odd"),
    "xattr as an integer": (column_of_another_type("xattr", 5), 3, "d/odd"),
}


def run_case(name: str, tmp_path: Path, nginx: NginxServer) -> tuple[h.RunResult, h.Workspace, str]:
    build, _, _ = CASES[name]
    fqrn = f"case{list(CASES).index(name)}.hostile.local"
    out = tmp_path / "out"
    ws = h.Workspace(tmp_path / "ws", out / "keys")
    publisher = hp.HostilePublisher(out, fqrn)
    publisher.prepare_directories()  # objects can be stored before publish()
    build(publisher, ws)
    publisher.publish(hp.base_source(tmp_path / "source"))
    link = nginx.docroot / "cvmfs" / fqrn
    if link.is_symlink():
        link.unlink()
    link.symlink_to(out / "cvmfs" / fqrn)
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[nginx.repository_url("@fqrn@")],
        keys_dir=out / "keys",
        cache=ws.cache,
    )
    run = h.run_export(h.export_command(fqrn, config, ws.dest, jobs=8), timeout=120)
    return run, ws, fqrn


def run_one_test_case(
    name: str, build: Build, tmp_path: Path, nginx: NginxServer
) -> tuple[h.RunResult, h.Workspace, str]:
    """:func:`run_case` for a case that one test builds (not one of ``CASES``)."""
    CASES[name] = (build, 0, "")
    try:
        return run_case(name, tmp_path, nginx)
    finally:
        del CASES[name]


def outside_untouched(ws: h.Workspace) -> bool:
    allowed = {"dest", "sentinel", "cache", "client.conf"}
    names = {n for n in os.listdir(ws.root) if not n.startswith(".spec-")}
    return ws.sentinel_untouched() and names <= allowed


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_repository_refused(case: str, tmp_path: Path, nginx: NginxServer) -> None:
    _, expected, must_not_exist = CASES[case]
    run, ws, fqrn = run_case(case, tmp_path, nginx)
    assert outside_untouched(ws), "something was written outside <dest-base>"
    assert run.returncode == expected, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    if expected:
        errors = [line for line in run.stderr.splitlines() if "error" in line.lower()]
        assert errors and all(len(line) < 400 for line in errors), run.describe()
    if must_not_exist:
        assert not os.path.lexists(ws.dest / fqrn / must_not_exist)
    assert run.peak_rss_kib < 512 * 1024, f"peak RSS {run.peak_rss_kib} KiB"


PACK_REFUSES = (
    "name climbing out",
    "name with NUL",
    "two files of one name",
    "symlink target with NUL",
    "symlink target of 5000 bytes",
    "uid 2**40",
)


@pytest.mark.parametrize("case", PACK_REFUSES)
def test_packing_from_the_repository_refuses_as_the_export(
    case: str, tmp_path: Path, nginx: NginxServer
) -> None:
    """A tarball streamed from the repository is refused for what the export refuses (a
    member climbing out or one no file system holds), and no output is left behind."""
    _, expected, _ = CASES[case]
    _, ws, fqrn = run_case(case, tmp_path, nginx)
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    archive = tmp_path / "packed.tar"
    pack = [sys.executable, "-m", "shrinkwrap_async", "pack", "-r", fqrn, "-o", str(archive)]
    packed = h.run_export([*pack, "-f", str(ws.root / "client.conf"), "-t", str(spec)], timeout=120)
    assert packed.returncode == expected == 3, packed.describe()
    assert "Traceback" not in packed.stderr, packed.describe()
    assert "refusing" in packed.stderr or "owner beyond 32 bits" in packed.stderr
    assert not archive.exists() and os.listdir(tmp_path).count("packed.tar") == 0
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".packed.tar")]


REFRESH_REFUSES = (
    "two files of one name",
    "name climbing out",
    "symlink target with NUL",
    "uid 2**40",
)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text() if path.is_file() else "/"
        for path in root.rglob("*")
    }


@pytest.mark.parametrize("case", REFRESH_REFUSES)
def test_a_hostile_revision_is_refused_by_a_refresh(
    case: str, tmp_path: Path, nginx: NginxServer
) -> None:
    """Revision 1 exported, revision 2 (a new file in /d and in /n, and the hostile rows)
    refreshed onto it by the catalog diff, which sees only the changed rows: refused as a
    fresh export refuses it, the tree and its record left at revision 1; a good revision 3
    then refreshes to the same tree as a fresh export of it, and verifies."""
    build, expected, _ = CASES[case]
    fqrn = f"refresh{REFRESH_REFUSES.index(case)}.hostile.local"
    out = tmp_path / "out"
    ws = h.Workspace(tmp_path / "ws", out / "keys")
    publisher = hp.HostilePublisher(out, fqrn)
    publisher.prepare_directories()
    source = hp.base_source(tmp_path / "source")
    publisher.publish(source)
    (nginx.docroot / "cvmfs" / fqrn).symlink_to(out / "cvmfs" / fqrn)
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[nginx.repository_url("@fqrn@")],
        keys_dir=out / "keys",
        cache=ws.cache,
    )
    export = h.export_command(fqrn, config, ws.dest, jobs=8)
    first = h.run_export(export, timeout=120)
    assert first.returncode == 0, first.describe()
    tree = ws.dest / fqrn
    record = ws.dest / ".provenance" / fqrn / "export.json"
    tree_1, record_1 = _tree(tree), record.read_bytes()

    (source / "d" / "new.txt").write_text("new in 2\n")
    (source / "n" / "inner2.txt").write_text("inner 2\n")
    build(publisher, ws)
    publisher.publish(source)
    refused = h.run_export(export, timeout=120)
    assert refused.returncode == expected == 3, refused.describe()
    assert "Traceback" not in refused.stderr, refused.describe()
    assert outside_untouched(ws)
    assert _tree(tree) == tree_1 and record.read_bytes() == record_1

    publisher.extra_rows.clear()
    publisher.catalog_sql.clear()
    (source / "d" / "third.txt").write_text("3\n")
    publisher.publish(source)
    mended = h.run_export(export, timeout=120)
    assert mended.returncode == 0, mended.describe()
    fresh = h.run_export(h.export_command(fqrn, config, tmp_path / "fresh", jobs=8), timeout=120)
    assert fresh.returncode == 0, fresh.describe()
    assert _tree(tree) == _tree(tmp_path / "fresh" / fqrn)
    assert _tree(tree)["d/ok.txt"] == "fine\n"
    verify = [sys.executable, "-m", "shrinkwrap_async", "verify", "-r", fqrn, "-x", str(ws.dest)]
    verified = h.run_export(verify, timeout=120)
    assert verified.returncode == 0, verified.describe()


def test_hard_link_group_spanning_catalogs(tmp_path: Path, nginx: NginxServer) -> None:
    """Group 1 in the root catalog and group 1 in /n: different files, never one inode."""

    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        one, size_one = _content(pub, "first member\n")
        two, size_two = _content(pub, "second member, other content\n")
        packed = cw.pack_hardlinks(1, 2)
        pub.extra_rows[""] = [hp.file_row("/d", "h1", one, size_one, hardlinks=packed)]
        pub.extra_rows["/n"] = [hp.file_row("/n", "h2", two, size_two, hardlinks=packed)]

    run, ws, fqrn = run_one_test_case("hard-link group across catalogs", build, tmp_path, nginx)
    assert outside_untouched(ws)
    assert run.returncode == 0, run.describe()
    tree = ws.dest / fqrn
    assert (tree / "d" / "h1").read_text() == "first member\n"
    assert (tree / "n" / "h2").read_text() == "second member, other content\n"
    assert os.stat(tree / "d" / "h1").st_ino != os.stat(tree / "n" / "h2").st_ino


def test_a_chain_of_1500_directories_is_exported_and_pruned(
    tmp_path: Path, nginx: NginxServer
) -> None:
    """/d/x/x/.../x/bottom.txt, 1,500 levels (a path of about 3,000 bytes, which the CVMFS
    client serves): exported, verified, packed (from the tree and from the repository), then
    removed by the next revision. Export, verify and removal walked the tree by recursion
    before and ended in a RecursionError traceback."""
    depth = 1500

    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        digest, size = _content(pub, "bottom\n")
        rows, parent = [], "/d"
        for _ in range(depth):
            rows.append(hp.dir_row(parent, "x"))
            parent += "/x"
        pub.extra_rows[""] = [*rows, hp.file_row(parent, "bottom.txt", digest, size)]

    try:
        run, ws, fqrn = run_one_test_case("deep chain", build, tmp_path, nginx)
        assert run.returncode == 0, run.describe()
        tree = ws.dest / fqrn
        bottom = os.path.join("d", *["x"] * depth, "bottom.txt")
        tree_fd = os.open(tree, os.O_RDONLY)
        try:
            with open(os.open(bottom, os.O_RDONLY, dir_fd=tree_fd)) as handle:
                assert handle.read() == "bottom\n"
        finally:
            os.close(tree_fd)
        config = ws.root / "client.conf"
        verify = [sys.executable, "-m", "shrinkwrap_async", "verify", "-x", str(ws.dest)]
        checked = h.run_export([*verify, "-r", fqrn, "-f", str(config)], timeout=120)
        assert checked.returncode == 0, checked.describe()
        spec = tmp_path / "all.spec"
        spec.write_text("/*\n")
        archive = tmp_path / "deep.tar"
        pack = [sys.executable, "-m", "shrinkwrap_async", "pack", "-r", fqrn, "-o", str(archive)]
        for source in (["-x", str(ws.dest)], ["-f", str(config), "-t", str(spec)]):
            packed = h.run_export([*pack, *source], timeout=120)
            assert packed.returncode == 0, packed.describe()
            with tarfile.open(archive) as tar:
                member = tar.getmember(f"{fqrn}/{bottom}")
                extracted = tar.extractfile(member)
                assert extracted is not None and extracted.read() == b"bottom\n"
        # the next revision without the chain
        publisher = hp.HostilePublisher(tmp_path / "out", fqrn)
        publisher.publish(hp.base_source(tmp_path / "source"))
        again = h.run_export(h.export_command(fqrn, config, ws.dest, jobs=8), timeout=120)
        assert again.returncode == 0, again.describe()
        assert not (tree / "d" / "x").exists() and (tree / "d" / "ok.txt").is_file()
        assert outside_untouched(ws)
    finally:
        # shutil.rmtree (pytest's clean-up) recurses too: never leave the chain behind
        subprocess.run(["rm", "-rf", str(tmp_path / "ws")], check=False)


def test_privileged_xattr_namespaces_are_not_applied(tmp_path: Path, nginx: NginxServer) -> None:
    """A file with ``security.capability`` (cap_setuid, effective), ``trusted.*`` and
    ``user.*`` attributes, exported by root: only ``user.*`` is set. A CVMFS mount
    (nosuid) never gives a file capabilities; an export must not either. The object's name
    still covers every attribute, as cvmfs_shrinkwrap's does."""
    capability = bytes.fromhex("0100000280000000800000000000000000000000")
    xattrs = (("security.capability", capability), ("trusted.note", b"t"), ("user.ok", b"u"))
    contents: list[Digest] = []

    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        digest, size = _content(pub, "capped\n")
        contents.append(digest)
        row = hp.file_row("/d", "capped", digest, size)
        row.xattr = serialize_xattrs(xattrs)
        directory = hp.dir_row("/d", "labelled")
        directory.xattr = serialize_xattrs((("trusted.dir", b"t"), ("user.dir", b"d")))
        pub.extra_rows[""] = [row, directory]

    run, ws, fqrn = run_one_test_case("xattr namespaces", build, tmp_path, nginx)
    assert run.returncode == 0, run.describe()
    tree = ws.dest / fqrn / "d"
    assert (tree / "capped").read_text() == "capped\n"
    assert os.listxattr(tree / "capped") == ["user.ok"]
    assert os.listxattr(tree / "labelled") == ["user.dir"]
    name = object_name(contents[0], meta_hash(0o644, 0, 0, xattrs))
    assert os.path.samefile(tree / "capped", ws.dest / ".data" / name)
    # a tarball of every attribute (--xattrs all), from the export and from the repository
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    config = ws.root / "client.conf"
    for number, source in enumerate((["-x", str(ws.dest)], ["-f", str(config), "-t", str(spec)])):
        archive = tmp_path / f"packed{number}.tar"
        pack = [sys.executable, "-m", "shrinkwrap_async", "pack", "-r", fqrn, "--xattrs", "all"]
        packed = h.run_export([*pack, "-o", str(archive), *source], timeout=120)
        assert packed.returncode == 0, packed.describe()
        with tarfile.open(archive) as tar:
            headers = tar.getmember(f"{fqrn}/d/capped").pax_headers
        assert {k for k in headers if k.startswith("SCHILY.xattr.")} == {"SCHILY.xattr.user.ok"}


def test_only_harmless_device_nodes_are_made(tmp_path: Path, nginx: NginxServer) -> None:
    """Exported by root: /dev/null's twin is made (compat layers carry one); /dev/mem's and
    a disk's, mode 0666, are skipped with a warning, as a nodev CVMFS mount makes them inert
    and an export onto a file system that honours device nodes would not."""
    devices = {
        "null": (stat.S_IFCHR, 1, 3),
        "mem": (stat.S_IFCHR, 1, 1),
        "disk": (stat.S_IFBLK, 8, 0),
    }

    def build(pub: hp.HostilePublisher, ws: h.Workspace) -> None:
        pub.extra_rows[""] = [
            hp.RawRow(
                path=f"/d/{name}",
                name=name,
                mode=kind | 0o666,
                size=os.makedev(major, minor),
                mtime=hp.MTIME,
                uid=0,
                gid=0,
                flags=int(Flag.FILE | Flag.FILE_SPECIAL),
                parent="/d",
            )
            for name, (kind, major, minor) in devices.items()
        ]

    run, ws, fqrn = run_one_test_case("devices", build, tmp_path, nginx)
    assert run.returncode == 0, run.describe()
    tree = ws.dest / fqrn / "d"
    made = os.stat(tree / "null", follow_symlinks=False)
    assert stat.S_ISCHR(made.st_mode) and made.st_rdev == os.makedev(1, 3)
    assert not os.path.lexists(tree / "mem") and not os.path.lexists(tree / "disk")
    assert "/d/mem: device node c 1,1 skipped" in run.stderr
    assert "/d/disk: device node b 8,0 skipped" in run.stderr
    assert json.loads(run.stdout)["skipped_devices"] == 2
    # a tarball straight from the repository holds what the export holds
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    archive = tmp_path / "devices.tar"
    pack = [sys.executable, "-m", "shrinkwrap_async", "pack", "-r", fqrn, "-o", str(archive)]
    config = ws.root / "client.conf"
    packed = h.run_export([*pack, "-f", str(config), "-t", str(spec)], timeout=120)
    assert packed.returncode == 0, packed.describe()
    with tarfile.open(archive) as tar:
        devices_packed = {m.name.rsplit("/", 1)[1] for m in tar if m.isdev()}
    assert devices_packed == {"null"}
