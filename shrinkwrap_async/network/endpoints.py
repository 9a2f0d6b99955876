"""Server list, proxy groups and the shared failover state.

The state is global (one per :class:`~shrinkwrap_async.network.fetcher.Fetcher`), but every
request decides for itself: it asks for an ordering of hosts and of proxies when it starts
and reports failures with the time it *started* using that endpoint. A failure report is
ignored if the endpoint's state changed after that time, so a slow request cannot undo or
repeat a switch another request already made (the client's "only switch if the current
proxy is still the one I used", §10.5).

Semantics, as in the client (§10.2, §10.3):

- a failed proxy is *burned* for ``proxy_reset_after`` seconds (0 = until every proxy is
  burned, then all are reset: the client's wrap-around);
- load is spread by choosing at random among the live members of the first group that has
  any; burned members come last;
- a failed host is skipped for ``host_reset_after`` seconds (same rule for 0).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DIRECT = "DIRECT"


@dataclass(frozen=True, slots=True)
class Route:
    """One way to reach an object: a host (base URL) and a proxy (``None`` = DIRECT).

    ``external``: a host of the external-data chain (``CVMFS_EXTERNAL_URL``), which has
    timeouts of its own and so connection pools of its own. ``endpoint`` is the connection
    pool this route uses: the proxy, or the host's origin (worked out once: every request
    counts itself under it).
    """

    host: str
    proxy: str | None
    external: bool = False
    endpoint: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        endpoint = self.proxy if self.proxy is not None else origin(self.host)
        object.__setattr__(self, "endpoint", endpoint)

    @property
    def pool_key(self) -> str:
        """The key of this route's connection pool (an endpoint, per chain)."""
        return f"external {self.endpoint}" if self.external else self.endpoint

    def __str__(self) -> str:
        return f"{self.host} via {self.proxy or DIRECT}"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_name(url: str) -> str:
    """Host name only (no scheme, port or path), as the geo API wants it."""
    return urlsplit(url).hostname or url


class _BurnList:
    """When each key last failed, and when its state last changed (burn or reset)."""

    def __init__(self, keys: Iterable[str], reset_after: float, clock: Callable[[], float]):
        self.keys = list(dict.fromkeys(keys))
        self.reset_after = reset_after if reset_after > 0 else math.inf
        self._clock = clock
        self._burned_at: dict[str, float] = {}
        self._changed_at: dict[str, float] = {}

    def is_burned(self, key: str, now: float) -> bool:
        at = self._burned_at.get(key)
        if at is None:
            return False
        if now - at >= self.reset_after:
            del self._burned_at[key]
            self._changed_at[key] = now
            return False
        return True

    @property
    def any_burned(self) -> bool:
        return bool(self._burned_at)

    def burned_at(self, key: str) -> float:
        return self._burned_at.get(key, -math.inf)

    def fail(self, key: str, since: float) -> bool:
        """Burn ``key`` unless its state changed after ``since``; True if burned now."""
        now = self._clock()
        if self._changed_at.get(key, -math.inf) >= since or self.is_burned(key, now):
            return False
        self._burned_at[key] = now
        self._changed_at[key] = now
        if all(self.is_burned(k, now) for k in self.keys):
            # Everything is burned: wrap around and give every member a fresh chance.
            for k in self.keys:
                self._burned_at.pop(k, None)
                self._changed_at[k] = now
        return True


