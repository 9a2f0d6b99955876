"""Random revisions, seeded: each refreshed export equals a fresh export of the revision, and
the tarball (and SquashFS image) streamed from the repository equals that of the fresh
export."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.link.change_log import start_change_log
from shrinkwrap_async.link.tree_writer import MARKER_NAME
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.testing.chunking import ChunkSizes
from shrinkwrap_async.testing.command_line import run_cli
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import listing_tool

from .test_refresh_changes import expected_changes, read_changes

FQRN = "random.test.local"
NAMES = ("a", "b", "lib", "x.txt", "y.txt", "z")
MTIMES = (1_600_000_000, 1_600_000_100, 1_700_000_000)
SPECS = ("/*\n", "/*\n", "/*\n!/a\n", "/lib/*\n/b/*\n/x.txt\n")
listing = listing_tool()
# The SquashFS route too, where mksquashfs and unsquashfs are installed (.ci/run installs them).
HAVE_SQUASHFS = bool(shutil.which("mksquashfs") and shutil.which("unsquashfs"))
IMAGES = ("tar", "oci", "split.oci", "sqfs") if HAVE_SQUASHFS else ("tar", "oci", "split.oci")
FORMATS = {"oci": ("--format", "oci"), "split.oci": ("--format", "oci", "--oci-split-depth", "1")}


class RandomTree:
    """A source tree changed at random: files, directories, symlinks, hard links, nested
    catalogs made and merged, type changes, moves, modes and mtimes."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.contents = [b"", b"a\n", b"x" * 5000, rng.randbytes(150_000), b"same\n" * 100]
        root.mkdir(parents=True)

    def paths(self, kind: str | None = None) -> list[Path]:
        found = []
        for directory, dirs, files in os.walk(self.root):
            for name in sorted(dirs + files):
                path = Path(directory) / name
                is_dir = path.is_dir() and not path.is_symlink()
                if name == ".cvmfscatalog" or (kind == "dir" and not is_dir):
                    continue
                if kind == "file" and not (path.is_file() and not path.is_symlink()):
                    continue
                found.append(path)
        return sorted(found)

    def change(self) -> None:
        rng = self.rng
        directory = rng.choice([self.root, *self.paths("dir")])
        target = directory / rng.choice(NAMES)
        files, everything = self.paths("file"), self.paths()
        operation = rng.choice(
            ["add", "add", "dir", "remove", "modify", "chmod", "touch", "symlink", "nest",
             "unnest", "retype", "move", "hardlink"]
        )  # fmt: skip
        if operation in ("add", "dir", "symlink", "hardlink", "move") and os.path.lexists(target):
            return
        if operation == "add":
            target.write_bytes(rng.choice(self.contents))
        elif operation == "dir":
            target.mkdir()
            (target / rng.choice(NAMES)).write_bytes(rng.choice(self.contents))
        elif operation == "symlink":
            target.symlink_to(rng.choice(["a", "../b", "/cvmfs/other/x"]))
        elif operation == "hardlink" and files and rng.choice(files).parent == directory:
            os.link(rng.choice([f for f in files if f.parent == directory]), target)
        elif operation == "nest" and self.paths("dir"):
            (rng.choice(self.paths("dir")) / ".cvmfscatalog").write_bytes(b"")
        elif operation == "unnest" and (marks := sorted(self.root.rglob(".cvmfscatalog"))):
            rng.choice(marks).unlink()
        elif not everything:
            return
        elif operation == "remove":
            self._remove(rng.choice(everything))
        elif operation == "modify" and files:
            rng.choice(files).write_bytes(rng.choice(self.contents) + bytes([rng.randrange(256)]))
        elif operation == "chmod" and files:
            os.chmod(rng.choice(files), rng.choice([0o644, 0o755, 0o600]))
        elif operation == "touch":
            stamp = rng.choice(MTIMES)
            os.utime(rng.choice(everything), (stamp, stamp), follow_symlinks=False)
        elif operation == "retype":
            path = rng.choice(everything)
            was_directory = path.is_dir() and not path.is_symlink()
            self._remove(path)
            if was_directory:
                path.write_bytes(rng.choice(self.contents))
            else:
                path.mkdir()
                (path / "inner").write_bytes(rng.choice(self.contents))
        elif operation == "move":
            path = rng.choice(everything)
            if not str(target).startswith(f"{path}/"):
                os.rename(path, target)

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def squashfs_listing(image: Path) -> list[str]:
    done = subprocess.run(["unsquashfs", "-lls", "-n", str(image)],
                          check=True, capture_output=True, text=True)  # fmt: skip
    return done.stdout.splitlines()


