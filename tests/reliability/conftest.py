"""Session fixtures of the reliability suite: published repositories and a private nginx."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shrinkwrap_async.testing.nginx import NGINX, NginxServer, skip_if_missing

from .scenarios import Repo, make_repo


@pytest.fixture(scope="session")
def reliability_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="session")
def fault_repo(reliability_base: Path) -> Repo:
    """~150 small files, two chunked files, two nested catalogs, symlinks."""
    return make_repo(reliability_base / "faults")


@pytest.fixture(scope="session")
def large_repo(reliability_base: Path) -> Repo:
    """A generated tree of a few thousand entries, for kill and load tests."""
    files = int(os.environ.get("RELIABILITY_KILL_FILES", "1200"))
    return make_repo(reliability_base / "large", "large.test.local", files=files, big_files=4)


@pytest.fixture(scope="session")
def nginx(reliability_base: Path, fault_repo: Repo, large_repo: Repo) -> Iterator[NginxServer]:
    """One nginx serving both repositories (docroot with cvmfs/<fqrn> symlinks)."""
    skip_if_missing(NGINX)
    docroot = reliability_base / "docroot"
    (docroot / "cvmfs").mkdir(parents=True, exist_ok=True)
    for repo in (fault_repo, large_repo):
        link = docroot / "cvmfs" / repo.fqrn
        if not link.exists():
            link.symlink_to(repo.repository_dir)
    with NginxServer(docroot) as server:
        yield server
