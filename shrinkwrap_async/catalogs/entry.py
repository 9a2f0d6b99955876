"""One row of a file catalog, as an immutable value, and the small records around it.

A :class:`DirEntry` is built for every row an export walks (millions for a large
repository), so :func:`entry_from_row` keeps the per-row work to a few integer operations
and table lookups. Paths are repository paths: ``""`` for the root, else ``/a/b``. Names
that are not valid UTF-8 are carried as ``str`` with surrogate escapes, and every
conversion back to bytes uses ``os.fsencode`` semantics (UTF-8, ``surrogateescape``).
"""

from __future__ import annotations

import hashlib
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from shrinkwrap_async.catalogs.schema import (
    COMPRESSION_SHIFT,
    FIELD_MASK,
    HASH_ALGORITHM_SHIFT,
    Compression,
    Flag,
)
from shrinkwrap_async.exitcodes import ExitCode, ShrinkwrapError
from shrinkwrap_async.hashing import DIGEST_SIZE, Algorithm, Digest

__all__ = [
    "CatalogError",
    "Chunk",
    "DirEntry",
    "NestedCatalogRef",
    "decode_xattrs",
    "encode_xattrs",
    "entry_from_row",
    "md5path",
]


class CatalogError(ShrinkwrapError):
    """A catalog (or one of its rows) is not valid CernVM-FS catalog data."""

    exit_code = ExitCode.TRUST


_MD5_PAIR = struct.Struct("<qq")

# The flag bits as plain ints: ``int & Flag.X`` builds an enum member each time, which
# costs more than the rest of an entry's checks during a walk.
_FILE_CHUNK = int(Flag.FILE_CHUNK)
_FILE_EXTERNAL = int(Flag.FILE_EXTERNAL)
_NESTED_MOUNTPOINT = int(Flag.NESTED_MOUNTPOINT)
_NESTED_ROOT = int(Flag.NESTED_ROOT)
_BIND_MOUNTPOINT = int(Flag.BIND_MOUNTPOINT)
_HIDDEN = int(Flag.HIDDEN)


def encode_path(path: str) -> bytes:
    """The bytes of a repository path as stored by the publisher."""
    return path.encode("utf-8", "surrogateescape")


def md5path(path: str) -> tuple[int, int]:
    """``(md5path_1, md5path_2)`` of a repository path: MD5 split into two signed LE int64."""
    return _MD5_PAIR.unpack(hashlib.md5(encode_path(path)).digest())


def child_path(parent: str, name: str) -> str:
    return f"{parent}/{name}"


# ---------------------------------------------------------------------------------------
# Extended attributes (XattrList serialisation, version 1)

XATTR_VERSION = 1
_MAX_XATTR_FIELD = 255


def decode_xattrs(blob: bytes | None) -> tuple[tuple[str, bytes], ...]:
    """Decode an xattr BLOB into ``((name, value), ...)`` sorted by name bytes.

    Layout: ``u8 version (1), u8 count``, then per entry ``u8 keylen, u8 vallen, key,
    value``. ``None`` or an empty blob means no xattrs.
    """
    if not blob:
        return ()
    if len(blob) < 2:
        raise CatalogError("xattr blob truncated: missing header")
    version, count = blob[0], blob[1]
    if version != XATTR_VERSION:
        raise CatalogError(f"xattr blob has unsupported version {version} (expected 1)")
    items: list[tuple[str, bytes]] = []
    position = 2
    end = len(blob)
    for index in range(count):
        if position + 2 > end:
            raise CatalogError(f"xattr blob truncated in the header of entry {index}")
        key_length, value_length = blob[position], blob[position + 1]
        position += 2
        key_end = position + key_length
        value_end = key_end + value_length
        if value_end > end:
            raise CatalogError(f"xattr blob truncated in entry {index}")
        if key_length == 0:
            raise CatalogError(f"xattr blob entry {index} has an empty name")
        key = blob[position:key_end]
        if b"\0" in key:
            raise CatalogError(f"xattr blob entry {index} has a NUL in its name")
        items.append((key.decode("utf-8", "surrogateescape"), bytes(blob[key_end:value_end])))
        position = value_end
    if position != end:
        raise CatalogError(f"xattr blob has {end - position} trailing bytes")
    items.sort(key=lambda item: encode_path(item[0]))
    return tuple(items)


