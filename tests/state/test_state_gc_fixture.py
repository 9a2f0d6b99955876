"""The real cvmfs_shrinkwrap's inc_A_to_B garbage collection numbers, reproduced.

The fixtures list ``.data`` of the real tool after exporting fix1 revision 2 and then 3 into
one destination (``inc_A_to_B.data-before-gc.txt``: 175 objects plus its ``.garbage/flagged``
file) and after its ``--gc`` (157 objects plus that file): 18 files and 3,312,603 bytes
removed, leaving exactly the object set of a fresh revision-3 export.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from pathlib import Path

import pytest

from shrinkwrap_async.state.gc import collect_garbage
from shrinkwrap_async.testing.command_line import run_cli_process
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import serve_revision, write_client_config

FQRN = "fix1.test.local"
REMOVED_FILES = 18
REMOVED_BYTES = 3_312_603


def read_listing(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (nlink, size) of the store objects in a data listing (.garbage left out)."""
    objects: dict[str, tuple[int, int]] = {}
    for line in path.read_text().splitlines():
        name, nlink, size = line.split(" ")
        if name.startswith(".garbage/"):
            continue
        objects[name] = (int(nlink.removeprefix("nlink=")), int(size.removeprefix("size=")))
    return objects


def store_objects(data: Path) -> set[str]:
    """Object names (XX/YY/name) present in a store."""
    names = set()
    for top in sorted(data.iterdir()):
        if len(top.name) != 2 or not top.is_dir():
            continue
        for sub in top.iterdir():
            names.update(f"{top.name}/{sub.name}/{entry.name}" for entry in sub.iterdir())
    return names


def test_listing_numbers_on_a_rebuilt_store(tmp_path: Path, fixtures_dir: Path) -> None:
    """Rebuild the real tool's store (names, sizes, link counts) and collect it."""
    expected = fixtures_dir / "expected" / FQRN
    before = read_listing(expected / "inc_A_to_B.data-before-gc.txt")
    after = read_listing(expected / "inc_A_to_B.data-after-gc.txt")
    assert (len(before), len(after)) == (175, 157)
    data = tmp_path / ".data"
    tree = tmp_path / FQRN
    tree.mkdir()
    for index, (name, (nlink, size)) in enumerate(sorted(before.items())):
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(size)  # sparse: only the size matters here
        for link in range(nlink - 1):
            os.link(path, tree / f"f{index}-{link}")
    (data / ".garbage").mkdir()
    (data / ".garbage" / "flagged").write_bytes(b"\0" * 8 * REMOVED_FILES)

    result = collect_garbage(tmp_path)

    assert (result.objects_removed, result.bytes_removed) == (REMOVED_FILES, REMOVED_BYTES)
    assert store_objects(data) == set(after)
    assert (data / ".garbage" / "flagged").exists()  # not ours to remove


async def _export(config: Path, spec: Path, dest: Path) -> None:
    result = await run_cli_process(
        "export", "-r", FQRN, "-f", str(config), "-t", str(spec), "-x", str(dest), "-q",
        timeout=240,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr


@pytest.mark.skipif(
    importlib.util.find_spec("shrinkwrap_async.commands.export") is None,
    reason="the export command is not there yet",
)
async def test_incremental_export_then_gc_equals_fresh_export(
    tmp_path: Path, fixtures_dir: Path, fixture_docroot: Path, fixture_server: StaticServer
) -> None:
    expected = fixtures_dir / "expected" / FQRN
    spec = fixtures_dir / "specs" / FQRN / "all.spec"
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    dest = tmp_path / "dest"

    serve_revision(fixture_docroot, FQRN, 2)
    await _export(config, spec, dest)
    serve_revision(fixture_docroot, FQRN, 3)
    await _export(config, spec, dest)
    before = store_objects(dest / ".data")
    assert before == set(read_listing(expected / "inc_A_to_B.data-before-gc.txt"))

    result = await asyncio.to_thread(collect_garbage, dest)
    after = store_objects(dest / ".data")
    assert (result.objects_removed, result.bytes_removed) == (REMOVED_FILES, REMOVED_BYTES)
    assert len(after) == 157
    assert after == set(read_listing(expected / "inc_A_to_B.data-after-gc.txt"))

    fresh = tmp_path / "fresh"
    await _export(config, spec, fresh)
    assert store_objects(fresh / ".data") == after
