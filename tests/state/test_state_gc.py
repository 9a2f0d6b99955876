"""Garbage collection over a hand-made export: hard links from a tree into .data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shrinkwrap_async.cli import main
from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.state import gc
from shrinkwrap_async.state.gc import collect_garbage
from shrinkwrap_async.state.lock import RunLock

META = "ec39f54ab7a04aa0bdbb21582e4726e8"


def _object(data: Path, digest: str, content: bytes) -> Path:
    path = data / digest[:2] / digest[2:4] / f"{digest[4:]}.{META}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def make_export(dest: Path) -> dict[str, set[Path]]:
    """A destination with linked objects, orphans, a multiply linked object, stale temps."""
    data = dest / ".data"
    tree = dest / "repo.test.local"
    (tree / "sub").mkdir(parents=True)
    linked = {
        _object(data, "aa" * 20, b"linked once"),
        _object(data, "ab" * 20, b"linked twice"),
        _object(data, "0f" * 20, b"linked from another repository"),
    }
    os.link(data / "aa/aa" / f"{'aa' * 18}.{META}", tree / "one.txt")
    os.link(data / "ab/ab" / f"{'ab' * 18}.{META}", tree / "two.txt")
    os.link(data / "ab/ab" / f"{'ab' * 18}.{META}", tree / "sub" / "two-again.txt")
    other = dest / "other.test.local"
    other.mkdir()
    os.link(data / "0f/0f" / f"{'0f' * 18}.{META}", other / "f")
    orphans = {
        _object(data, "cc" * 20, b"orphan of a removed file" * 10),
        _object(data, "cd" * 20, b"orphan of a crash"),
    }
    # A tree deleted by hand: its object stays behind with link count 1.
    deleted = _object(data, "de" * 20, b"tree removed by hand")
    os.link(deleted, tree / "doomed")
    (tree / "doomed").unlink()
    orphans.add(deleted)
    # Temporary files: the store's per-pid area of a dead process, and stray temp names.
    dead_pid_dir = data / ".tmp" / "999999999"
    dead_pid_dir.mkdir(parents=True)
    (dead_pid_dir / "0123abcd").write_bytes(b"half an object")
    dotted_temp = _object(data, "ee" * 20, b"x").rename(data / "ee/ee/.tmp.partial")
    temps = {dead_pid_dir / "0123abcd", dotted_temp}
    stray = data / "aa" / "aa" / "something.tmp"
    stray.write_bytes(b"tmp")
    temps.add(stray)
    # Not ours: a cvmfs_shrinkwrap garbage list; must survive.
    (data / ".garbage").mkdir()
    (data / ".garbage" / "flagged").write_bytes(b"\0" * 8)
    return {"linked": linked, "orphans": orphans, "temps": temps}


@pytest.fixture(params=["one thread", "threads"])
def answers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The file system as the sweep judges it: local and quick (one thread), or slow to
    answer like a network file system (the fan-out directories swept by threads)."""
    monkeypatch.setattr(gc, "SLOW_ENTRY", 0.0 if request.param == "threads" else 1.0)
    return str(request.param)


def test_removes_exactly_the_orphans_and_stale_temps(tmp_path: Path, answers: str) -> None:
    sets = make_export(tmp_path)
    removed: list[tuple[str, str, int]] = []
    sweepers: set[str] = set()

    def on_remove(*row: object) -> None:
        removed.append(row)  # type: ignore[arg-type]
        sweepers.add(threading.current_thread().name)

    result = collect_garbage(tmp_path, workers=4, on_remove=on_remove)
    for path in sets["linked"]:
        assert path.exists(), path
    for path in sets["orphans"] | sets["temps"]:
        assert not path.exists(), path
    assert not (tmp_path / ".data/.tmp/999999999").exists()
    assert (tmp_path / ".data/.garbage/flagged").exists()
    assert (result.objects_removed, result.objects_kept) == (3, 3)
    assert result.bytes_removed == sum(
        len(c)
        for c in (b"orphan of a removed file" * 10, b"orphan of a crash", b"tree removed by hand")
    )
    assert result.temps_removed == 3
    assert result.errors == 0
    # The first fan-out directory is swept alone; the others by threads only if it was slow.
    in_threads = {name for name in sweepers if name.startswith("shrinkwrap-gc")}
    assert bool(in_threads) == (answers == "threads"), sweepers
    assert {name for kind, name, _ in removed if kind == "object"} == {
        str(p.relative_to(tmp_path / ".data")) for p in sets["orphans"]
    }
    assert (tmp_path / "repo.test.local" / "two.txt").read_bytes() == b"linked twice"
    rows = dict((name, value) for name, value, _ in result.rows())
    assert rows["Files removed"] == 3 and rows["Bytes removed"] == result.bytes_removed
    # A second pass finds nothing more.
    again = collect_garbage(tmp_path)
    assert (again.objects_removed, again.temps_removed, again.objects_kept) == (0, 0, 3)


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    sets = make_export(tmp_path)
    listed: list[str] = []
    result = collect_garbage(tmp_path, dry_run=True, on_remove=lambda k, n, s: listed.append(n))
    for path in sets["linked"] | sets["orphans"] | sets["temps"]:
        assert path.exists(), path
    assert result.dry_run and result.objects_removed == 3 and result.temps_removed == 3
    assert len(listed) == 6


