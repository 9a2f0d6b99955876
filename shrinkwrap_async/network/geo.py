"""Geo ordering of Stratum-1 servers and fallback proxies (CVMFS_USE_GEOAPI, cvmfs-format.md
§10.6).

``GET <server>/api/v1.0/geo/<proxy-or-id>/<name1>,<name2>,...`` answers a comma-separated,
1-based permutation of the names, nearest first. Up to three servers, chosen at random, are
asked; an answer that is not exactly a permutation is ignored.

The names are the servers' host names and, after them, the host name of the first member of
each fallback proxy group. Without regular proxies (every request goes through a fallback
proxy) and with two servers or more, ``+PXYSEP+`` separates the two parts: the service then
orders the servers by their distance from the nearest fallback proxy, not from the caller.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from shrinkwrap_async.network.endpoints import host_name

GEO_ATTEMPTS = 3
PROXY_SEPARATOR = "+PXYSEP+"

# The client sends a per-cache UUID when it has no proxy to name; one per process here.
_INSTANCE_ID = str(uuid.uuid4())

FetchText = Callable[[str], Awaitable[str | None]]


def geo_url(server: str, token: str, names: Sequence[str]) -> str:
    """The request to ``server`` for the order of ``names`` (URLs are cut to host names)."""
    hosts = ",".join(name if name == PROXY_SEPARATOR else host_name(name) for name in names)
    return f"{server}/api/v1.0/geo/{token}/{hosts}"


def parse_permutation(text: str, count: int) -> list[int] | None:
    """0-based order from an answer like ``"2,1,3\\n"``, or None if it is not valid."""
    try:
        indexes = [int(item) for item in text.strip().split(",")]
    except ValueError:
        return None
    if sorted(indexes) != list(range(1, count + 1)):
        return None
    return [i - 1 for i in indexes]


async def _ask(
    names: Sequence[str],
    *,
    proxy: str | None,
    ask: Sequence[str],
    fetch_text: FetchText,
    rng: random.Random | None,
) -> list[int] | None:
    """The geo API's order of ``names``, asked of up to three of ``ask``; None if none
    gave a valid answer. ``proxy`` names the caller (else an instance UUID)."""
    rng = rng or random.Random()
    token = host_name(proxy) if proxy else _INSTANCE_ID
    candidates = list(ask)
    rng.shuffle(candidates)
    for server in candidates[:GEO_ATTEMPTS]:
        text = await fetch_text(geo_url(server, token, names))
        if text is None:
            continue
        order = parse_permutation(text, len(names))
        if order is not None:
            return order
    return None


async def sort_servers(
    servers: Sequence[str],
    *,
    proxy: str | None,
    fetch_text: FetchText,
    rng: random.Random | None = None,
    ask: Sequence[str] | None = None,
) -> list[int] | None:
    """Ask the geo API for the order of ``servers``; None if no server gave a valid answer.

    The API is asked of ``ask`` (default: ``servers`` themselves). The external-data hosts
    are sorted by asking the repository's servers, as the client does.
    """
    return await _ask(
        servers, proxy=proxy, ask=servers if ask is None else ask, fetch_text=fetch_text, rng=rng
    )


@dataclass(frozen=True)
class GeoOrder:
    """Nearest first: indexes into the servers, and into the fallback proxy groups."""

    servers: list[int]
    fallback_groups: list[int]


async def sort_servers_and_fallback(
    servers: Sequence[str],
    fallback_proxies: Sequence[str],
    *,
    proxy: str | None,
    regular_proxies: bool,
    fetch_text: FetchText,
    rng: random.Random | None = None,
) -> GeoOrder | None:
    """Order the repository's ``servers`` and its fallback proxy groups (``fallback_proxies``:
    the first member of each) with one geo request, asked of the servers. ``proxy`` names
    the caller: a regular proxy; without ``regular_proxies`` the caller is on fallback
    proxies and sends its instance id."""
    names = list(servers)
    if not regular_proxies and len(servers) > 1 and fallback_proxies:
        names.append(PROXY_SEPARATOR)
    first_fallback = len(names)
    names.extend(fallback_proxies)
    order = await _ask(
        names,
        proxy=proxy if regular_proxies else None,
        ask=servers,
        fetch_text=fetch_text,
        rng=rng,
    )
    if order is None:
        return None
    return GeoOrder(
        servers=[i for i in order if i < len(servers)],
        fallback_groups=[i - first_fallback for i in order if i >= first_fallback],
    )
