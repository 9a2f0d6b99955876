"""1,000 requests in flight against nginx: no errors, bounded memory (peak RSS reported)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.testing.nginx import NginxServer
from shrinkwrap_async.testing.publish import Publisher
from shrinkwrap_async.testing.synthetic import Profile, build_tree

from . import harness as h
from .scenarios import Repo

MEMORY_BOUND_KIB = 1 << 20  # 1 GiB: generous; the point is "not proportional to the repository"


def load_export(
    repo: Repo, server: NginxServer, tmp_path: Path, *, compare_source: bool
) -> h.RunResult:
    ws = h.Workspace(tmp_path / "load", repo.keys_dir)
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[server.repository_url("@fqrn@")],
        keys_dir=repo.keys_dir,
        cache=ws.cache,
    )
    run = h.run_export(h.export_command(repo.fqrn, config, ws.dest, jobs=1000), timeout=3000)
    print(f"\n-j 1000 {repo.fqrn}: exit {run.returncode}, peak RSS {run.peak_rss_kib} KiB")
    assert run.returncode == 0, run.describe()
    summary = run.summary
    assert summary.get("failures") == [], summary.get("failures")
    if compare_source:
        assert h.compare_with_source(repo.source, ws.dest / repo.fqrn) == []
    assert h.unverified_objects(ws.dest / ".data", h.RepositoryIndex(repo.repository_dir)) == []
    assert run.peak_rss_kib < MEMORY_BOUND_KIB
    return run


def test_thousand_in_flight(large_repo: Repo, nginx: NginxServer, tmp_path: Path) -> None:
    load_export(large_repo, nginx, tmp_path, compare_source=True)


@pytest.mark.slow
def test_thousand_in_flight_100k_files(tmp_path: Path) -> None:
    fqrn = "load100k.test.local"
    tree = build_tree(Profile(100_000, 20, 20, 5, 4096, 8192), seed=5)
    Publisher(tmp_path / "out", fqrn).publish(tree)
    repo = Repo(tmp_path / "no-source", tmp_path / "out", fqrn)
    (tmp_path / "docroot").mkdir()
    (tmp_path / "docroot" / "cvmfs").mkdir()
    (tmp_path / "docroot" / "cvmfs" / fqrn).symlink_to(repo.repository_dir)
    with NginxServer(tmp_path / "docroot") as server:
        run = load_export(repo, server, tmp_path, compare_source=False)
    assert run.summary.get("files", 0) >= 100_000
