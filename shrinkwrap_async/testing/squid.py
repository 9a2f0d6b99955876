"""Debian squid as a caching forward proxy on 127.0.0.1, for integration tests.

``with SquidProxy() as squid: squid.url`` runs ``/usr/sbin/squid -N`` with its own
configuration (memory cache only, no disk cache, no ICP/HTCP, loopback clients only) in a
private directory, on a free loopback port; leaving the block stops it.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from shrinkwrap_async.testing.nginx import (
    BinaryMissing,
    free_loopback_port,
    require_binary,
    skip_if_missing,
    stop_process,
    wait_for_port,
)

SQUID = "/usr/sbin/squid"

__all__ = ["SQUID", "BinaryMissing", "SquidProxy", "skip_if_missing"]

_CONFIG = """\
http_port 127.0.0.1:{port}
{user_line}
pid_filename {tmp}/squid.pid
cache_log {tmp}/cache.log
access_log {tmp}/access.log squid
cache_store_log none
coredump_dir {tmp}
netdb_filename none
pinger_enable off
icp_port 0
htcp_port 0
snmp_port 0
visible_hostname localhost
shutdown_lifetime 0 seconds
dns_nameservers 127.0.0.1
udp_incoming_address 127.0.0.1
udp_outgoing_address 127.0.0.1
cache_mem 64 MB
maximum_object_size_in_memory 8 MB
acl localhost src 127.0.0.1/32
http_access allow localhost
http_access deny all
"""


class SquidProxy:
    def __init__(self) -> None:
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> str:
        """Squid's access log so far (one line per request: ``TCP_MISS/200``, ...)."""
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> SquidProxy:
        binary = require_binary(SQUID)
        self._tmp = tempfile.TemporaryDirectory(prefix="squid-")
        tmp = Path(self._tmp.name)
        self.port = free_loopback_port()
        user_line = ""
        if os.geteuid() == 0:
            # Squid refuses to run as root; let it switch to an unprivileged user that
            # owns the private directory.
            for name in ("proxy", "nobody"):
                try:
                    account = pwd.getpwnam(name)
                except KeyError:
                    continue
                os.chown(tmp, account.pw_uid, account.pw_gid)
                user_line = f"cache_effective_user {name}"
                break
        (tmp / "squid.conf").write_text(
            _CONFIG.format(port=self.port, tmp=tmp, user_line=user_line)
        )
        self._process = subprocess.Popen(
            [binary, "-N", "-f", str(tmp / "squid.conf")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
        )
        try:
            wait_for_port(self.port, self._process, tmp / "cache.log", timeout=30)
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

    def __enter__(self) -> SquidProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
