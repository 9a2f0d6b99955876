"""Debian nginx serving a document root on 127.0.0.1, for tests and benchmarks.

``with NginxServer(docroot) as server: server.url`` starts ``/usr/sbin/nginx`` in the
foreground with its own configuration, pid, logs and temp paths in a private directory,
listening on a free loopback port only; leaving the block stops it.
"""

from __future__ import annotations

import os
from pathlib import Path

from shrinkwrap_async.testing.daemon import BinaryMissing, LoopbackDaemon, skip_if_missing

NGINX = "/usr/sbin/nginx"

__all__ = ["NGINX", "BinaryMissing", "NginxServer", "skip_if_missing"]

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


class NginxServer(LoopbackDaemon):
    binary = NGINX
    log_name = "error.log"
    start_timeout = 15.0

    def __init__(self, docroot: str | os.PathLike[str], *, workers: int = 2) -> None:
        super().__init__()
        self.docroot = Path(docroot).resolve()
        self.workers = workers

    def repository_url(self, fqrn: str) -> str:
        return f"{self.url}/cvmfs/{fqrn}"

    def prepare(self, binary: str, directory: Path) -> list[str]:
        # As root, workers would switch to "nobody" and might not read a private docroot.
        user_line = "user root root;" if os.geteuid() == 0 else ""
        config = directory / "nginx.conf"
        config.write_text(
            _CONFIG.format(
                workers=self.workers,
                user_line=user_line,
                tmp=directory,
                port=self.port,
                docroot=self.docroot,
            )
        )
        log = directory / self.log_name
        return [
            binary,
            "-p",
            str(directory),
            "-c",
            str(config),
            "-e",
            str(log),
            "-g",
            "daemon off;",
        ]
