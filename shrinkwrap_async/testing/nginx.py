"""Debian nginx serving a document root on 127.0.0.1, for tests and benchmarks.

``with NginxServer(docroot) as server: server.url`` starts ``/usr/sbin/nginx`` in the
foreground with its own configuration, pid, logs and temp paths in a private directory,
listening on a free loopback port only; leaving the block stops it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

NGINX = "/usr/sbin/nginx"

__all__ = ["NGINX", "BinaryMissing", "NginxServer", "skip_if_missing"]

# -- helpers shared with the squid fixture -------------------------------------------


class BinaryMissing(RuntimeError):
    """The server binary is not installed; tests skip, scripts report it."""


def require_binary(path: str) -> str:
    if Path(path).is_file():
        return path
    found = shutil.which(Path(path).name)
    if found is None:
        raise BinaryMissing(f"{path} is not installed")
    return found


def skip_if_missing(path: str) -> str:
    """For tests: the binary's path, or ``pytest.skip`` when it is absent."""
    try:
        return require_binary(path)
    except BinaryMissing as error:
        import pytest

        pytest.skip(str(error))
        raise  # unreachable; keeps type checkers happy


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"server exited with {process.returncode}: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within {timeout}s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- nginx ---------------------------------------------------------------------------

_CONFIG = """\
worker_processes {workers};
{user_line}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        root {docroot};
        location / {{ }}
    }}
}}
"""


class NginxServer:
    def __init__(self, docroot: str | os.PathLike[str], *, workers: int = 2) -> None:
        self.docroot = Path(docroot).resolve()
        self.workers = workers
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def repository_url(self, fqrn: str) -> str:
        return f"{self.url}/cvmfs/{fqrn}"

    def start(self) -> NginxServer:
        binary = require_binary(NGINX)
        self._tmp = tempfile.TemporaryDirectory(prefix="nginx-")
        tmp = Path(self._tmp.name)
        self.port = free_loopback_port()
        # As root, workers would switch to "nobody" and might not read a private docroot.
        user_line = "user root root;" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(
            _CONFIG.format(
                workers=self.workers,
                user_line=user_line,
                tmp=tmp,
                port=self.port,
                docroot=self.docroot,
            )
        )
        log = tmp / "error.log"
        command = [binary, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(log)]
        self._process = subprocess.Popen(
            [*command, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, self._process, log, timeout=15)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
