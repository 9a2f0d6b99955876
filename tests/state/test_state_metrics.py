"""Prometheus textfile: format, merge by repository, last success kept across failures."""

from __future__ import annotations

import re
from pathlib import Path

from shrinkwrap_async.state.metrics import (
    LAST_SUCCESS,
    METRICS,
    RunMetrics,
    read_samples,
    update_metrics_file,
)

SAMPLE = re.compile(r'^([a-z_]+)\{repository="((?:[^"\\]|\\.)*)"\} (\S+)$')


def parse(path: Path) -> dict[tuple[str, str], float]:
    """Every sample line as (name, repository) -> value; comment lines checked too."""
    samples: dict[tuple[str, str], float] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            assert line.split()[2] in METRICS
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        samples[(match[1], match[2])] = float(match[3])
    return samples


def test_format_and_values(tmp_path: Path) -> None:
    path = tmp_path / "shrinkwrap.prom"
    update_metrics_file(
        path,
        RunMetrics(
            repository="fix1.test.local",
            exit_code=0,
            revision=3,
            files=166,
            bytes=7_000_000,
            duration_seconds=1.5,
            failures=0,
            finished_at=1_700_000_000.25,
        ),
    )
    samples = parse(path)
    repo = "fix1.test.local"
    assert samples[(LAST_SUCCESS, repo)] == 1_700_000_000.25
    assert samples[("shrinkwrap_revision", repo)] == 3
    assert samples[("shrinkwrap_files", repo)] == 166
    assert samples[("shrinkwrap_bytes", repo)] == 7_000_000
    assert samples[("shrinkwrap_duration_seconds", repo)] == 1.5
    assert samples[("shrinkwrap_failures", repo)] == 0
    assert samples[("shrinkwrap_exit_code", repo)] == 0
    assert "# TYPE shrinkwrap_revision gauge" in path.read_text()
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temp file left


def test_failure_keeps_last_success_and_other_repositories(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    update_metrics_file(path, RunMetrics("a.test", 0, revision=1, finished_at=100.0))
    update_metrics_file(path, RunMetrics("b.test", 0, revision=7, finished_at=200.0))
    update_metrics_file(path, RunMetrics("a.test", 1, revision=2, failures=4, finished_at=300.0))
    samples = parse(path)
    assert samples[(LAST_SUCCESS, "a.test")] == 100.0  # the failed run did not move it
    assert samples[("shrinkwrap_exit_code", "a.test")] == 1
    assert samples[("shrinkwrap_failures", "a.test")] == 4
    assert samples[("shrinkwrap_revision", "a.test")] == 2
    assert samples[(LAST_SUCCESS, "b.test")] == 200.0
    assert samples[("shrinkwrap_revision", "b.test")] == 7


def test_last_success_from_caller_and_label_escaping(tmp_path: Path) -> None:
    path = tmp_path / "m.prom"
    odd = 'we"ird\\repo'
    update_metrics_file(path, RunMetrics(odd, 4), last_success=42.0)
    assert read_samples(path)[odd][LAST_SUCCESS] == "42.0"
    assert parse(path)[("shrinkwrap_exit_code", 'we\\"ird\\\\repo')] == 4