def encode_xattrs(items: Iterable[tuple[str, bytes]]) -> bytes | None:
    """Serialise xattrs the way the publisher does; ``None`` for an empty list.

    Names are written in byte order; names and values must be 1..255 and 0..255 bytes.
    """
    encoded = sorted(
        ((encode_path(name), bytes(value)) for name, value in items), key=lambda kv: kv[0]
    )
    if not encoded:
        return None
    if len(encoded) > _MAX_XATTR_FIELD:
        raise ValueError(f"too many xattrs: {len(encoded)} (at most 255)")
    out = bytearray((XATTR_VERSION, len(encoded)))
    previous: bytes | None = None
    for key, value in encoded:
        if key == previous:
            raise ValueError(f"duplicate xattr name {key!r}")
        previous = key
        if not 0 < len(key) <= _MAX_XATTR_FIELD or b"\0" in key:
            raise ValueError(f"invalid xattr name {key!r}")
        if len(value) > _MAX_XATTR_FIELD:
            raise ValueError(f"xattr {key!r} value too long: {len(value)} bytes (at most 255)")
        out += bytes((len(key), len(value)))
        out += key
        out += value
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a chunked file: ``[offset, offset + size)`` stored as ``digest`` + ``P``."""

    offset: int
    size: int
    digest: Digest


@dataclass(frozen=True, slots=True)
class NestedCatalogRef:
    """A nested catalog named by its parent: its mountpoint, hash and inflated size."""

    path: str
    digest: Digest
    size: int


_FILE_TYPE_MASK = 0o170000
_S_IFDIR = stat.S_IFDIR
_S_IFREG = stat.S_IFREG
_S_IFLNK = stat.S_IFLNK
_S_IFCHR = stat.S_IFCHR
_S_IFBLK = stat.S_IFBLK
_HASH_ALGORITHM_MASK = FIELD_MASK << HASH_ALGORITHM_SHIFT
_COMPRESSION_MASK = FIELD_MASK << COMPRESSION_SHIFT
_ALGORITHM_BY_BITS: dict[int, Algorithm] = {a.flag: a for a in Algorithm}


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One catalog row. ``mode`` is the full ``st_mode``; ``symlink`` the raw target."""

    path: str
    name: str
    mode: int
    size: int
    mtime: int
    uid: int
    gid: int
    flags: int
    content_hash: Digest | None = None
    symlink: str = ""
    hardlink_group: int = 0
    linkcount: int = 1
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def file_type(self) -> int:
        return self.mode & _FILE_TYPE_MASK

    @property
    def is_directory(self) -> bool:
        return self.mode & _FILE_TYPE_MASK == _S_IFDIR

    @property
    def is_regular(self) -> bool:
        return self.mode & _FILE_TYPE_MASK == _S_IFREG

    @property
    def is_symlink(self) -> bool:
        return self.mode & _FILE_TYPE_MASK == _S_IFLNK

    @property
    def is_special(self) -> bool:
        """FIFO, socket, character or block device."""
        return self.mode & _FILE_TYPE_MASK not in (_S_IFDIR, _S_IFREG, _S_IFLNK)

    @property
    def is_chunked(self) -> bool:
        return bool(self.flags & _FILE_CHUNK)

    @property
    def is_external(self) -> bool:
        return bool(self.flags & _FILE_EXTERNAL)

    @property
    def is_nested_mountpoint(self) -> bool:
        """Directory in the parent catalog whose children live in a nested catalog."""
        return bool(self.flags & _NESTED_MOUNTPOINT)

    @property
    def is_nested_root(self) -> bool:
        """Root entry of a nested catalog (same path as the parent's mountpoint)."""
        return bool(self.flags & _NESTED_ROOT)

    @property
    def is_bind_mountpoint(self) -> bool:
        """Directory where another root catalog is bound (snapshots); never descended."""
        return bool(self.flags & _BIND_MOUNTPOINT)

    @property
    def is_hidden(self) -> bool:
        return bool(self.flags & _HIDDEN)

    @property
    def compressed(self) -> bool:
        """True when the object(s) of this regular file are zlib streams."""
        return self.mode & _FILE_TYPE_MASK == _S_IFREG and not self.flags & _COMPRESSION_MASK

    @property
    def hash_algorithm(self) -> Algorithm:
        """Algorithm of ``content_hash`` and of the chunk digests (flag bits 8-10)."""
        return _ALGORITHM_BY_BITS[(self.flags & _HASH_ALGORITHM_MASK) >> HASH_ALGORITHM_SHIFT]

    @property
    def rdev(self) -> int:
        """Device number of a character or block device (stored in ``size``), else 0."""
        if self.mode & _FILE_TYPE_MASK in (_S_IFCHR, _S_IFBLK):
            return self.size
        return 0


