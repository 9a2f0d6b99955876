"""Local faults: a destination that fills up, a read-only destination, two concurrent runs."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from shrinkwrap_async.cli import run_ending_error
from shrinkwrap_async.commands.export import ending_exit_code
from shrinkwrap_async.exitcodes import ExitCode
from shrinkwrap_async.pipeline.workers import DestinationState, record_stopped_run
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.metrics import read_samples
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy
from shrinkwrap_async.testing.nginx import NginxServer

from . import harness as h
from .scenarios import Repo


def _mount(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs as dest-base (the fault repository needs about 3 MiB)."""
    mountpoint = tmp_path / "ws" / "dest"
    if os.geteuid() != 0 or not _mount(mountpoint, "size=1m,mode=0755"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _command(repo: Repo, ws: h.Workspace, server_url: str) -> list[str]:
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[f"{server_url}/cvmfs/@fqrn@"],
        keys_dir=repo.keys_dir,
        cache=ws.cache,
    )
    return h.export_command(repo.fqrn, config, ws.dest, jobs=16)


def test_destination_full_exits_5_with_one_line(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path, small_tmpfs: Path
) -> None:
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    metrics = tmp_path / "shrinkwrap.prom"  # beside the full file system
    run = h.run_export([*_command(fault_repo, ws, nginx.url), "--metrics-file", str(metrics)])
    assert run.returncode == 5, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    # The shards say what failed; the command says once how it ended.
    assert run.stderr.count("finished with exit code 5") == 1, run.describe()
    # Monitoring sees the exit code the caller saw.
    assert read_samples(metrics)[fault_repo.fqrn]["shrinkwrap_exit_code"] == "5"


def _fill(directory: Path) -> None:
    """Write into ``directory`` until its file system is full."""
    descriptor = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(1024):  # 64 MiB at most: the tmpfs holds 1 MiB
            os.write(descriptor, bytes(65536))
    except OSError as error:
        assert error.errno == errno.ENOSPC
    else:
        pytest.fail("the file system never filled up")
    finally:
        os.close(descriptor)


