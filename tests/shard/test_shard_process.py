"""Shard processes: a fork behaves as the program would, and a stopped parent stops its shards."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web

from shrinkwrap_async.pipeline import shard_process
from shrinkwrap_async.pipeline.shard_process import ForkedShard, start_shard
from shrinkwrap_async.state.db import ABORTED, StateDB
from shrinkwrap_async.testing.command_line import (
    run_cli_process,
    source_arguments,
    start_cli_process,
)
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import serve_revision

from .test_shard_export import listing, snapshot

FIX1 = "fix1.test.local"
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="shards are forked on Linux")


def finished(process: shard_process.ShardProcess) -> tuple[int, str]:
    assert process.stdout is not None
    output = process.stdout.read()
    return process.wait(), output


@pytest.mark.parametrize(
    "argv",
    [
        ["recipe", "docker", "--fqrn", "sft.cern.ch"],  # output, exit 0
        ["export", "-r", "../../etc", "-t", "-", "-x", "/nonexistent"],  # usage error, exit 2
    ],
)
def test_a_forked_shard_gives_the_programs_output_and_exit_code(argv: list[str]) -> None:
    forked = start_shard(argv, dict(os.environ, **{shard_process.SPAWN_ENV: "0"}))
    spawned = start_shard(argv, dict(os.environ, **{shard_process.SPAWN_ENV: "1"}))
    assert isinstance(forked, ForkedShard) and not isinstance(spawned, ForkedShard)
    assert finished(forked) == finished(spawned)


def test_a_parent_with_other_threads_starts_programs_not_forks() -> None:
    """Forking copies one thread and every lock as it is: only a one-thread parent forks."""
    argv = ["recipe", "docker", "--fqrn", "sft.cern.ch"]
    env = {k: v for k, v in os.environ.items() if k != shard_process.SPAWN_ENV}
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        started = start_shard(argv, env)
    finally:
        release.set()
        other.join()
    assert not isinstance(started, ForkedShard)
    assert finished(started)[0] == 0
    if threading.active_count() == 1:  # pytest itself may run threads
        alone = start_shard(argv, env)
        assert isinstance(alone, ForkedShard) and finished(alone)[0] == 0


async def test_a_forked_shard_has_its_own_environment(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    """The config names the server through a variable that only the shard's environment
    holds: the export works in the shard and fails without that environment."""
    argv = source_arguments(tmp_path, "$SHARD_TEST_SERVER", fixtures_dir / "keys", FIX1)
    command = ["export", *argv, "-x", str(tmp_path / "dest"), "--no-progress", "-q"]
    env = dict(os.environ, SHARD_TEST_SERVER=fixture_server.url)
    assert "SHARD_TEST_SERVER" not in os.environ
    loop = asyncio.get_running_loop()
    with_variable = await loop.run_in_executor(None, finished, start_shard(command, env))
    assert with_variable == (0, "")
    without = await loop.run_in_executor(None, finished, start_shard(command, dict(os.environ)))
    assert without[0] != 0


async def test_a_forked_shard_logs_at_its_own_level(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The parent logs at INFO; a shard given -q says nothing, one without -q does."""
    handler = logging.StreamHandler(sys.stderr)
    logging.root.addHandler(handler)
    level = logging.root.level
    logging.root.setLevel(logging.INFO)
    try:
        argv = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
        loop = asyncio.get_running_loop()
        for dest, quiet in (("quiet", ["-q"]), ("chatty", [])):
            command = ["export", *argv, "-x", str(tmp_path / dest), "--no-progress", *quiet]
            shard = start_shard(command, dict(os.environ))
            assert (await loop.run_in_executor(None, finished, shard))[0] == 0
            said = capfd.readouterr().err
            assert ("INFO: exporting" in said) == (not quiet), said
    finally:
        logging.root.removeHandler(handler)
        logging.root.setLevel(level)


def test_poll_and_signal_of_a_forked_shard(fixtures_dir: Path, tmp_path: Path) -> None:
    """A shard stopped by a signal reports it as subprocess does (minus the signal)."""
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        argv = source_arguments(tmp_path, url, fixtures_dir / "keys", FIX1)
        shard = ForkedShard(["export", *argv, "-x", str(tmp_path / "dest"), "-q"], {})
        assert shard.poll() is None  # waiting for the manifest
        shard.send_signal(signal.SIGKILL)
        assert shard.wait() == -signal.SIGKILL
        assert shard.poll() == -signal.SIGKILL
        shard.send_signal(signal.SIGTERM)  # after its end: nothing to do, no error


class HeldDataServer(StaticServer):
    """Answers at once but for file contents and chunks, which wait for ``release``."""

    release: asyncio.Event
    held = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if "/data/" in path and not path.endswith(("C", "X", "H", "M")):
            self.requests[path] += 1
            self.held += 1
            await asyncio.wait_for(self.release.wait(), 120)
        return await super()._handle(request)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