# Column order of the SELECT the reader issues; ``entry_from_row`` depends on it.
ENTRY_COLUMNS = (
    "name",
    "mode",
    "size",
    "mtime",
    "uid",
    "gid",
    "flags",
    "hash",
    "symlink",
    "hardlinks",
    "xattr",
)

_LOW32 = 0xFFFFFFFF
_ACCEPTED_COMPRESSION = frozenset(int(c) for c in Compression)


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def entry_from_row(path: str, row: tuple) -> DirEntry:  # type: ignore[type-arg]
    """Build a :class:`DirEntry` from a row in :data:`ENTRY_COLUMNS` order."""
    name, mode, size, mtime, uid, gid, flags, raw_hash, symlink, hardlinks, xattr = row
    if type(name) is not str:
        name = _as_text(name)
    if type(symlink) is not str:
        symlink = _as_text(symlink)
    # SQLite keeps the type a value was written with, whatever the column's declared type
    if type(mode) is not int or type(flags) is not int:
        raise CatalogError(f"catalog row for {path or '/'!r} has no integer mode or flags")
    if not (
        (size is None or type(size) is int)
        and (mtime is None or type(mtime) is int)
        and (uid is None or type(uid) is int)
        and (gid is None or type(gid) is int)
        and (hardlinks is None or type(hardlinks) is int)
    ):
        raise CatalogError(
            f"catalog row for {path or '/'!r} has a size, mtime, owner or hard-link field "
            "that is not an integer"
        )
    if (uid and not 0 <= uid <= _LOW32) or (gid and not 0 <= gid <= _LOW32):
        raise CatalogError(f"catalog row for {path or '/'!r} has an owner beyond 32 bits")
    if xattr and type(xattr) is not bytes:
        raise CatalogError(f"catalog row for {path or '/'!r} has an xattr field that is no blob")
    if raw_hash:
        algorithm = _ALGORITHM_BY_BITS.get((flags & _HASH_ALGORITHM_MASK) >> HASH_ALGORITHM_SHIFT)
        if algorithm is None or type(raw_hash) is not bytes or len(raw_hash) != DIGEST_SIZE:
            raise CatalogError(
                f"catalog row for {path or '/'!r} has an invalid content hash "
                f"(flags {flags:#x}, {len(raw_hash)} bytes)"
            )
        content_hash: Digest | None = Digest(algorithm, raw_hash)
    else:
        content_hash = None
    if flags & (_HASH_ALGORITHM_MASK | _COMPRESSION_MASK):
        _check_field_bits(path, mode, flags)
    if hardlinks:
        group = (hardlinks >> 32) & _LOW32
        linkcount = hardlinks & _LOW32
    else:
        group = 0
        linkcount = 1
    return DirEntry(
        path,
        name,
        mode,
        size or 0,
        mtime or 0,
        uid or 0,
        gid or 0,
        flags,
        content_hash,
        symlink,
        group,
        linkcount,
        decode_xattrs(xattr) if xattr else (),
    )


def _check_field_bits(path: str, mode: int, flags: int) -> None:
    algorithm_bits = (flags & _HASH_ALGORITHM_MASK) >> HASH_ALGORITHM_SHIFT
    if algorithm_bits not in _ALGORITHM_BY_BITS:
        raise CatalogError(f"catalog row for {path or '/'!r}: unknown hash algorithm bits")
    compression_bits = (flags & _COMPRESSION_MASK) >> COMPRESSION_SHIFT
    if mode & _FILE_TYPE_MASK == _S_IFREG and compression_bits not in _ACCEPTED_COMPRESSION:
        raise CatalogError(f"catalog row for {path or '/'!r}: unknown compression bits")