def problems(expected_base: Path, actual_base: Path) -> list[str]:
    """listing.diff of two exports, but for the mtime of a regular file: an object kept in
    ``.data`` from before a refresh keeps its mtime (as with cvmfs_shrinkwrap)."""
    expected = listing.dump(str(expected_base), FQRN)
    actual = listing.dump(str(actual_base), FQRN)
    return [
        problem
        for problem in listing.diff(expected, actual)
        if not (
            problem.startswith("mtime differs at ")
            and expected["entries"][problem.split("'")[1]].get("type") == "f"
        )
    ]


# Seeds 1 and 2 make files of one object with different mtimes whose first member in the
# archive is not the first in cvmfs_shrinkwrap's walk (the streamed tar once differed there);
# 40 seeds passed when this was written.
@pytest.mark.parametrize("seed", [1, 2, 17])
async def test_random_revisions_refresh_and_stream_as_fresh_exports(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    tree = RandomTree(tmp_path / "source", rng)
    for _ in range(10):
        tree.change()
    options = PublishOptions(chunk_sizes=ChunkSizes(32 << 10, 64 << 10, 128 << 10), workers=1)
    publisher = Publisher(tmp_path / "server", FQRN, options)
    changes = tmp_path / "changes.txt"
    for revision in range(6):
        for _ in range(rng.randint(1, 5)):
            tree.change()
        spec_text = rng.choice(SPECS)
        key = publisher.publish(tree.root).public_key
        fresh = tmp_path / f"fresh-{revision}"
        async with StaticServer(tmp_path / "server") as server:
            url = server.repository_url(FQRN)
            spec = Spec.parse(spec_text)
            before = listing.dump(str(tmp_path / "dest"), FQRN) if revision else {"entries": {}}
            start_change_log(changes)
            refreshed = await export_repository(
                ClientSettings.for_repository(FQRN, url, key, cache_base=tmp_path / "cache"),
                spec,
                ExportOptions(dest_base=tmp_path / "dest", changes_file=changes),
            )
            made = await export_repository(
                ClientSettings.for_repository(FQRN, url, key, cache_base=fresh / "cache"),
                spec,
                ExportOptions(dest_base=fresh),
            )
            assert refreshed.failures == [] and made.failures == []
            assert problems(fresh, tmp_path / "dest") == [], (revision, spec_text)
            # --changes lists exactly what the refresh changed (the listings before and after).
            after = listing.dump(str(tmp_path / "dest"), FQRN)
            listed = read_changes(changes)
            assert len(listed) == len(set(listed)), (revision, spec_text)
            wanted = expected_changes(before, after) - {("A", "/" + MARKER_NAME), ("A", "/")}
            assert set(listed) == wanted, (revision, spec_text)

            config = tmp_path / "client.conf"
            config.write_text(
                f"CVMFS_SERVER_URL={server.repository_url('@fqrn@')}\nCVMFS_PUBLIC_KEY={key}\n"
                f"CVMFS_CACHE_BASE={tmp_path / 'pack-cache'}\n"
            )
            spec_file = tmp_path / "pack.spec"
            spec_file.write_text(spec_text)
            streamed = {suffix: tmp_path / f"streamed-{revision}.{suffix}" for suffix in IMAGES}
            packed = {suffix: tmp_path / f"packed-{revision}.{suffix}" for suffix in IMAGES}
            times = ("--mtime", "1700000123", "-q")
            for suffix in IMAGES:
                form = FORMATS.get(suffix, ())
                assert await run_cli("pack", "-r", FQRN, "-f", str(config), "-t", str(spec_file),
                                     *times, *form, "-o", str(streamed[suffix])) == 0  # fmt: skip
                method = ("--squashfs-method", "stream") if suffix == "sqfs" else form
                assert await run_cli("pack", "-r", FQRN, "-x", str(fresh), *times, *method,
                                     "-o", str(packed[suffix])) == 0  # fmt: skip
        assert streamed["tar"].read_bytes() == packed["tar"].read_bytes(), (revision, spec_text)
        # The OCI layout: one manifest digest (the layer, the revision and root catalog named).
        for layout in ("oci", "split.oci"):  # a layer per top directory, hard links per layer
            assert (streamed[layout] / "index.json").read_bytes() == (
                packed[layout] / "index.json"
            ).read_bytes(), (revision, layout)
        if "sqfs" in IMAGES:
            assert squashfs_listing(streamed["sqfs"]) == squashfs_listing(packed["sqfs"])
        shutil.rmtree(fresh)
