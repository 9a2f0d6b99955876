"""Geo ordering of Stratum-1 servers (CVMFS_USE_GEOAPI, cvmfs-format.md §10.6).

``GET <server>/api/v1.0/geo/<proxy-or-id>/<host1>,<host2>,...`` answers a comma-separated,
1-based permutation of the hosts, nearest first. Up to three servers, chosen at random, are
asked; an answer that is not exactly a permutation is ignored.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable, Sequence

from shrinkwrap_async.network.endpoints import host_name

GEO_ATTEMPTS = 3

# The client sends a per-cache UUID when it has no proxy to name; one per process here.
_INSTANCE_ID = str(uuid.uuid4())


def geo_url(server: str, token: str, servers: Sequence[str]) -> str:
    names = ",".join(host_name(s) for s in servers)
    return f"{server}/api/v1.0/geo/{token}/{names}"


def parse_permutation(text: str, count: int) -> list[int] | None:
    """0-based order from an answer like ``"2,1,3\\n"``, or None if it is not valid."""
    try:
        indexes = [int(item) for item in text.strip().split(",")]
    except ValueError:
        return None
    if sorted(indexes) != list(range(1, count + 1)):
        return None
    return [i - 1 for i in indexes]


async def sort_servers(
    servers: Sequence[str],
    *,
    proxy: str | None,
    fetch_text: Callable[[str], Awaitable[str | None]],
    rng: random.Random | None = None,
    ask: Sequence[str] | None = None,
) -> list[int] | None:
    """Ask the geo API for the order of ``servers``; None if no server gave a valid answer.

    The API is asked of ``ask`` (default: ``servers`` themselves). The external-data hosts
    are sorted by asking the repository's servers, as the client does.
    """
    rng = rng or random.Random()
    token = host_name(proxy) if proxy else _INSTANCE_ID
    candidates = list(servers if ask is None else ask)
    rng.shuffle(candidates)
    for server in candidates[:GEO_ATTEMPTS]:
        text = await fetch_text(geo_url(server, token, servers))
        if text is None:
            continue
        order = parse_permutation(text, len(servers))
        if order is not None:
            return order
    return None
