"""Stopping an export with SIGTERM/SIGKILL in a subprocess, and resuming it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from aiohttp import web

from shrinkwrap_async.state.db import StateDB
from shrinkwrap_async.state.lock import RunLock
from shrinkwrap_async.testing.command_line import start_cli_process
from shrinkwrap_async.testing.servers import StaticServer

from .test_refresh_incremental import FQRN, Repo, tree_problems

DATA_DELAY = 0.02  # seconds per object request: the export lasts long enough to be stopped


class SlowServer(StaticServer):
    """Serves data objects slowly, and only while ``open`` is set (else 503)."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if "/data/" in request.match_info["path"]:
            await asyncio.sleep(DATA_DELAY)
        return await super()._handle(request)


def write_config(repo: Repo, server: StaticServer) -> Path:
    config = repo.base / f"{FQRN}.conf"
    config.write_text(
        f"CVMFS_SERVER_URL={server.url}/cvmfs/@fqrn@\n"
        "CVMFS_HTTP_PROXY=DIRECT\n"
        f"CVMFS_KEYS_DIR={repo.publisher.keys_dir}\n"
        f"CVMFS_CACHE_BASE={repo.base / 'cache'}\n"
    )
    spec = repo.base / "all.spec"
    spec.write_text("/*\n")
    return config


async def start_export(repo: Repo, config: Path, dest: str) -> asyncio.subprocess.Process:
    return await start_cli_process(
        "export", "-r", FQRN, "-f", str(config), "-t", str(repo.base / "all.spec"),
        "-x", str(repo.base / dest), "-j", "2", "--no-progress", "-q",
    )  # fmt: skip


def committed_objects(dest: Path) -> set[str]:
    data = dest / ".data"
    return {
        p.relative_to(data).as_posix()
        for p in data.rglob("*")
        if p.is_file() and not p.relative_to(data).as_posix().startswith(".tmp")
    }


async def wait_for_objects(dest: Path, count: int) -> None:
    for _ in range(600):
        if (dest / ".data").is_dir() and len(committed_objects(dest)) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the export did not commit objects in time")


def content_path(name: str) -> str:
    """Request path of an unchunked object from its .data name (XX/YY/rest.meta)."""
    content = name[:2] + name[3:5] + name[6:].split(".")[0]
    return f"cvmfs/{FQRN}/data/{content[:2]}/{content[2:]}"


async def test_sigterm_stops_cleanly_and_sigkill_resumes(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    dest = tmp_path / "dest"
    async with SlowServer(repo.base / "server") as server:
        config = write_config(repo, server)
        process = await start_export(repo, config, "dest")
        await wait_for_objects(dest, 5)
        process.send_signal(signal.SIGTERM)
        _, stderr = await process.communicate()
        assert process.returncode == 128 + signal.SIGTERM, stderr.decode()
        assert b"stopped by SIGTERM" in stderr
        with RunLock.for_destination(dest):  # released: acquirable at once
            pass
        db = await StateDB.for_destination(dest)
        try:
            run = await db.latest_run(FQRN)
            assert run is not None and run.status == "aborted"
            assert run.exit_code == 128 + signal.SIGTERM
            assert await db.last_export(FQRN) is None
        finally:
            await db.close()

        # Resume, then kill it hard in the middle.
        process = await start_export(repo, config, "dest")
        before = len(committed_objects(dest))
        await wait_for_objects(dest, before + 5)
        process.send_signal(signal.SIGKILL)
        await process.communicate()
        assert process.returncode == -signal.SIGKILL
        survived = committed_objects(dest)

        # The next run continues: no committed object is downloaded again.
        server.requests.clear()
        process = await start_export(repo, config, "dest")
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
        requested = set(server.requests)
        again = {name for name in survived if content_path(name) in requested}
        assert again == set()
        assert not any((dest / ".data" / ".tmp").iterdir())
    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "fresh", "fresh-cache")
    assert tree_problems(tmp_path / "fresh", dest) == []
    assert committed_objects(tmp_path / "fresh") <= committed_objects(dest)


async def test_second_run_exits_75_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    async with SlowServer(repo.base / "server") as server:
        config = write_config(repo, server)
        dest = tmp_path / "dest"
        with RunLock.for_destination(dest):
            process = await start_export(repo, config, "dest")
            _, stderr = await process.communicate()
        assert process.returncode == 75
        assert b"another run holds the lock" in stderr
        assert os.path.exists(dest / ".provenance" / "lock")


class NoDataServer(StaticServer):
    """Serves the manifest, certificate and catalogs, but 503 for every file object."""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if "/data/" in path and not path.endswith(("C", "X")):
            self.requests[path] += 1
            raise web.HTTPServiceUnavailable()
        return await super()._handle(request)


async def test_nothing_fetchable_exits_4_and_a_rerun_completes(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    async with NoDataServer(repo.base / "server") as server:
        config = write_config(repo, server)
        with config.open("a") as f:
            f.write("CVMFS_MAX_RETRIES=0\nCVMFS_BACKOFF_INIT=0\n")
        process = await start_export(repo, config, "dest")
        _, stderr = await process.communicate()
        assert process.returncode == 4, stderr.decode()
        assert b"no object could be fetched" in stderr
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        process = await start_export(repo, config, "dest")
        _, stderr = await process.communicate()
        assert process.returncode == 0, stderr.decode()