def test_stopped_run_on_a_full_destination_keeps_the_shards_exit_code(
    small_tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Shards that failed on a full destination leave the parent a state database it cannot
    # write either: the run stays unrecorded, with one line, instead of ending in a traceback.
    _fill(small_tmpfs)
    root = SimpleNamespace(root_catalog=SimpleNamespace(hex="ab" * 20), revision=7)
    state = DestinationState(trusted=root, plan=SimpleNamespace(), requests=2)
    asyncio.run(record_stopped_run(small_tmpfs, "full.test", Spec.parse("/*\n"), state, 5))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "the stopped run is not recorded" in lines[0], lines


def test_a_full_sqlite_database_is_a_storage_error(small_tmpfs: Path) -> None:
    _fill(small_tmpfs)
    db = sqlite3.connect(small_tmpfs / "state.sqlite")
    with pytest.raises(sqlite3.Error) as raised:
        db.execute("CREATE TABLE t (x BLOB)")
        db.execute("INSERT INTO t VALUES (zeroblob(1000000))")
        db.commit()
    db.close()
    final = run_ending_error(raised.value)
    assert final is not None and final.exit_code == ExitCode.STORAGE, raised.value
    # What the metrics and the finish event record when it ends a run.
    assert ending_exit_code(raised.value, ExitCode.PARTIAL) == ExitCode.STORAGE
    assert ending_exit_code(ValueError("a bug"), ExitCode.PARTIAL) == ExitCode.PARTIAL


def test_destination_fills_up_nothing_partial_then_rerun(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path, small_tmpfs: Path
) -> None:
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    assert ws.dest == small_tmpfs
    run = h.run_export(_command(fault_repo, ws, nginx.url))
    assert run.returncode != 0, run.describe()
    index = h.RepositoryIndex(fault_repo.repository_dir)
    assert h.unverified_objects(ws.dest / ".data", index) == []
    tree = ws.dest / fault_repo.fqrn
    if tree.is_dir():  # no partial file under a final name
        wrong = [p for p in h.compare_with_source(fault_repo.source, tree) if "missing" not in p]
        assert wrong == []
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    rerun = h.run_export(_command(fault_repo, ws, nginx.url))
    assert rerun.returncode == 0, rerun.describe()
    assert h.compare_with_source(fault_repo.source, tree) == []
    assert h.unverified_objects(ws.dest / ".data", index) == []
    assert h.leftover_temporaries(ws.dest) == []


def test_a_full_disk_under_the_changes_list_exits_5_and_the_rerun_completes(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    full = tmp_path / "logs"
    if os.geteuid() != 0 or not _mount(full, "size=64k,mode=0755"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _fill(full)
        ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
        changes = full / "last.changes"
        command = [*_command(fault_repo, ws, nginx.url), "--changes", str(changes)]
        run = h.run_export(command)
        assert run.returncode == 5, run.describe()
        lines = [line for line in run.stderr.splitlines() if "--changes list" in line]
        assert lines and f"cannot write the --changes list {changes}" in lines[0], run.describe()
        assert "No space left on device" in lines[0] and "Traceback" not in run.stderr
        (full / "filler").unlink()
        rerun = h.run_export(command)
        assert rerun.returncode == 0, rerun.describe()
        tree = ws.dest / fault_repo.fqrn
        assert h.compare_with_source(fault_repo.source, tree) == []
        assert h.leftover_temporaries(ws.dest) == []
        listed = {line.split(" ", 1)[1] for line in changes.read_text().splitlines()}
        assert listed <= {"/" + p.relative_to(tree).as_posix() for p in tree.rglob("*")}
    finally:
        subprocess.run(["umount", "-l", str(full)], check=False)


def test_read_only_destination(fault_repo: Repo, nginx: NginxServer, tmp_path: Path) -> None:
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    if os.geteuid() != 0 or not _mount(ws.dest, "size=16m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(ws.dest)], check=True)
        run = h.run_export(_command(fault_repo, ws, nginx.url))
        assert run.returncode == 5, run.describe()
        assert "Read-only" in run.stderr or "read-only" in run.stderr, run.describe()
    finally:
        subprocess.run(["umount", "-l", str(ws.dest)], check=False)


async def test_second_concurrent_run_exits_75(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    # The first run hangs on its first requests (a proxy that stays silent for 20 s).
    async with FaultProxy(faults={Fault.STALL: 1.0}, stall_seconds=20.0) as proxy:
        slow_config = h.write_config(
            ws.root / "slow.conf",
            server_urls=[f"{nginx.url}/cvmfs/@fqrn@"],
            keys_dir=fault_repo.keys_dir,
            cache=ws.root / "cache-slow",
            proxy=proxy.url,
            extra={"CVMFS_TIMEOUT": "30"},
        )
        first = asyncio.create_task(
            asyncio.to_thread(
                h.run_export, h.export_command(fault_repo.fqrn, slow_config, ws.dest), timeout=60
            )
        )
        while proxy.requests == 0:
            await asyncio.sleep(0.05)
        second = await asyncio.to_thread(h.run_export, _command(fault_repo, ws, nginx.url))
        first.cancel()
    assert second.returncode == 75, second.describe()


@pytest.mark.parametrize("form", [["-o", "image.tar.gz"], ["--format", "oci", "-o", "image"]])
def test_a_pack_onto_a_full_file_system_exits_5_and_leaves_nothing(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path, small_tmpfs: Path, form: list[str]
) -> None:
    """The repository's ~3 MiB do not fit the 1 MiB file system: one line, exit 5, and
    neither the output nor a temporary file or directory is left there."""
    ws = h.Workspace(tmp_path / "elsewhere", fault_repo.keys_dir)
    assert h.run_export(_command(fault_repo, ws, nginx.url)).returncode == 0
    *options, _, name = form
    pack = [sys.executable, "-m", "shrinkwrap_async", "pack", "-r", fault_repo.fqrn,
            "-x", str(ws.dest), *options, "-o", str(small_tmpfs / name)]  # fmt: skip
    done = subprocess.run(pack, capture_output=True, text=True)
    assert done.returncode == 5, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"shrinkwrap-async: error: cannot write {small_tmpfs / name}: No space left on device"
    ]
    assert list(small_tmpfs.iterdir()) == []