class FailoverState:
    """Hosts and proxy groups with their burn marks, shared by all requests."""

    def __init__(
        self,
        hosts: Sequence[str],
        proxy_groups: Sequence[Sequence[str]],
        *,
        proxy_reset_after: float = 0.0,
        host_reset_after: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not hosts:
            raise ValueError("no server URL")
        self.hosts: list[str] = list(hosts)
        self.clock = clock
        self._rng = rng or random.Random()
        self._proxy_reset_after = proxy_reset_after
        self.replace_proxy_groups(proxy_groups)
        self._hosts = _BurnList(self.hosts, host_reset_after, clock)

    def replace_proxy_groups(self, groups: Sequence[Sequence[str]]) -> None:
        """The proxy groups, with no burn marks (also later, before any request: a proxy
        name expanded to its addresses)."""
        kept = tuple(tuple(g) for g in groups if g)
        self.proxy_groups: tuple[tuple[str, ...], ...] = kept or ((DIRECT,),)
        self.uses_proxies = any(m != DIRECT for g in self.proxy_groups for m in g)
        members = [m for g in self.proxy_groups for m in g]
        self._proxies = _BurnList(members, self._proxy_reset_after, self.clock)

    @property
    def proxy_count(self) -> int:
        return len(self._proxies.keys)

    def reorder_hosts(self, order: Sequence[int]) -> None:
        """Apply a permutation (0-based indexes into the current list), e.g. from geo API."""
        if sorted(order) != list(range(len(self.hosts))):
            raise ValueError(f"not a permutation of {len(self.hosts)} hosts: {list(order)}")
        self.hosts = [self.hosts[i] for i in order]
        self._hosts.keys = list(self.hosts)

    def keep_first_hosts(self, count: int) -> None:
        """Only the first ``count`` hosts when ``count`` > 0 (``CVMFS_MAX_SERVERS``, applied
        after the geo order, as the client applies it)."""
        if 0 < count < len(self.hosts):
            self.hosts = self.hosts[:count]
            self._hosts.keys = list(self.hosts)

    def reorder_proxy_groups(self, first: int, order: Sequence[int]) -> None:
        """Apply a permutation to the groups from index ``first`` on (the fallback proxy
        groups, ordered by the geo API); the groups before stay as they are."""
        tail = self.proxy_groups[first:]
        if sorted(order) != list(range(len(tail))):
            raise ValueError(f"not a permutation of {len(tail)} proxy groups: {list(order)}")
        self.proxy_groups = (*self.proxy_groups[:first], *(tail[i] for i in order))

    def host_order(self) -> list[str]:
        """Live hosts in configured order, then burned ones, longest-burned first."""
        if not self._hosts.any_burned:  # every request asks: the common case costs a copy
            return list(self.hosts)
        now = self.clock()
        live = [h for h in self.hosts if not self._hosts.is_burned(h, now)]
        burned = sorted(
            (h for h in self.hosts if h not in live), key=lambda h: self._hosts.burned_at(h)
        )
        return live + burned

    def proxy_order(self) -> list[str | None]:
        """Every proxy once: live members group by group (shuffled), then burned ones.

        ``None`` stands for DIRECT.
        """
        if not self._proxies.any_burned and all(len(group) == 1 for group in self.proxy_groups):
            return [None if g[0] == DIRECT else g[0] for g in self.proxy_groups]
        now = self.clock()
        ordered: list[str] = []
        for group in self.proxy_groups:
            live = [m for m in group if not self._proxies.is_burned(m, now)]
            self._rng.shuffle(live)
            ordered.extend(live)
        burned = [m for m in self._proxies.keys if m not in ordered]
        burned.sort(key=self._proxies.burned_at)
        ordered.extend(burned)
        return [None if m == DIRECT else m for m in ordered]

    def current_proxy_group(self) -> int:
        """Index of the first group with a live member (what new requests start with)."""
        now = self.clock()
        for index, group in enumerate(self.proxy_groups):
            if any(not self._proxies.is_burned(m, now) for m in group):
                return index
        return 0

    def proxy_failed(self, proxy: str | None, since: float) -> bool:
        return self._proxies.fail(DIRECT if proxy is None else proxy, since)

    def host_failed(self, host: str, since: float) -> bool:
        return self._hosts.fail(host, since)

    def is_proxy_burned(self, proxy: str | None) -> bool:
        return self._proxies.is_burned(DIRECT if proxy is None else proxy, self.clock())

    def is_host_burned(self, host: str) -> bool:
        return self._hosts.is_burned(host, self.clock())
