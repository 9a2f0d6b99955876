"""A proxy named by a host with several addresses is several proxies, as in the client.

Sites often name their Squids by one DNS alias with an address per machine
(``CVMFS_HTTP_PROXY=http://squid.example.org:3128``). The client resolves each proxy's
host name once and makes every address a member of that proxy's load-balance group (its
URL rewritten to the address), so that load is spread over the machines and a failing one
is burned and skipped like any other proxy (format §10.3). Connecting by name would send
every request to the first address the resolver returns and fail over nowhere.

- Names are looked up first in the hosts file named by ``HOST_ALIASES`` (the client's
  resolver reads it, or ``/etc/hosts``, before asking DNS); otherwise the system resolver
  answers (``/etc/hosts``, then DNS), within ``CVMFS_DNS_TIMEOUT`` per try and
  ``CVMFS_DNS_RETRIES`` more tries.
- IPv4 addresses are used when the name has any, unless ``CVMFS_IPFAMILY_PREFER=6``.
- ``CVMFS_MAX_IPADDR_PER_PROXY`` > 0 keeps that many addresses, chosen at random.
- A name that does not resolve stays a member by name: its requests fail, it is burned,
  and the next proxy is used (the client keeps it too).

Resolution happens once, when a fetcher starts; a run does not follow DNS changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shrinkwrap_async.config.settings import (
    BUILTIN_DNS_RETRIES,
    BUILTIN_DNS_TIMEOUT,
    ClientSettings,
)
from shrinkwrap_async.network.endpoints import DIRECT

log = logging.getLogger(__name__)

HOSTS_FILE_ENV = "HOST_ALIASES"

Resolve = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class AddressPolicy:
    """Which of a proxy name's addresses become members (settings of the client)."""

    max_per_proxy: int = 0  # CVMFS_MAX_IPADDR_PER_PROXY; 0: all
    prefer_ipv6: bool = False  # CVMFS_IPFAMILY_PREFER=6
    dns_timeout: float = BUILTIN_DNS_TIMEOUT  # CVMFS_DNS_TIMEOUT, per try
    dns_retries: int = BUILTIN_DNS_RETRIES  # CVMFS_DNS_RETRIES

    @classmethod
    def of(cls, settings: ClientSettings) -> AddressPolicy:
        return cls(
            max_per_proxy=settings.max_ipaddr_per_proxy,
            prefer_ipv6=settings.prefer_ipv6,
            dns_timeout=settings.dns_timeout,
            dns_retries=settings.dns_retries,
        )


def address_family(host: str) -> int | None:
    """4 or 6 for an IP address, None for a name."""
    for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return version
    return None


def is_address(host: str) -> bool:
    return address_family(host) is not None


def with_address(proxy: str, address: str) -> str:
    """``http://name:3128`` with ``address`` in place of the name (IPv6 in brackets)."""
    parts = urlsplit(proxy)
    host = f"[{address}]" if ":" in address else address
    return f"{parts.scheme}://{host}:{parts.port}"


def read_hosts_file(path: Path) -> dict[str, list[str]]:
    """Addresses per name (lower case) of a hosts(5) file, in the file's order."""
    names: dict[str, list[str]] = {}
    for line in path.read_text(errors="replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not is_address(fields[0]):
            continue
        for name in fields[1:]:
            addresses = names.setdefault(name.lower().rstrip("."), [])
            if fields[0] not in addresses:
                addresses.append(fields[0])
    return names


def choose_addresses(
    addresses: Iterable[str], policy: AddressPolicy, rng: random.Random
) -> list[str]:
    """The addresses that become members: one family (IPv4 unless IPv6 is preferred and
    present), in sorted order as the client holds them, at most ``max_per_proxy`` of them
    chosen at random."""
    unique = sorted(set(addresses))
    ipv4 = [a for a in unique if address_family(a) == 4]
    ipv6 = [a for a in unique if address_family(a) == 6]
    chosen = (ipv6 or ipv4) if policy.prefer_ipv6 else (ipv4 or ipv6)
    if 0 < policy.max_per_proxy < len(chosen):
        chosen = sorted(rng.sample(chosen, policy.max_per_proxy))
    return chosen


class ProxyResolver:
    """Looks proxy host names up: the ``HOST_ALIASES`` file, then the system resolver."""

    def __init__(self, policy: AddressPolicy, hosts_file: Path | None = None) -> None:
        self.policy = policy
        if hosts_file is None and os.environ.get(HOSTS_FILE_ENV):
            hosts_file = Path(os.environ[HOSTS_FILE_ENV])
        self._hosts: dict[str, list[str]] = {}
        if hosts_file is not None:
            try:
                self._hosts = read_hosts_file(hosts_file)
            except OSError as error:
                log.warning("cannot read hosts file %s: %s", hosts_file, error.strerror)

    async def resolve(self, name: str) -> list[str]:
        """The addresses of ``name``; raises OSError when it has none."""
        listed = self._hosts.get(name.lower().rstrip("."))
        if listed:
            return list(listed)
        loop = asyncio.get_running_loop()
        for _ in range(1 + max(0, self.policy.dns_retries)):
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(name, None, type=socket.SOCK_STREAM),
                    self.policy.dns_timeout or None,
                )
            except TimeoutError:
                continue
            return [str(info[4][0]) for info in infos]
        raise OSError(f"no answer within {self.policy.dns_timeout:g} s")


async def expand_proxy_groups(
    groups: Sequence[Sequence[str]],
    policy: AddressPolicy,
    rng: random.Random,
    resolve: Resolve,
) -> tuple[tuple[str, ...], ...]:
    """``groups`` with each proxy named by a host name replaced by one member per chosen
    address (DIRECT and proxies given by address stay as they are)."""
    names = {
        member: host
        for group in groups
        for member in group
        if member != DIRECT and (host := urlsplit(member).hostname) and not is_address(host)
    }
    if not names:
        return tuple(tuple(group) for group in groups)
    answers = await asyncio.gather(
        *(resolve(host) for host in names.values()), return_exceptions=True
    )
    members: dict[str, list[str]] = {}
    for proxy, answer in zip(names, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, OSError):
                raise answer
            log.warning("cannot resolve proxy %s (%s); trying it by name", proxy, answer)
            continue
        chosen = choose_addresses(answer, policy, rng)
        if chosen:
            members[proxy] = [with_address(proxy, address) for address in chosen]
            if len(chosen) > 1:
                log.info("proxy %s: %d addresses, %s", proxy, len(chosen), ", ".join(chosen))
    expanded = []
    for group in groups:
        out: list[str] = []
        for member in group:
            for new in members.get(member, [member]):
                if new not in out:
                    out.append(new)
        expanded.append(tuple(out))
    return tuple(expanded)
