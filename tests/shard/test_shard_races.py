"""Shards write one tree at once: a directory made by another shard between our lstat and
mkdir is accepted, and a shard's prune leaves other processes' temp names alone."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shrinkwrap_async import runtime
from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.link import tree_writer
from shrinkwrap_async.link.tree_writer import TreeWriter, is_temp_name
from shrinkwrap_async.pipeline import shard
from shrinkwrap_async.testing.command_line import run_cli, run_cli_process, source_arguments
from shrinkwrap_async.testing.servers import StaticServer

FIX1 = "fix1.test.local"


def test_directory_made_meanwhile_is_accepted(tmp_path: Path, monkeypatch) -> None:
    with TreeWriter(tmp_path / "tree", chown=False) as writer:
        real_lstat = TreeWriter._lstat

        def racing_lstat(parent: int, name: str) -> os.stat_result | None:
            found = real_lstat(parent, name)
            if name in ("d", "f"):  # another shard makes it right after our look
                if name == "d":
                    os.mkdir(name, dir_fd=parent)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, dir_fd=parent))
            return found

        monkeypatch.setattr(TreeWriter, "_lstat", staticmethod(racing_lstat))
        writer.make_directory(("d",))
        assert (tmp_path / "tree" / "d").is_dir()
        with pytest.raises(StorageError, match="File exists"):
            writer.make_directory(("f",))  # a file in the way is not a race to accept


def test_temp_names_differ_between_calls_and_between_forked_processes() -> None:
    """Forked shards inherit the random tag and the counter; their names still differ."""
    names = [tree_writer._temp_name() for _ in range(1000)]
    assert len(set(names)) == 1000 and all(is_temp_name(name) for name in names)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, tree_writer._temp_name().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as child:
        from_child = child.read()
    assert is_temp_name(from_child)
    assert from_child != tree_writer._temp_name()
    assert from_child not in names


def test_shard_prune_keeps_temp_names_newer_than_the_shards(tmp_path: Path) -> None:
    """A shard leaves temp names alone that another shard may be about to rename (changed
    since the shards started), and removes older ones: a killed run's."""
    tree = tmp_path / "tree"
    with TreeWriter(tree, chown=False) as writer:
        writer.make_directory(("d",))
        old, temp = tree_writer._temp_name(), tree_writer._temp_name()
        assert is_temp_name(temp)
        (tree / "d" / old).write_text("x")
        time.sleep(0.1)  # far more than the tick an inode's clock may lag behind
        started = time.time()
        time.sleep(0.1)
        for name in (temp, "stale"):
            (tree / "d" / name).write_text("x")
        os.utime(tree / "d" / temp, (0, 0))  # the mtime says nothing: a link keeps the object's
        assert writer.prune(("d",), [], keep_temps_since=math.inf) == ["stale"]
        assert sorted(os.listdir(tree / "d")) == sorted([old, temp])
        assert writer.prune(("d",), [], keep_temps_since=started) == [old]
        assert os.listdir(tree / "d") == [temp]
        assert writer.prune(("d",), []) == [temp]


async def test_workers_rerun_that_is_up_to_date_starts_no_shard(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    """--workers 2 on an exported, unchanged repository: the parent's state check answers
    with the manifest and whitelist requests only (no shard, no catalog, no object)."""
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
    argv = [*source, "-x", str(tmp_path)]
    first = await export_json(*argv, "--workers", "2")
    assert first["exit_code"] == 0 and first["workers"] == 2
    fixture_server.requests.clear()
    again = await export_json(*argv, "--workers", "2")
    assert again["up_to_date"] is True and again["exit_code"] == 0
    assert again["requests"] == 2 and sum(fixture_server.requests.values()) == 2


async def export_json(*argv: str) -> dict[str, Any]:
    result = await run_cli_process("export", *argv, "--json", "--no-progress")
    data = json.loads(result.stdout)
    data.setdefault("exit_code", result.exit_code)
    return data


@pytest.mark.parametrize(
    ("cores", "expected"), [(1, 1), (2, 2), (3, 2), (4, 2), (6, 3), (16, 8), (64, 8)]
)
def test_auto_workers_one_shard_per_two_cores_two_on_small_machines(
    monkeypatch, cores: int, expected: int
) -> None:
    monkeypatch.setattr(runtime, "cpu_count", lambda: cores)
    assert shard.auto_workers() == expected


async def test_the_default_is_one_shard_per_two_cores(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    """No ``--workers``: as many shards as ``auto_workers`` gives this machine (its cores
    as the affinity mask and cgroup quota allow); on one core, the ordinary export."""
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
    data = await export_json(*source, "-x", str(tmp_path / "dest"))
    assert data["exit_code"] == 0 and data["files"] > 0
    expected = shard.auto_workers()
    assert data.get("workers", 1) == expected
    assert len(data.get("shards", [None])) == expected


async def test_workers_zero_resolving_to_one_is_the_ordinary_export(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """``--workers 0`` where that means one shard: the single-process export, no shards."""
    monkeypatch.setattr(shard, "auto_workers", lambda: 1)
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
    argv = [*source, "-x", str(tmp_path / "dest"), "--workers", "0", "--json", "--no-progress"]
    assert await run_cli("export", *argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "workers" not in summary and summary["files"] > 0
    assert (tmp_path / "dest" / ".provenance" / "fix1.test.local" / "export.json").is_file()

    # A spec read from standard input is read once, not again by the ordinary export.
    monkeypatch.setattr(sys, "stdin", io.StringIO("/*\n"))
    spec_index = source.index("-t") + 1
    piped = [*source[:spec_index], "-", *source[spec_index + 1 :]]
    argv = [*piped, "-x", str(tmp_path / "piped"), "--workers", "0", "--json", "--no-progress"]
    assert await run_cli("export", *argv) == 0
    assert json.loads(capsys.readouterr().out)["files"] == summary["files"]


@pytest.mark.parametrize(
    ("jobs", "workers", "each"),
    [([], 2, "16"), (["-j", "16"], 2, "8"), (["-j", "5"], 2, "3"), (["-j", "1"], 4, "1")],
)
def test_the_shards_share_the_requests_in_flight(jobs: list[str], workers: int, each: str) -> None:
    """``-j`` (default 32) is the whole command's: each shard gets its part, rounded up."""
    from shrinkwrap_async.cli import build_parser
    from shrinkwrap_async.pipeline.workers import common_arguments

    args = build_parser().parse_args(["export", "-r", FIX1, "-f", "c", "-t", "s", *jobs])
    argv = common_arguments(args, "spec", workers)
    assert argv[argv.index("-j") + 1] == each


async def test_no_more_shards_than_requests_in_flight(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    """``-j 1`` keeps one request in flight: one process, whatever the cores."""
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
    data = await export_json(*source, "-x", str(tmp_path / "dest"), "-j", "1", "--workers", "3")
    assert data["exit_code"] == 0 and "workers" not in data