async def test_sigterm_to_the_parent_stops_every_shard(
    fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    HeldDataServer.release = asyncio.Event()
    async with HeldDataServer(fixture_docroot) as server:
        argv = source_arguments(tmp_path, server.url, fixtures_dir / "keys", FIX1)
        process = await start_cli_process(
            "export", *argv, "-x", str(tmp_path / "dest"), "--workers", "2", "-q"
        )
        deadline = time.monotonic() + 60
        while server.held == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # a shard is fetching an object now
        shards = children_of(process.pid)
        assert shards, server.requests
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in shards}
        assert names <= {"shard 0/2", "shard 1/2"}, names  # what ps and top show
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 128 + signal.SIGTERM
        assert b"stopped by SIGTERM; a rerun resumes" in stderr
        server.release.set()
        for pid in shards:  # stopped and reaped by the parent before it ended
            assert not Path(f"/proc/{pid}").exists()
    # The run is in the destination's history as an ordinary export's would be.
    db = await StateDB.for_destination(tmp_path / "dest")
    try:
        run = await db.latest_run(FIX1)
        assert run is not None and run.status == ABORTED
        assert run.exit_code == 128 + signal.SIGTERM
        assert await db.last_export(FIX1) is None
    finally:
        await db.close()


async def test_a_publish_during_the_shards_does_not_mix_revisions(
    fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path
) -> None:
    """The repository moves on while the shards fetch: the shards and the step after them
    all export the revision the command verified first; the next run refreshes."""
    serve_revision(fixture_docroot, FIX1, 2)
    HeldDataServer.release = asyncio.Event()
    HeldDataServer.release.set()
    async with HeldDataServer(fixture_docroot) as server:
        argv = source_arguments(tmp_path, server.url, fixtures_dir / "keys", FIX1)
        expected = await run_cli_process(
            "export", *argv, "-x", str(tmp_path / "rev2"), "--workers", "1"
        )
        assert expected.exit_code == 0, expected.stderr
        HeldDataServer.release = asyncio.Event()
        server.held = 0
        dest = tmp_path / "dest"
        process = await start_cli_process("export", *argv, "-x", str(dest), "--workers", "2", "-q")
        deadline = time.monotonic() + 60
        while server.held == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the shards fetch revision 2's objects now
        assert server.held > 0
        serve_revision(fixture_docroot, FIX1, 3)  # published meanwhile
        HeldDataServer.release.set()
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        assert listing.diff(snapshot(tmp_path / "rev2", FIX1), snapshot(dest, FIX1)) == []
        db = await StateDB.for_destination(dest)
        try:
            recorded = await db.last_export(FIX1)
            assert recorded is not None and recorded.revision == 2
        finally:
            await db.close()
        again = await run_cli_process("export", *argv, "-x", str(dest), "-q", "--json")
        assert again.exit_code == 0 and json.loads(again.stdout)["revision"] == 3


def test_a_failed_fork_starts_the_program_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    argv = ["recipe", "docker", "--fqrn", "sft.cern.ch"]
    started = start_shard(argv, dict(os.environ, **{shard_process.SPAWN_ENV: "0"}))
    assert not isinstance(started, ForkedShard)
    code, output = finished(started)
    assert code == 0 and "sft.cern.ch" in output


@pytest.mark.parametrize("spawn", ["0", "1"], ids=["forked", "spawned"])
async def test_a_killed_parent_stops_its_shards_and_a_rerun_completes(
    fixture_docroot: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spawn: str,
) -> None:
    """SIGKILL leaves the parent no chance to stop its shards: the kernel sends them SIGTERM
    (they end their run as if stopped), and the next run completes the export."""
    monkeypatch.setenv(shard_process.SPAWN_ENV, spawn)
    HeldDataServer.release = asyncio.Event()
    async with HeldDataServer(fixture_docroot) as server:
        argv = source_arguments(tmp_path, server.url, fixtures_dir / "keys", FIX1)
        dest = tmp_path / "dest"
        process = await start_cli_process("export", *argv, "-x", str(dest), "--workers", "2", "-q")
        deadline = time.monotonic() + 60
        while server.held == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        shards = children_of(process.pid)
        assert shards, server.requests
        process.kill()
        await asyncio.wait_for(process.communicate(), 60)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in shards):
            assert time.monotonic() < deadline, "shards outlived their killed parent"
            await asyncio.sleep(0.05)
        server.release.set()
        rerun = await start_cli_process("export", *argv, "-x", str(dest), "-q")
        await asyncio.wait_for(rerun.communicate(), 120)
        assert rerun.returncode == 0
    assert (dest / FIX1).is_dir() and any((dest / FIX1).iterdir())
