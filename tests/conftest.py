"""Shared test fixtures: where the real-tool fixtures live, and a loopback web server."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shrinkwrap_async.testing import shared
from shrinkwrap_async.testing.servers import StaticServer

FIXTURES = shared.fixtures_dir()
FIXTURE_REPOS = shared.FIXTURE_REPOS


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real CernVM-FS 2.11.5 fixtures (../shared/fixtures)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"real-tool fixtures not found at {FIXTURES} (set SHRINKWRAP_SHARED)")
    return FIXTURES


@pytest.fixture
def fixture_docroot(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A document root with /cvmfs/<fqrn> copies of the fixture repositories.

    The copies are writable, so a test may swap manifests (revisions) or tamper with files.
    """
    docroot = tmp_path / "docroot"
    (docroot / "cvmfs").mkdir(parents=True)
    for fqrn in FIXTURE_REPOS:
        shutil.copytree(fixtures_dir / fqrn, docroot / "cvmfs" / fqrn, symlinks=True)
    return docroot


@pytest.fixture
async def fixture_server(fixture_docroot: Path) -> AsyncIterator[StaticServer]:
    """An aiohttp server on 127.0.0.1 serving the fixture repositories."""
    async with StaticServer(fixture_docroot) as server:
        yield server
