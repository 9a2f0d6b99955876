"""Request headers as the CernVM-FS client sends them (cvmfs-format.md §10.7).

Curl sends no ``Accept-Encoding``; aiohttp would offer gzip, so we ask for ``identity``
explicitly: object hashes are over the stored bytes, never over a transfer encoding.
``Pragma``/``Cache-Control: no-cache`` go out only when retrying after bad data, to make a
proxy drop a poisoned cache entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from types import MappingProxyType

from shrinkwrap_async import __version__

USER_AGENT = f"shrinkwrap-async/{__version__}"

NORMAL_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Connection": "Keep-Alive",
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
    }
)

NO_CACHE_HEADERS: Mapping[str, str] = MappingProxyType(
    {**NORMAL_HEADERS, "Pragma": "no-cache", "Cache-Control": "no-cache"}
)

# Bytes the client leaves as they are in a URL path (§10.8); everything else is %XX.
_SAFE_BYTES = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/:.@+-_~[],"
_SAFE = frozenset(_SAFE_BYTES)


def request_headers(*, no_cache: bool) -> Mapping[str, str]:
    return NO_CACHE_HEADERS if no_cache else NORMAL_HEADERS


def escape_path(path: str) -> str:
    """Percent-encode ``path`` exactly as the client does before handing it to curl."""
    raw = path.encode()
    if not raw.translate(None, _SAFE_BYTES):  # nothing but safe bytes (every object path)
        return path
    return "".join(chr(byte) if byte in _SAFE else f"%{byte:02X}" for byte in raw)


# What a request is for (a file's repository path, a catalog's description), sent as the
# client's ``cvmfs-info`` header when ``CVMFS_SEND_INFO_HEADER=yes`` so that a Stratum-1's
# logs can tell what was fetched. A context variable: the callers that know the path set it
# around a fetch, and the requests made within (retries, failover) all carry it.
INFO_HEADER = "cvmfs-info"
# A file's repository path, or a catalog's (mount point, hash) for the fetcher to describe.
_request_info: ContextVar[str | tuple[str, str] | None] = ContextVar("request_info", default=None)


class requests_for:  # lower case: used as a function, ``with requests_for(path):``
    """Label the requests made within: a file's path, or ``(mount point, hash)`` of a
    catalog. A class rather than a generator: one is entered per exported file."""

    __slots__ = ("_subject", "_token")

    def __init__(self, subject: str | tuple[str, str]) -> None:
        self._subject = subject

    def __enter__(self) -> None:
        self._token = _request_info.set(self._subject)

    def __exit__(self, *exc_info: object) -> None:
        _request_info.reset(self._token)


def request_info(fqrn: str) -> str | None:
    """The label of the current requests as the client writes it (a catalog: ``file catalog
    at <fqrn>:<mount point> (<hash>)``), percent-encoded, or None."""
    subject = _request_info.get()
    if subject is None:
        return None
    if isinstance(subject, tuple):
        mountpoint, digest = subject
        subject = f"file catalog at {fqrn}:{mountpoint or '/'} ({digest})"
    return escape_path(subject)
