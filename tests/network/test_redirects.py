"""HTTP redirects: a host error unless CVMFS_FOLLOW_REDIRECTS, then at most four, as the client."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.network.errors import TransferError
from shrinkwrap_async.network.fetcher import LEAN_HTTP_ENV, Fetcher
from shrinkwrap_async.testing.servers import StaticServer, serve_handler

from .conftest import FIX1, make_settings, stored_objects


def redirector(target: str, hops: int = 1) -> web.RequestHandler:  # type: ignore[type-arg]
    """Answers every GET with a 302: ``hops - 1`` times to itself, then to ``target``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        left = int(request.query.get("hops", hops)) - 1
        if left > 0:
            raise web.HTTPFound(f"{request.path}?hops={left}")
        raise web.HTTPFound(f"{target}{request.path}")

    return handle


@pytest.fixture(params=["lean", "aiohttp"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "aiohttp":
        monkeypatch.setenv(LEAN_HTTP_ENV, "0")
    return str(request.param)


async def test_a_redirect_is_a_host_error_by_default(
    fixture_server: StaticServer, fixture_docroot: Path, transport: str
) -> None:
    """Neither HTTP client follows it (aiohttp would, by itself): the request fails as the
    client's does, naming the redirect and the setting."""
    async with serve_handler("/{path:.*}", redirector(fixture_server.url)) as url:
        settings = make_settings(f"{url}/cvmfs/{FIX1}", max_retries=0)
        async with Fetcher(settings) as fetcher:
            with pytest.raises(TransferError) as caught:
                await fetcher.fetch_file(".cvmfspublished")
    message = str(caught.value)
    assert "HTTP 302" in message and "CVMFS_FOLLOW_REDIRECTS=yes" in message, message
    assert fixture_server.total_requests == 0


@pytest.mark.parametrize("hops", [1, 4])
async def test_followed_with_the_setting(
    fixture_server: StaticServer, fixture_docroot: Path, hops: int, transport: str
) -> None:
    objects = stored_objects(fixture_docroot / "cvmfs" / FIX1)[:5]
    async with serve_handler("/{path:.*}", redirector(fixture_server.url, hops)) as url:
        settings = make_settings(f"{url}/cvmfs/{FIX1}", follow_redirects=True)
        async with Fetcher(settings) as fetcher:
            manifest = await fetcher.fetch_file(".cvmfspublished")
            fetched = [await fetcher.fetch_object(o.digest, o.suffix) for o in objects]
    assert manifest == (fixture_docroot / "cvmfs" / FIX1 / ".cvmfspublished").read_bytes()
    assert fetched == [o.data for o in objects]
    assert fixture_server.total_requests == 1 + len(objects)


async def test_more_than_four_redirects_fail(fixture_server: StaticServer) -> None:
    async with serve_handler("/{path:.*}", redirector(fixture_server.url, 5)) as url:
        settings = make_settings(f"{url}/cvmfs/{FIX1}", follow_redirects=True, max_retries=0)
        async with Fetcher(settings) as fetcher:
            with pytest.raises(TransferError, match="more than 4 redirects"):
                await fetcher.fetch_file(".cvmfspublished")
    assert fixture_server.total_requests == 0


def test_the_setting_is_read(tmp_path: Path, fixtures_dir: Path) -> None:
    config = tmp_path / "client.conf"
    config.write_text(
        "CVMFS_SERVER_URL=http://127.0.0.1:8000/cvmfs/@fqrn@\n"
        f"CVMFS_KEYS_DIR={fixtures_dir / 'keys'}\nCVMFS_FOLLOW_REDIRECTS=yes\n"
    )
    assert ClientSettings.load([config], FIX1).follow_redirects
    config.write_text(config.read_text().replace("=yes", "=no"))
    assert not ClientSettings.load([config], FIX1).follow_redirects
