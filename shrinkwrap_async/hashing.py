"""Content hashes as CernVM-FS renders them: SHA-1, RIPEMD-160 and SHAKE-128 (160 bits).

A :class:`Digest` is the binary digest plus its algorithm. Its hex form carries the
algorithm identifier (``-rmd160``, ``-shake128``, nothing for SHA-1), as in manifests,
nested catalog references and object names.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Protocol


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class Algorithm(enum.Enum):
    """Content hash algorithms; ``flag`` is the value of catalog flag bits 8-10."""

    SHA1 = ("", 0)
    RMD160 = ("-rmd160", 1)
    SHAKE128 = ("-shake128", 2)

    def __init__(self, suffix: str, flag: int) -> None:
        self.suffix = suffix
        self.flag = flag

    @classmethod
    def from_flag(cls, flag: int) -> Algorithm:
        for algorithm in cls:
            if algorithm.flag == flag:
                return algorithm
        raise ValueError(f"unknown hash algorithm flag {flag}")

    @classmethod
    def from_name(cls, name: str) -> Algorithm:
        names = {"sha1": cls.SHA1, "rmd160": cls.RMD160, "shake128": cls.SHAKE128}
        try:
            return names[name.lower()]
        except KeyError:
            raise ValueError(f"unknown hash algorithm {name!r}") from None

    @property
    def name_lower(self) -> str:
        return self.name.lower()

    def new(self) -> Hasher:
        if self is Algorithm.SHA1:
            return hashlib.sha1()
        if self is Algorithm.RMD160:
            return _new_ripemd160()
        return _Shake128()

    def hash(self, data: bytes) -> Digest:
        hasher = self.new()
        hasher.update(data)
        return Digest(self, hasher.digest())


DIGEST_SIZE = 20


class _Shake128:
    """SHAKE-128 with CernVM-FS's fixed 160-bit output."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = hashlib.shake_128()

    def update(self, data: bytes, /) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest(DIGEST_SIZE)


def _new_ripemd160() -> Hasher:
    try:
        return hashlib.new("ripemd160")
    except ValueError:  # OpenSSL 3 without the legacy provider
        from shrinkwrap_async._ripemd160 import RipeMD160

        return RipeMD160()


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: Algorithm
    raw: bytes

    @classmethod
    def from_hex(cls, text: str) -> Digest:
        """Parse ``<40 hex>[-rmd160|-shake128]``, as in manifests and nested catalog rows."""
        text = text.strip()
        algorithm = Algorithm.SHA1
        for candidate in (Algorithm.RMD160, Algorithm.SHAKE128):
            if text.endswith(candidate.suffix):
                algorithm = candidate
                text = text[: -len(candidate.suffix)]
                break
        if len(text) != 2 * DIGEST_SIZE:
            raise ValueError(f"not a content hash: {text!r}")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"not a content hash: {text!r}") from None
        return cls(algorithm, raw)

    @property
    def hex(self) -> str:
        """Lowercase hex plus the algorithm identifier (the CernVM-FS rendering)."""
        return self.raw.hex() + self.algorithm.suffix

    def __str__(self) -> str:
        return self.hex

    def object_path(self, suffix: str = "") -> str:
        """Path of the object below the repository base URL, e.g. ``data/e8/ec3d...C``."""
        text = self.hex
        return f"data/{text[:2]}/{text[2:]}{suffix}"

    def matches(self, data: bytes) -> bool:
        return self.algorithm.hash(data).raw == self.raw


# The empty file as stored by a zlib publisher, and its SHA-1 (a well-known value).
EMPTY_ZLIB_OBJECT = bytes.fromhex("789c030000000001")


def stored_size_limit(size: int) -> int:
    """The most bytes an object of ``size`` inflated bytes may take stored zlib-compressed
    (zlib's worst case adds a little per 16 KiB block, plus its header and trailer)."""
    return size + size // 64 + 4096


class ObjectSuffix:
    """One-letter object type suffixes of ``data/`` objects."""

    NONE = ""
    CATALOG = "C"
    PARTIAL = "P"
    CERTIFICATE = "X"
    HISTORY = "H"
    METAINFO = "M"