def test_object_linked_while_sweeping_is_kept(tmp_path: Path) -> None:
    """An object with link count > 1 (e.g. just linked by a writer) is never removed."""
    data = tmp_path / ".data"
    target = _object(data, "12" * 20, b"in use")
    (tmp_path / "t").mkdir()
    os.link(target, tmp_path / "t" / "f")
    result = collect_garbage(tmp_path)
    assert target.exists() and result.objects_removed == 0 and result.objects_kept == 1


def test_a_symlinked_fanout_directory_is_not_followed(tmp_path: Path) -> None:
    """Whatever a symbolic link in the store points at is not the store's to remove."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / f"{'99' * 18}.{META}").write_bytes(b"someone else's file")
    (tmp_path / ".data" / "99").mkdir(parents=True)
    (tmp_path / ".data" / "99" / "99").symlink_to(elsewhere)
    result = collect_garbage(tmp_path)
    assert (elsewhere / f"{'99' * 18}.{META}").exists()
    assert (result.objects_seen, result.objects_removed, result.errors) == (0, 0, 0)


def test_prune_empty_dirs(tmp_path: Path) -> None:
    make_export(tmp_path)
    (tmp_path / ".data" / "77" / "88").mkdir(parents=True)
    result = collect_garbage(tmp_path, prune_empty_dirs=True)
    assert not (tmp_path / ".data" / "77").exists()
    assert not (tmp_path / ".data" / "cc").exists()  # emptied by the sweep
    assert (tmp_path / ".data" / "aa" / "aa").is_dir()  # still holds a linked object
    assert result.dirs_removed >= 4


def test_missing_store_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no object store"):
        collect_garbage(tmp_path)


def test_gc_command_json_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = make_export(tmp_path)
    assert main(["gc", "-x", str(tmp_path), "--dry-run", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(1 for line in lines if "would_remove" in line) == 6
    summary = lines[-1]["summary"]
    assert summary["dry_run"] is True and summary["objects_removed"] == 3
    assert all(p.exists() for p in sets["orphans"])

    assert main(["gc", "-x", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Files removed|3|" in out and "Name|Value|Description" in out
    assert not any(p.exists() for p in sets["orphans"])


def test_gc_command_respects_the_lock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_export(tmp_path)
    with RunLock.for_destination(tmp_path):
        assert main(["gc", "-x", str(tmp_path)]) == 75
    assert "holds the lock" in capsys.readouterr().err
    # With an explicit lock file elsewhere, the destination's default lock does not matter.
    with RunLock.for_destination(tmp_path):
        assert main(["gc", "-x", str(tmp_path), "--lock-file", str(tmp_path / "l")]) == 0


def test_gc_command_in_a_subprocess(tmp_path: Path) -> None:
    make_export(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "shrinkwrap_async", "gc", "-x", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_temp_dirs_named_like_no_process_are_swept(tmp_path: Path) -> None:
    """``.tmp/<pid>`` names that no process can have (beyond pid_t, not ASCII digits, 0)
    are swept like a dead run's; they used to raise from ``int`` or ``os.kill``."""
    make_export(tmp_path)
    odd = [tmp_path / ".data/.tmp" / name for name in ("99999999999", "\u00b2", "0")]
    for directory in odd:
        directory.mkdir(parents=True)
        (directory / "temp").write_bytes(b"partial")
    result = collect_garbage(tmp_path)
    assert result.errors == 0 and not any(directory.exists() for directory in odd)
