"""SquashFS images: listed with unsquashfs -lls, extracted with unsquashfs -d, compared."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _packtree import FQRN, MTIME, assert_same_tree, pack

from shrinkwrap_async.cli import main
from shrinkwrap_async.packing import squashfs
from shrinkwrap_async.packing.entries import MARKER_NAME

pytestmark = pytest.mark.skipif(
    shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None,
    reason="squashfs-tools not installed",
)


LLS_LINE = re.compile(
    r"^(\S+) (\S+)\s+.*? \d{4}-\d\d-\d\d \d\d:\d\d (squashfs-root.*?)(?: -> .*)?$"
)


def listing(image: Path) -> list[tuple[str, str, str]]:
    """(permissions, owner, path) of each entry, as unsquashfs -lls prints them."""
    out = subprocess.run(
        ["unsquashfs", "-lls", "-n", str(image)], capture_output=True, check=True
    ).stdout.decode("utf-8", "surrogateescape")
    rows = []
    for line in out.splitlines():
        match = LLS_LINE.match(line)
        if match:
            perms, owner, path = match.groups()
            rows.append((perms, owner, path.removeprefix("squashfs-root")))
    return rows


@pytest.mark.parametrize("method", ["stream", "tree"])
def test_image_matches_the_tree(export: Path, tmp_path: Path, method: str) -> None:
    image = tmp_path / "image.sqfs"
    pack(export, image, "--squashfs-method", method, "--mtime", str(MTIME + 99))
    rows = listing(image)
    by_path = {path: (perms, owner) for perms, owner, path in rows}
    # The image root stands for /cvmfs and holds <fqrn>/.
    assert by_path[""] == ("drwxr-xr-x", "root/root")
    assert by_path[f"/{FQRN}"][0] == "drwxr-xr-x"
    assert by_path[f"/{FQRN}/sticky_dir"][0] == "drwxrwxrwt"
    assert by_path[f"/{FQRN}/modes/m0000"][0] == "----------"
    assert by_path[f"/{FQRN}/bin/setuid_like"][0] == "-rwsr-xr-x"
    assert by_path[f"/{FQRN}/special/fifo"][0] == "prw-r-----"
    assert by_path[f"/{FQRN}/links/dangling"][0].startswith("l")
    if os.geteuid() == 0:
        assert by_path[f"/{FQRN}/owned_by_1234.txt"][1] == "1234/5678"
    tree_paths = {"", f"/{FQRN}"}
    for directory, subdirs, files in os.walk(export / FQRN):
        for name in subdirs + files:
            relative = os.path.relpath(os.path.join(directory, name), export / FQRN)
            tree_paths.add(f"/{FQRN}/{relative}")
    assert {p.encode("utf-8", "surrogateescape") for p in by_path} == {
        p.encode("utf-8", "surrogateescape") for p in tree_paths
    }

    out = tmp_path / "unsquashed"
    subprocess.run(["unsquashfs", "-q", "-n", "-d", str(out), str(image)], check=True,
                   capture_output=True)  # fmt: skip
    assert sorted(os.listdir(out)) == [FQRN]
    if method == "tree":  # mksquashfs read the tree: root and marker times are the tree's
        assert_same_tree(export / FQRN, out / FQRN)
    else:
        # --mtime replaced the times of the tree root and of the marker file.
        os.utime(export / FQRN, (MTIME + 99, MTIME + 99))
        os.utime(export / FQRN / MARKER_NAME, (MTIME + 99, MTIME + 99))
        assert_same_tree(export / FQRN, out / FQRN)


def test_stream_image_is_reproducible(export: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "1.sqfs", tmp_path / "2.sqfs"
    pack(export, first, "--mtime", str(MTIME))
    os.utime(export / FQRN, (MTIME + 5000, MTIME + 5000))
    pack(export, second, "--mtime", str(MTIME))
    assert first.read_bytes() == second.read_bytes()
    info = subprocess.run(["unsquashfs", "-s", str(first)], capture_output=True, text=True)
    assert "2023" in info.stdout  # creation time MTIME, not the time of the run


def test_all_root(export: Path, tmp_path: Path) -> None:
    image = tmp_path / "root.sqfs"
    pack(export, image, "--all-root")
    assert {owner for _, owner, _ in listing(image)} == {"root/root"}


def test_missing_tools_give_one_line_and_exit_2(
    export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = main(["pack", "-x", str(export), "-r", FQRN, "-o", str(tmp_path / "x.sqfs")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "squashfs-tools" in err
    assert not list(tmp_path.glob("*.sqfs")) and not list(tmp_path.glob(".x.sqfs*"))


def test_tool_failure_is_a_storage_error(export: Path, tmp_path: Path) -> None:
    options = squashfs.SquashfsOptions(mtime=MTIME, compressor="no-such-compressor")
    with pytest.raises(squashfs.StorageError, match="mksquashfs failed"):
        squashfs.build_squashfs_from_tree(export, FQRN, tmp_path / "x.sqfs", options, "tree")
