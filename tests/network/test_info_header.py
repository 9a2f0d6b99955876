"""``CVMFS_SEND_INFO_HEADER=yes``: every request for a file's object or a catalog carries the
client's ``cvmfs-info`` header (the file's path, or the catalog's description), on the
built-in client and on aiohttp, in an export and in a pack streamed from the repository."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp import web

from shrinkwrap_async.testing.command_line import run_cli
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import write_client_config

FQRN = "fix1.test.local"


class RecordingServer(StaticServer):
    """Keeps the cvmfs-info header (or None) of every request, by path."""

    def __init__(self, docroot: Path) -> None:
        super().__init__(docroot)
        self.info: dict[str, set[str | None]] = defaultdict(set)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.info[request.match_info["path"]].add(request.headers.get("cvmfs-info"))
        return await super()._handle(request)


def _is_file_object(path: str) -> bool:
    """A file's content or a chunk: ``data/`` objects without a suffix letter."""
    return "/data/" in path and path[-1] in "0123456789abcdef"


@pytest.mark.parametrize("lean", ["1", "0"])
async def test_requests_name_what_they_fetch(
    fixture_docroot: Path, fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    lean: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("SHRINKWRAP_ASYNC_LEAN_HTTP", lean)
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    async with RecordingServer(fixture_docroot) as server:
        for sending in (False, True):
            config = write_client_config(
                tmp_path / f"config-{sending}", server.url, fixtures_dir / "keys",
                extra=f"CVMFS_SEND_INFO_HEADER={'yes' if sending else 'no'}\n",
            )  # fmt: skip
            server.info.clear()
            argv = ["-q", "-r", FQRN, "-f", str(config), "-t", str(spec)]
            assert await run_cli("export", *argv, "-x", str(tmp_path / f"dest-{sending}"),
                                 "--no-progress", "--workers", "1") == 0  # fmt: skip
            if not sending:
                assert set().union(*server.info.values()) == {None}
                continue
            data = {p: i for p, i in server.info.items() if "/data/" in p}
            catalogs = {p: i for p, i in data.items() if p.endswith("C")}
            files = {p: i for p, i in data.items() if _is_file_object(p)}
            assert catalogs and files
            for path, labels in catalogs.items():
                digest = path.rsplit("/", 2)[-2] + path.rsplit("/", 1)[-1][:-1]
                [label] = labels
                assert label is not None, path
                assert label.startswith(f"file%20catalog%20at%20{FQRN}:/"), label
                assert unquote(label).endswith(f" ({digest})"), label
            for path, labels in files.items():
                [label] = labels
                assert label is not None and label.startswith("/"), (path, label)
                exported = tmp_path / "dest-True" / FQRN / unquote(label).lstrip("/")
                assert os.path.lexists(exported), label  # a file of the repository
            # The root catalog's description names the root mount point.
            assert any(f"{FQRN}:/%20%28" in next(iter(labels)) for labels in catalogs.values())

            server.info.clear()
            packed = tmp_path / f"packed-{lean}.tar"
            assert await run_cli("pack", *argv, "--mtime", "1", "-o", str(packed)) == 0
            streamed = {p: i for p, i in server.info.items() if _is_file_object(p)}
            assert streamed
            assert all(None not in labels for labels in streamed.values()), streamed
