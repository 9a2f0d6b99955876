"""Debian squid as a caching forward proxy on 127.0.0.1, for integration tests.

``with SquidProxy() as squid: squid.url`` runs ``/usr/sbin/squid -N`` with its own
configuration (memory cache only, no disk cache, no ICP/HTCP, loopback clients only) in a
private directory, on a free loopback port; leaving the block stops it.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from shrinkwrap_async.testing.daemon import BinaryMissing, LoopbackDaemon, skip_if_missing

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


class SquidProxy(LoopbackDaemon):
    binary = SQUID
    log_name = "cache.log"
    start_timeout = 30.0

    @property
    def access_log(self) -> str:
        """Squid's access log so far (one line per request: ``TCP_MISS/200``, ...)."""
        if self.directory is None:
            return ""
        path = self.directory / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def prepare(self, binary: str, directory: Path) -> list[str]:
        user_line = ""
        if os.geteuid() == 0:
            # Squid refuses to run as root; let it switch to an unprivileged user that
            # owns the private directory.
            for name in ("proxy", "nobody"):
                try:
                    account = pwd.getpwnam(name)
                except KeyError:
                    continue
                os.chown(directory, account.pw_uid, account.pw_gid)
                user_line = f"cache_effective_user {name}"
                break
        config = directory / "squid.conf"
        config.write_text(_CONFIG.format(port=self.port, tmp=directory, user_line=user_line))
        return [binary, "-N", "-f", str(config)]
