"""Request headers as the CernVM-FS client sends them (cvmfs-format.md §10.7).

Curl sends no ``Accept-Encoding``; aiohttp would offer gzip, so we ask for ``identity``
explicitly: object hashes are over the stored bytes, never over a transfer encoding.
``Pragma``/``Cache-Control: no-cache`` go out only when retrying after bad data, to make a
proxy drop a poisoned cache entry.
"""

from __future__ import annotations

from collections.abc import Mapping
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
