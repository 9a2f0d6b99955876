"""The loopback-daemon base of the nginx and squid fixtures, with a small Python server."""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import pytest

from shrinkwrap_async.testing.daemon import LoopbackDaemon

SERVER = """
import http.server, pathlib, sys
pathlib.Path("served.txt").write_text("hello")  # in the daemon's own directory (cwd)
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


class PythonServer(LoopbackDaemon):
    binary = sys.executable
    log_name = "server.log"
    start_timeout = 30.0

    def __init__(self, script: str) -> None:
        super().__init__()
        self.script = script
        self.prepared_in: Path | None = None

    def prepare(self, binary: str, directory: Path) -> list[str]:
        self.prepared_in = directory
        (directory / "server.py").write_text(self.script)
        return [binary, str(directory / "server.py"), str(self.port)]


def test_serves_from_its_directory_and_cleans_up() -> None:
    with PythonServer(SERVER) as server:
        directory = server.directory
        assert directory is not None and directory.is_dir()
        assert server.url == f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{server.url}/served.txt", timeout=10) as response:
            assert response.read() == b"hello"
    assert server.directory is None and not directory.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.url}/served.txt", timeout=10)


def test_a_daemon_that_exits_at_start_is_reported_and_cleaned_up() -> None:
    failing = "open('server.log', 'w').write('bad configuration line 3'); raise SystemExit(7)"
    server = PythonServer(failing)
    with pytest.raises(RuntimeError, match="exited with 7: bad configuration line 3"):
        server.start()
    assert server.directory is None
    assert server.prepared_in is not None and not server.prepared_in.exists()
