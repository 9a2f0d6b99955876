"""GETs on the lean client: root files, the certificate, catalogs and streamed objects.

An unchanged repository costs two small GETs; they must not pay for aiohttp's import.
Catalogs are fetched whole when small, and streamed when announced larger than the lean
limit; data objects are fetched whole up to their own limit, else streamed. None of it
needs aiohttp on a plain http:// route.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shrinkwrap_async.network import fetcher as fetcher_module
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing import nginx

from .conftest import FIX1, MemorySink, make_settings, stored_objects

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.hashing import Digest
    from shrinkwrap_async.network.fetcher import Fetcher

    async def main(url, certificate, catalog):
        settings = ClientSettings.for_repository(sys.argv[4], url, ())
        async with Fetcher(settings) as fetcher:
            for name in (".cvmfswhitelist", ".cvmfspublished"):
                await fetcher.fetch_file(name, max_size=1 << 20)
            await fetcher.fetch_object(Digest.from_hex(certificate), "X", max_size=1 << 20)
            before_catalog = "aiohttp" in sys.modules

            class Sink:
                def __init__(self):
                    self.pieces = []
                async def write(self, piece):
                    self.pieces.append(piece)
                async def commit(self):
                    return b"".join(self.pieces)
                async def discard(self):
                    pass

            body = await fetcher.stream_object(Digest.from_hex(catalog), "C", Sink)
            return {
                "aiohttp_before_catalog": before_catalog,
                "requests": fetcher.stats.requests,
                "lean_pools": len(fetcher._lean_pools),
                "sessions": len(fetcher._sessions),
                "catalog_bytes": len(body),
            }

    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))))
    """
)


def _one(objects, suffix):
    return next(o for o in objects if o.suffix == suffix)


def test_root_files_certificate_and_catalog_never_import_aiohttp(fixture_docroot: Path) -> None:
    nginx.skip_if_missing(nginx.NGINX)
    objects = stored_objects(fixture_docroot / "cvmfs" / FIX1)
    certificate, catalog = _one(objects, "X"), _one(objects, "C")
    with nginx.NginxServer(fixture_docroot) as origin:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                origin.repository_url(FIX1),
                certificate.digest.hex,
                catalog.digest.hex,
                FIX1,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome == {
        "aiohttp_before_catalog": False,
        "requests": 4,
        "lean_pools": 1,
        "sessions": 0,
        "catalog_bytes": len(catalog.data),
    }


async def test_catalog_over_the_lean_limit_is_streamed(
    fixture_docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nginx.skip_if_missing(nginx.NGINX)
    catalog = _one(stored_objects(fixture_docroot / "cvmfs" / FIX1), "C")
    monkeypatch.setattr(fetcher_module, "LEAN_CATALOG_SIZE", 16)
    log: list[str] = []
    with nginx.NginxServer(fixture_docroot) as origin:
        async with Fetcher(make_settings(origin.repository_url(FIX1))) as fetcher:
            body = await fetcher.stream_object(
                catalog.digest, catalog.suffix, lambda: MemorySink(log)
            )
            assert body == catalog.data
            # the lean GET was refused after its head, then one streamed GET
            assert fetcher.stats.requests == 2 and fetcher.stats.failures == 0
            assert fetcher._lean_pools and not fetcher._sessions
            again = await fetcher.stream_object(
                catalog.digest, catalog.suffix, lambda: MemorySink(log)
            )
            assert again == catalog.data
            assert fetcher.stats.requests == 4  # each object asks lean first
    assert log == ["commit", "commit"]


async def test_catalog_with_a_bad_body_is_not_committed(
    fixture_docroot: Path,
) -> None:
    nginx.skip_if_missing(nginx.NGINX)
    catalog = _one(stored_objects(fixture_docroot / "cvmfs" / FIX1), "C")
    catalog.path.write_bytes(catalog.data[:-1] + bytes([catalog.data[-1] ^ 1]))
    log: list[str] = []
    with nginx.NginxServer(fixture_docroot) as origin:
        async with Fetcher(make_settings(origin.repository_url(FIX1))) as fetcher:
            with pytest.raises(fetcher_module.ObjectCorruptError):
                await fetcher.stream_object(catalog.digest, catalog.suffix, lambda: MemorySink(log))
    assert "commit" not in log


async def test_data_objects_are_fetched_whole_or_streamed_without_aiohttp(
    fixture_docroot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data object streamed into a sink (the export's path for objects over 256 KiB) is
    one whole lean GET when its size is known to be small enough, else a lean stream."""
    nginx.skip_if_missing(nginx.NGINX)
    stored = next(o for o in stored_objects(fixture_docroot / "cvmfs" / FIX1) if o.suffix == "")
    log: list[str] = []
    with nginx.NginxServer(fixture_docroot) as origin:
        async with Fetcher(make_settings(origin.repository_url(FIX1))) as fetcher:
            size = len(stored.data) * 4  # an upper bound of the inflated size
            body = await fetcher.stream_object(
                stored.digest, stored.suffix, lambda: MemorySink(log), size_hint=size
            )
            assert body == stored.data
            assert fetcher._lean_pools and not fetcher._sessions
            assert fetcher.stats.requests == 1
            monkeypatch.setattr(fetcher_module, "LEAN_OBJECT_SIZE", size - 1)
            again = await fetcher.stream_object(
                stored.digest, stored.suffix, lambda: MemorySink(log), size_hint=size
            )
            assert again == stored.data
            assert fetcher.stats.requests == 2  # streamed at once, no whole GET first
            assert not fetcher._sessions
    assert log == ["commit", "commit"]
