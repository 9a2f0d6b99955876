"""Fidelity: export every real-tool fixture case and compare with what cvmfs_shrinkwrap made."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ShrinkwrapError
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.gc import collect_garbage
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import listing_tool

listing = listing_tool()

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the fixtures' owners need the uid map as root")


def write_config(path: Path, server: StaticServer, fixtures: Path, cache: Path) -> Path:
    idmap = path.parent / "idmap"
    idmap.write_text("* 0\n")
    path.write_text(
        f"CVMFS_SERVER_URL={server.url}/cvmfs/@fqrn@\n"
        "CVMFS_HTTP_PROXY=DIRECT\n"
        f"CVMFS_KEYS_DIR={fixtures / 'keys'}\n"
        f"CVMFS_CACHE_BASE={cache}\n"
        "CVMFS_SHARED_CACHE=no\nCVMFS_MOUNT_DIR=/cvmfs\nCVMFS_CLAIM_OWNERSHIP=no\n"
        f"CVMFS_USER=root\nCVMFS_UID_MAP={idmap}\nCVMFS_GID_MAP={idmap}\n"
    )
    return path


async def export_revision(
    server: StaticServer,
    docroot: Path,
    fixtures: Path,
    tmp: Path,
    fqrn: str,
    revision: int,
    spec_text: str,
    dest: Path,
    cache_name: str = "cache",
) -> ExportStats:
    shutil.copy(
        fixtures / "revisions" / fqrn / str(revision) / ".cvmfspublished",
        docroot / "cvmfs" / fqrn / ".cvmfspublished",
    )
    config = write_config(tmp / f"{fqrn}.conf", server, fixtures, tmp / cache_name)
    settings = ClientSettings.load([config], fqrn)
    options = ExportOptions(dest_base=dest, max_in_flight=8)
    return await export_repository(settings, Spec.parse(spec_text), options)


def dump_xattrs(top: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for dirpath, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            names = os.listxattr(path, follow_symlinks=False)
            if names:
                out[os.path.relpath(path, top)] = {
                    k: os.getxattr(path, k, follow_symlinks=False).hex() for k in names
                }
    return out


def allowed_problems(expected: dict, actual: dict) -> list[str]:  # type: ignore[type-arg]
    """listing.diff minus the allowed difference: a shared inode's mtime may be any member's."""
    problems = listing.diff(expected, actual)
    exp = expected["entries"]
    members: dict[object, set[int]] = {}
    for entry in exp.values():
        if "group" in entry:
            members.setdefault(entry["group"], set()).add(entry["mtime"])
    kept = []
    for problem in problems:
        if problem.startswith("mtime differs at "):
            rel = problem.split("'")[1]
            entry = exp.get(rel, {})
            if entry.get("type") == "f" and actual["entries"][rel]["mtime"] in members.get(
                entry.get("group"), ()
            ):
                continue
        kept.append(problem)
    return kept


CASES = json.loads((Path(listing.__file__).parents[1] / "fixtures/expected/cases.json").read_text())
SIMPLE = [
    (fqrn, case)
    for fqrn, cases in CASES.items()
    for case, data in cases.items()
    if len(data["steps"]) == 1 and not (fqrn == "fix3.test.local" and case == "all")
]


@needs_root
@pytest.mark.parametrize(("fqrn", "case"), SIMPLE)
async def test_fixture_case_matches_real_tool(
    fixture_server: StaticServer,
    fixture_docroot: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    fqrn: str,
    case: str,
) -> None:
    data = CASES[fqrn][case]
    spec_text = (fixtures_dir / data["spec"]).read_text()
    dest = tmp_path / "dest"
    stats = await export_revision(
        fixture_server,
        fixture_docroot,
        fixtures_dir,
        tmp_path,
        fqrn,
        data["steps"][0]["revision"],
        spec_text,
        dest,
    )
    assert stats.failures == []
    expected = json.loads((fixtures_dir / data["listing"]).read_text())
    actual = listing.dump(str(dest), fqrn)
    assert allowed_problems(expected, actual) == []
    assert dump_xattrs(dest / fqrn) == json.loads((fixtures_dir / data["xattrs"]).read_text())
    assert not any((dest / ".data" / ".tmp").iterdir())


@needs_root
async def test_fix3_special_files_exported_not_aborting(
    fixture_server: StaticServer, fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    """Where the real tool aborts at the FIFO, we export it, the device node, and the rest."""
    fqrn = "fix3.test.local"
    dest = tmp_path / "dest"
    stats = await export_revision(
        fixture_server, fixture_docroot, fixtures_dir, tmp_path, fqrn, 2, "/*\n", dest
    )
    assert stats.failures == [] and stats.specials == 2
    actual = listing.dump(str(dest), fqrn)
    expected = json.loads((fixtures_dir / "expected" / fqrn / "all_but_special.json").read_text())
    special = {k: v for k, v in actual["entries"].items() if k.startswith("special")}
    assert special["special/fifo"]["type"] == "p" and special["special/fifo"]["mode"] == 0o640
    assert special["special/null_device"]["type"] == "c"
    assert os.stat(dest / fqrn / "special/null_device", follow_symlinks=False).st_rdev == 259
    rest = {
        "fqrn": fqrn,
        "entries": {k: v for k, v in actual["entries"].items() if not k.startswith("special")},
    }
    assert allowed_problems(expected, rest) == []


def _unmount(mountpoint: Path) -> None:
    for _ in range(50):  # the daemon may still hold a file the test just closed
        for command in (["fusermount3", "-u"], ["fusermount", "-u"], ["umount"]):
            if shutil.which(command[0]) is None:
                continue
            if subprocess.run([*command, str(mountpoint)], capture_output=True).returncode == 0:
                return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@pytest.fixture(params=["local", "fuse"])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """Where the export goes: a local directory, or one of a FUSE file system (bindfs; no
    ``O_TMPFILE``, no ``RENAME_NOREPLACE``, every metadata call a round trip to a daemon,
    as on the user-space file systems some sites mount; skipped where FUSE is missing)."""
    if request.param == "local":
        yield tmp_path / "dest"
        return
    if shutil.which("bindfs") is None or not Path("/dev/fuse").exists():
        pytest.skip("bindfs or /dev/fuse is not available")
    backing, mountpoint = tmp_path / "backing", tmp_path / "fuse"
    backing.mkdir()
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["bindfs", "--no-allow-other", str(backing), str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount bindfs here: {mounted.stderr.strip()[:200]}")
    try:
        yield mountpoint / "dest"
    finally:
        _unmount(mountpoint)


@needs_root
async def test_incremental_a_to_b_gives_the_b_tree(
    fixture_server: StaticServer,
    fixture_docroot: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    destination: Path,
) -> None:
    """Revision A, then B over it: the real tool's trees of both; then the gc collects
    only what A alone used."""
    fqrn = "fix1.test.local"
    dest = destination
    stats = await export_revision(
        fixture_server, fixture_docroot, fixtures_dir, tmp_path, fqrn, 2, "/*\n", dest
    )
    assert stats.failures == [] and stats.data_files > 0
    expected = json.loads((fixtures_dir / "expected" / fqrn / "all_A.json").read_text())
    assert allowed_problems(expected, listing.dump(str(dest), fqrn)) == []
    stats = await export_revision(
        fixture_server, fixture_docroot, fixtures_dir, tmp_path, fqrn, 3, "/*\n", dest
    )
    assert stats.failures == [] and stats.removed > 0
    expected = json.loads((fixtures_dir / "expected" / fqrn / "all_B.json").read_text())
    assert allowed_problems(expected, listing.dump(str(dest), fqrn)) == []
    assert dump_xattrs(dest / fqrn) == json.loads(
        (fixtures_dir / "expected" / fqrn / "inc_A_to_B.xattrs.json").read_text()
    )
    assert not any((dest / ".data" / ".tmp").iterdir())

    result = collect_garbage(dest)
    assert result.errors == 0 and result.objects_removed > 0
    assert all(p.stat().st_nlink > 1 for p in (dest / ".data").glob("??/??/*"))
    assert allowed_problems(expected, listing.dump(str(dest), fqrn)) == []


PINS = {
    "tag": "CVMFS_REPOSITORY_TAG=trunk-previous\n",
    "date": "CVMFS_REPOSITORY_DATE=2026-11-24T20:47:17Z\n",  # revision 2's tag time
    "root hash": "CVMFS_ROOT_HASH=2c0a532d053941a164e5166a0e5e4e50086f27c0\n",
}


@needs_root
@pytest.mark.parametrize("pin", list(PINS))
async def test_a_pinned_revision_is_the_real_tools_tree_of_it(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    pin: str,
) -> None:
    """fix1 serves revision 3; a configuration pinning revision 2 (by tag, by date, by root
    hash, resolved through the history database) exports the real tool's tree of revision
    2, also over an export of revision 3; pinning ``trunk`` then brings revision 3 back."""
    fqrn = "fix1.test.local"
    dest = tmp_path / "dest"
    base = write_config(tmp_path / "base.conf", fixture_server, fixtures_dir, tmp_path / "cache")
    latest = await export_repository(
        ClientSettings.load([base], fqrn), Spec.parse("/*\n"), ExportOptions(dest_base=dest)
    )
    assert latest.revision == 3 and latest.failures == []
    pinned = tmp_path / "pinned.conf"
    pinned.write_text(base.read_text() + PINS[pin])
    stats = await export_repository(
        ClientSettings.load([pinned], fqrn), Spec.parse("/*\n"), ExportOptions(dest_base=dest)
    )
    assert stats.revision == 2 and stats.failures == [] and not stats.up_to_date
    expected = json.loads((fixtures_dir / "expected" / fqrn / "all_A.json").read_text())
    assert allowed_problems(expected, listing.dump(str(dest), fqrn)) == []
    record = json.loads((dest / ".provenance" / fqrn / "export.json").read_text())
    assert record["revision"] == 2 and record["pinned_by"].startswith(pin)
    again = await export_repository(
        ClientSettings.load([pinned], fqrn), Spec.parse("/*\n"), ExportOptions(dest_base=dest)
    )
    assert again.up_to_date and again.revision == 2
    assert again.requests == 2  # the history database is kept by hash, as the certificate
    trunk = tmp_path / "trunk.conf"
    trunk.write_text(base.read_text() + "CVMFS_REPOSITORY_TAG=trunk\n")
    stats = await export_repository(
        ClientSettings.load([trunk], fqrn), Spec.parse("/*\n"), ExportOptions(dest_base=dest)
    )
    assert stats.revision == 3
    expected = json.loads((fixtures_dir / "expected" / fqrn / "all_B.json").read_text())
    assert allowed_problems(expected, listing.dump(str(dest), fqrn)) == []


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("CVMFS_REPOSITORY_TAG=no-such-tag", "fix1.test.local has no such tag"),
        ("CVMFS_REPOSITORY_DATE=2001-01-01T00:00:00Z", "has no revision as early as that"),
        ("CVMFS_ROOT_HASH=" + "ab" * 20, "names no catalog of fix1.test.local"),
    ],
)
async def test_a_pin_that_names_nothing_is_a_configuration_error(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path, setting: str, problem: str
) -> None:
    config = write_config(tmp_path / "c.conf", fixture_server, fixtures_dir, tmp_path / "cache")
    config.write_text(config.read_text() + setting + "\n")
    settings = ClientSettings.load([config], "fix1.test.local")
    with pytest.raises(ShrinkwrapError) as caught:
        await export_repository(settings, Spec.parse("/*\n"), ExportOptions(dest_base=tmp_path))
    assert caught.value.exit_code == 2 and problem in str(caught.value)
    assert not (tmp_path / "fix1.test.local").exists()


async def test_corrupt_object_never_reaches_the_tree(
    fixture_server: StaticServer, fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    fqrn = "fix1.test.local"
    readme = "0de6675501be5670231cc489d081384ac92ef074"  # README.txt of revision A
    obj = fixture_docroot / "cvmfs" / fqrn / "data" / readme[:2] / readme[2:]
    obj.write_bytes(b"\x00" + obj.read_bytes()[1:])
    dest = tmp_path / "dest"
    stats = await export_revision(
        fixture_server, fixture_docroot, fixtures_dir, tmp_path, fqrn, 2, "/*\n", dest
    )
    assert [f.path for f in stats.failures] == ["/README.txt"]
    assert not (dest / fqrn / "README.txt").exists()
    assert (dest / fqrn / "etc" / "conf.ini").is_file()  # everything else is complete
    assert not list((dest / ".data").glob(f"{readme[:2]}/{readme[2:4]}/*"))


async def test_hostile_name_refused(tmp_path: Path) -> None:
    """A catalog entry named '..' is refused before anything is written."""
    from shrinkwrap_async.catalogs.entry import DirEntry
    from shrinkwrap_async.exitcodes import UnsafePathError
    from shrinkwrap_async.pipeline.spec_filter import select_children

    for name in ("..", "a/b", ""):
        entry = DirEntry(
            path=f"/{name}", name=name, mode=0o40755, size=0, mtime=0, uid=0, gid=0, flags=1
        )
        with pytest.raises(UnsafePathError):
            list(select_children(Spec.everything(), [entry]))
    assert issubclass(UnsafePathError, ShrinkwrapError)
