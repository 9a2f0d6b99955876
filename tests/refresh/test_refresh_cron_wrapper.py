"""``conf/cron/shrinkwrap-async-cron``, the wrapper for cron and systemd, run as cron would."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.testing.servers import StaticServer

from .test_refresh_incremental import FQRN, Repo
from .test_refresh_signals import write_config

WRAPPER = Path(__file__).resolve().parents[2] / "conf" / "cron" / "shrinkwrap-async-cron"


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


async def run_wrapper(env: dict[str, str]) -> Finished:
    """The wrapper as cron runs it (the test's server answers on this event loop)."""
    process = await asyncio.create_subprocess_exec(
        "sh", str(WRAPPER), FQRN, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Finished(process.returncode, out.decode(), err.decode())


async def test_the_wrapper_exports_and_reports(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    bin_dir = tmp_path / "bin"  # this checkout's command, first on PATH
    bin_dir.mkdir()
    command = bin_dir / "shrinkwrap-async"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m shrinkwrap_async "$@"\n')
    command.chmod(0o755)
    logs, metrics = tmp_path / "logs", tmp_path / "metrics"
    metrics.mkdir()
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        env = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "SHRINKWRAP_CONFIG": str(config),
            "SHRINKWRAP_SPEC": str(repo.base / "all.spec"),
            "SHRINKWRAP_DEST": str(tmp_path / "dest"),
            "SHRINKWRAP_METRICS_DIR": str(metrics),
            "SHRINKWRAP_LOG_DIR": str(logs),
        }
        first = await run_wrapper(env)
        assert first.returncode == 0, first.stderr
        assert first.stdout == "" and first.stderr == ""  # cron mails only on trouble
        changes = (logs / f"{FQRN}.changes").read_text().splitlines()
        assert "A /README.txt" in changes and len(changes) > 100
        events = [json.loads(line)["event"] for line in (logs / f"{FQRN}.jsonl").open()]
        assert events[0] == "export.start" and events[-1] == "export.finish"
        prom = (metrics / f"shrinkwrap-{FQRN}.prom").read_text()
        assert f'shrinkwrap_exit_code{{repository="{FQRN}"}} 0' in prom

        again = await run_wrapper(env)
        assert again.returncode == 0, again.stderr
        assert (logs / f"{FQRN}.changes").read_text() == ""

        missing = {k: v for k, v in env.items() if k != "SHRINKWRAP_SPEC"}
        refused = await run_wrapper(missing)
        assert refused.returncode != 0 and "SHRINKWRAP_SPEC" in refused.stderr
    assert (tmp_path / "dest" / FQRN / "README.txt").is_file()
