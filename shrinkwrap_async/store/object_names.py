"""What a ``.data`` object is called: cvmfs_shrinkwrap's naming, so that either tool can
refresh the other's exports.

An object is one (content, metadata) pair: ``XX/YY/<rest of the content hash, with its
algorithm id>.<md5 of mode, owner and xattrs>`` below the store's root (format §11.5). A
chunked file's content is named by the hash of its chunks' digests.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shrinkwrap_async.hashing import Digest

Xattrs = Sequence[tuple[str, bytes]]


def serialize_xattrs(xattrs: Xattrs) -> bytes:
    """The catalog xattr blob (format §6.8): version 1, count, then sorted key/value pairs."""
    items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in xattrs)
    out = bytearray((1, len(items)))
    for key, value in items:
        out += bytes((len(key), len(value))) + key + value
    return bytes(out)


def meta_hash(mode: int, uid: int, gid: int, xattrs: Xattrs = ()) -> str:
    """MD5 of mode&0777, uid, gid (little-endian 32 bit, each followed by a 0 byte) and xattrs.

    Keys starting with ``security.selinux`` are left out, as cvmfs_shrinkwrap does.
    """
    kept = [(k, v) for k, v in xattrs if not k.lower().startswith("security.selinux")]
    blob = struct.pack("<IxIxIx", mode & 0o777, uid, gid)
    if kept:
        blob += serialize_xattrs(kept)
    return hashlib.md5(blob).hexdigest()


def chunk_list_digest(chunk_digests: Iterable[Digest]) -> Digest:
    """Whole-file identity of a chunked file: hash of its binary chunk digests in order (§7)."""
    digests = list(chunk_digests)
    if not digests:
        raise ValueError("a chunked file needs at least one chunk")
    algorithm = digests[0].algorithm
    return algorithm.hash(b"".join(d.raw for d in digests))


def object_name(content: Digest, meta: str) -> str:
    """``XX/YY/<rest>.<meta>``, relative to the store root."""
    text = content.hex
    return f"{text[:2]}/{text[2:4]}/{text[4:]}.{meta}"


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """Metadata a committed object carries: that of the first entry that created it."""

    mode: int
    uid: int
    gid: int
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def meta_hash(self) -> str:
        return meta_hash(self.mode, self.uid, self.gid, self.xattrs)


_HEX_DIGITS = frozenset("0123456789abcdef")


def is_fanout_name(name: str) -> bool:
    """Whether ``name`` is that of a fan-out directory of the store (``XX`` or ``YY``)."""
    return len(name) == 2 and set(name) <= _HEX_DIGITS


# Attribute namespaces never set on exported files and directories, though an object's
# name covers them (as cvmfs_shrinkwrap's does): ``security.*`` carries file capabilities
# and security labels, ``trusted.*`` is the administrator's. A CVMFS mount (nosuid) gives
# no file capabilities; an export run by root must not either.
WITHHELD_XATTR_NAMESPACES = ("security.", "trusted.")


def applied_xattrs(xattrs: Xattrs) -> Xattrs:
    """The attributes of ``xattrs`` an export sets (see ``WITHHELD_XATTR_NAMESPACES``).
    Most objects have none: called for every object committed, that case costs nothing."""
    if not xattrs:
        return ()
    return [(k, v) for k, v in xattrs if not k.lower().startswith(WITHHELD_XATTR_NAMESPACES)]
