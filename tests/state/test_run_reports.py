"""What one ``export`` command reports for monitoring (``--metrics-file``, ``--log-json``),
with the default shards and in one process: written once per command, covering it all."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from shrinkwrap_async.pipeline import shard
from shrinkwrap_async.state.metrics import LAST_SUCCESS, read_samples
from shrinkwrap_async.testing.command_line import run_cli_process, source_arguments
from shrinkwrap_async.testing.servers import StaticServer

FIX1 = "fix1.test.local"


def parse(path: Path) -> dict[tuple[str, str], float]:
    return {
        (name, repo): float(value)
        for repo, values in read_samples(path).items()
        for name, value in values.items()
    }


def finish_events(log_file: Path) -> list[dict[str, object]]:
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    return [e for e in events if e.get("event") == "export.finish"]


@pytest.mark.parametrize("workers", [[], ["--workers", "1"]], ids=["default", "one-process"])
async def test_every_run_writes_its_metrics_and_finish_event_once(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path, workers: list[str]
) -> None:
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
    metrics, log_file = tmp_path / "shrinkwrap.prom", tmp_path / "events.jsonl"
    argv = [*source, "-x", str(tmp_path / "dest"), "--no-progress", "-q", *workers]
    argv += ["--metrics-file", str(metrics), "--log-json", str(log_file)]

    first = await run_cli_process("export", *argv, "--json")
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary.get("workers", 1) == (shard.auto_workers() if not workers else 1)
    samples = parse(metrics)
    assert samples[("shrinkwrap_exit_code", FIX1)] == 0
    assert samples[("shrinkwrap_files", FIX1)] == summary["files"] > 0
    # The duration is the command's, shards included, not the final pass's alone.
    assert samples[("shrinkwrap_duration_seconds", FIX1)] >= summary["elapsed"] - 0.01
    first_success = samples[(LAST_SUCCESS, FIX1)]
    (event,) = finish_events(log_file)
    assert event["exit_code"] == 0 and event["files"] == summary["files"]

    again = await run_cli_process("export", *argv)  # up to date: no shard, two requests
    assert again.exit_code == 0, again.stderr
    samples = parse(metrics)
    assert samples[(LAST_SUCCESS, FIX1)] > first_success
    assert samples[("shrinkwrap_exit_code", FIX1)] == 0
    events = finish_events(log_file)
    assert len(events) == 2 and events[1]["up_to_date"] is True


async def test_an_unreachable_server_is_reported(fixtures_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    source = source_arguments(tmp_path, dead, fixtures_dir / "keys", FIX1)
    config = Path(source[source.index("-f") + 1])
    config.write_text(config.read_text() + "CVMFS_MAX_RETRIES=0\nCVMFS_BACKOFF_INIT=0\n")
    metrics, log_file = tmp_path / "shrinkwrap.prom", tmp_path / "events.jsonl"
    argv = [*source, "-x", str(tmp_path / "dest"), "--no-progress", "-q"]
    argv += ["--metrics-file", str(metrics), "--log-json", str(log_file)]
    result = await run_cli_process("export", *argv)
    assert result.exit_code == 4, result.stderr
    samples = parse(metrics)
    assert samples[("shrinkwrap_exit_code", FIX1)] == 4
    assert (LAST_SUCCESS, FIX1) not in samples
    (event,) = finish_events(log_file)
    assert event["exit_code"] == 4


@pytest.mark.parametrize("workers", [[], ["--workers", "1"]], ids=["default", "one-process"])
async def test_gc_runs_after_an_up_to_date_export(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path, workers: list[str]
) -> None:
    """``-g`` collects garbage after any complete run, one with nothing to do included."""
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FIX1)
    dest = tmp_path / "dest"
    argv = [*source, "-x", str(dest), "--no-progress", "-q", *workers]
    assert (await run_cli_process("export", *argv)).exit_code == 0
    digest = "cc" * 20
    orphan = dest / ".data" / digest[:2] / digest[2:4] / f"{digest[4:]}.{'0' * 32}"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"an object no exported file uses")
    result = await run_cli_process("export", *argv, "-g", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["up_to_date"] is True
    assert not orphan.exists()
