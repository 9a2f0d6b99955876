"""The real-tool fixtures and tools that tests compare against, and small shared test helpers.

The fixtures (repositories written by the real CVMFS 2.11.5 tools, and listings of what the
real cvmfs_shrinkwrap exported) live in ``shared/`` beside the project checkout, or wherever
``$SHRINKWRAP_SHARED`` points.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
from pathlib import Path
from types import ModuleType

from shrinkwrap_async.testing.servers import StaticServer

PROJECT = Path(__file__).resolve().parents[2]
FIXTURE_REPOS = ("fix1.test.local", "fix2.test.local", "fix3.test.local")


def shared_dir() -> Path:
    return Path(os.environ.get("SHRINKWRAP_SHARED", PROJECT.parent / "shared"))


def fixtures_dir() -> Path:
    return shared_dir() / "fixtures"


@functools.cache
def listing_tool() -> ModuleType:
    """``shared/tools/listing.py`` (dump and diff of exported trees) as a module."""
    path = shared_dir() / "tools" / "listing.py"
    spec = importlib.util.spec_from_file_location("listing", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"listing tool not found at {path} (set SHRINKWRAP_SHARED)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_client_config(
    directory: Path, server_url: str, keys_dir: Path, *, extra: str = ""
) -> Path:
    """A client config like the fixtures' runs used: DIRECT, owners mapped to 0 (``* 0``).

    ``server_url`` is the server root (``http://127.0.0.1:<port>``); the repository lives
    under ``/cvmfs/<fqrn>`` there.
    """
    directory.mkdir(parents=True, exist_ok=True)
    idmap = directory / "idmap"
    idmap.write_text("* 0\n")
    config = directory / "client.conf"
    config.write_text(
        f"CVMFS_SERVER_URL={server_url}/cvmfs/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\n"
        f"CVMFS_KEYS_DIR={keys_dir}\nCVMFS_CACHE_BASE={directory / 'cache'}\n"
        f"CVMFS_UID_MAP={idmap}\nCVMFS_GID_MAP={idmap}\n{extra}"
    )
    return config


def serve_revision(docroot: Path, fqrn: str, revision: int) -> None:
    """Serve fixture revision ``revision`` of ``fqrn`` from a writable copy in ``docroot``."""
    shutil.copyfile(
        fixtures_dir() / "revisions" / fqrn / str(revision) / ".cvmfspublished",
        docroot / "cvmfs" / fqrn / ".cvmfspublished",
    )


def data_requests(server: StaticServer) -> int:
    """Requests for file contents and chunks (not catalogs, certificates, history, meta)."""
    return sum(
        count
        for path, count in server.requests.items()
        if "/data/" in path and not path.endswith(("C", "X", "H", "M"))
    )
