"""A streaming, reproducible POSIX (pax) tar writer fed with ``PackEntry`` records.

The headers are built here rather than with ``tarfile`` so that the bytes depend only on the
entries, never on the Python version: ustar headers with numeric owners and empty user and
group names, a pax extended header only where ustar cannot hold a value (long or non-ASCII
names, large numbers) or for ``user.*`` xattrs (``SCHILY.xattr.<name>``, as GNU tar and
libarchive write them), fixed pax header names and times, no atime or ctime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from typing import BinaryIO, Protocol

from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.packing.entries import EntryKind, PackEntry
from shrinkwrap_async.packing.linkindex import HardLinkIndex

BLOCK = 512
RECORD = 20 * BLOCK  # GNU tar's default blocking factor
COPY_CHUNK = 1 << 20
PAX_HEADER_NAME = b"././@PaxHeader"

_TYPEFLAGS = {
    EntryKind.REGULAR: b"0",
    EntryKind.SYMLINK: b"2",
    EntryKind.CHAR_DEVICE: b"3",
    EntryKind.BLOCK_DEVICE: b"4",
    EntryKind.DIRECTORY: b"5",
    EntryKind.FIFO: b"6",
}
_HARDLINK = b"1"
_PAX = b"x"


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def _encode_name(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _octal(value: int, width: int) -> bytes | None:
    """``value`` as a NUL-terminated octal field of ``width`` bytes, or None if it does not fit."""
    if value < 0:
        return None
    digits = b"%o" % value
    if len(digits) > width - 1:
        return None
    return digits.rjust(width - 1, b"0") + b"\0"


def _pax_record(key: bytes, value: bytes) -> bytes:
    payload = b" " + key + b"=" + value + b"\n"
    length = len(payload) + 1
    while len(b"%d" % length) + len(payload) != length:
        length = len(b"%d" % length) + len(payload)
    return b"%d" % length + payload


def _split_ustar_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for the ustar fields, or None when the name needs a pax ``path``."""
    if not name.isascii():
        return None
    if len(name) <= 100:
        return b"", name
    # Split at a slash so that prefix <= 155 and name <= 100 (a trailing slash stays in name).
    start = max(0, len(name) - 101)
    for index in range(start, min(len(name), 156)):
        if name[index : index + 1] == b"/" and 0 < len(name) - index - 1 <= 100:
            return name[:index], name[index + 1 :]
    return None


def _ascii_placeholder(name: bytes, width: int) -> bytes:
    """A deterministic stand-in for a name that lives in a pax record."""
    return bytes(c if 32 <= c < 127 else 0x5F for c in name)[-width:]


def _header_block(
    *,
    name: bytes,
    prefix: bytes,
    mode: bytes,
    uid: bytes,
    gid: bytes,
    size: bytes,
    mtime: bytes,
    typeflag: bytes,
    linkname: bytes,
    devmajor: bytes,
    devminor: bytes,
    magic: bytes = b"ustar\x0000",
) -> bytes:
    parts = [
        name.ljust(100, b"\0"),
        mode,
        uid,
        gid,
        size,
        mtime,
        b" " * 8,  # checksum placeholder
        typeflag,
        linkname.ljust(100, b"\0"),
        magic,
        b"\0" * 32,  # uname: empty, owners are numeric
        b"\0" * 32,  # gname
        devmajor,
        devminor,
        prefix.ljust(155, b"\0"),
        b"\0" * 12,
    ]
    header = bytearray(b"".join(parts))
    assert len(header) == BLOCK, len(header)
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


class TarWriter:
    """Writes ``PackEntry`` records as members under ``<prefix>/`` to a byte sink.

    Call ``write_entry`` (or ``write_all``/``write_all_async``) for each entry in archive
    order, then ``close()``, which writes the end-of-archive blocks and pads to a full record.
    The sink is not closed.
    """

    def __init__(self, sink: ByteSink, prefix: str, *, gnu_long_links: bool = False) -> None:
        """``gnu_long_links`` writes link targets longer than 100 bytes as GNU ``K`` records
        instead of pax ``linkpath``: mksquashfs 4.5.1 strips the leading ``/`` of a pax
        ``linkpath``, which would break long absolute symlinks in SquashFS images."""
        self._sink = sink
        self._gnu_long_links = gnu_long_links
        self._prefix = prefix.strip("/")
        self._links = HardLinkIndex()
        self._written = 0
        self._closed = False
        self.members = 0
        self.content_bytes = 0

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self._written += len(data)

    def archive_name(self, entry: PackEntry) -> str:
        name = f"{self._prefix}/{entry.path}" if entry.path else self._prefix
        return name + "/" if entry.kind is EntryKind.DIRECTORY else name

    def write_parent_directories(self, mtime: int) -> None:
        """Members for the directories above the prefix (``cvmfs/`` of ``cvmfs/<fqrn>``):
        root-owned, mode 0755, as a container image's own directories are."""
        parts = self._prefix.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            name = "/".join(parts[:depth]) + "/"
            entry = PackEntry(
                path=name, kind=EntryKind.DIRECTORY, mode=0o755, uid=0, gid=0, mtime=mtime
            )
            self._write_header(entry, _encode_name(name), _TYPEFLAGS[entry.kind], b"", 0)
            self.members += 1

    def write_entry(self, entry: PackEntry) -> None:
        name = self.archive_name(entry)
        typeflag = _TYPEFLAGS[entry.kind]
        linkname = b""
        size = entry.size if entry.kind is EntryKind.REGULAR else 0
        if entry.hardlink_key is not None:
            first = self._links.first_path(entry.hardlink_key, name)
            if first is not None:
                typeflag, linkname, size = _HARDLINK, _encode_name(first), 0
        if entry.kind is EntryKind.SYMLINK:
            linkname = _encode_name(entry.link_target or "")
        self._write_header(entry, _encode_name(name), typeflag, linkname, size)
        self.members += 1
        if typeflag == b"0" and size:
            self._copy_content(entry, name)

    def _write_header(
        self, entry: PackEntry, name: bytes, typeflag: bytes, linkname: bytes, size: int
    ) -> None:
        records: list[bytes] = []
        if (name + linkname).decode("utf-8", "replace").encode() != name + linkname:
            records.append(_pax_record(b"hdrcharset", b"BINARY"))
        split = _split_ustar_name(name)
        if split is None:
            records.append(_pax_record(b"path", name))
            split = (b"", _ascii_placeholder(name, 100))
        if self._gnu_long_links and len(linkname) > 100:
            self._write_gnu_long_link(linkname)
            linkname = _ascii_placeholder(linkname, 100)
        elif linkname and (len(linkname) > 100 or not linkname.isascii()):
            records.append(_pax_record(b"linkpath", linkname))
            linkname = _ascii_placeholder(linkname, 100)
        fields: dict[str, bytes] = {}
        for key, value, width in (
            ("size", size, 12),
            ("uid", entry.uid, 8),
            ("gid", entry.gid, 8),
            ("mtime", entry.mtime, 12),
        ):
            encoded = _octal(value, width)
            if encoded is None:
                records.append(_pax_record(key.encode(), b"%d" % value))
                encoded = _octal(0, width)
                assert encoded is not None
            fields[key] = encoded
        for xattr_name, xattr_value in entry.xattrs:
            records.append(_pax_record(b"SCHILY.xattr." + _encode_name(xattr_name), xattr_value))
        if entry.rdev is not None:
            major, minor = entry.rdev
            devmajor, devminor = _octal(major, 8), _octal(minor, 8)
            if devmajor is None or devminor is None:
                raise StorageError(f"device numbers of {name!r} do not fit in a tar header")
        else:
            devmajor = devminor = b"0000000\0"
        if records:
            self._write_extension(PAX_HEADER_NAME, b"0000644\0", _PAX, b"".join(records))
        mode = _octal(entry.mode & 0o7777, 8)
        assert mode is not None
        self._write(
            _header_block(
                name=split[1],
                prefix=split[0],
                mode=mode,
                uid=fields["uid"],
                gid=fields["gid"],
                size=fields["size"],
                mtime=fields["mtime"],
                typeflag=typeflag,
                linkname=linkname,
                devmajor=devmajor,
                devminor=devminor,
            )
        )

    def _write_gnu_long_link(self, linkname: bytes) -> None:
        self._write_extension(
            b"././@LongLink", b"0000000\0", b"K", linkname + b"\0", magic=b"ustar  \0"
        )

    def _write_extension(
        self, name: bytes, mode: bytes, typeflag: bytes, data: bytes, magic: bytes = b"ustar\x0000"
    ) -> None:
        """A member that describes the next one (pax extended header, GNU long link name):
        owner and time zero, its data padded to whole blocks."""
        size = _octal(len(data), 12)
        assert size is not None
        zero8 = b"0000000\0"
        self._write(
            _header_block(
                name=name,
                prefix=b"",
                mode=mode,
                uid=zero8,
                gid=zero8,
                size=size,
                mtime=b"00000000000\0",
                typeflag=typeflag,
                linkname=b"",
                devmajor=zero8,
                devminor=zero8,
                magic=magic,
            )
        )
        self._write(data + _padding(len(data)))

    def _copy_content(self, entry: PackEntry, name: str) -> None:
        if entry.open_content is None:
            raise StorageError(f"no content for {name}")
        remaining = entry.size
        with entry.open_content() as stream:
            while remaining > 0:
                piece = stream.read(min(COPY_CHUNK, remaining))
                if not piece:
                    break
                self._write(piece)
                remaining -= len(piece)
            grew = remaining == 0 and stream.read(1)
        if remaining or grew:
            raise StorageError(f"{name} changed size while it was packed")
        self._write(_padding(entry.size))
        self.content_bytes += entry.size

    def write_all(self, entries: Iterable[PackEntry]) -> None:
        for entry in entries:
            self.write_entry(entry)

    async def write_all_async(
        self, entries: AsyncIterable[PackEntry] | Iterable[PackEntry], batch: int = 256
    ) -> None:
        """Consume an async (or sync) iterator; file reads and writes run in a worker thread."""
        pending: list[PackEntry] = []

        async def flush() -> None:
            if pending:
                items = list(pending)
                pending.clear()
                await asyncio.to_thread(self.write_all, items)

        if isinstance(entries, AsyncIterable):
            async for entry in entries:
                pending.append(entry)
                if len(pending) >= batch or entry.size:
                    await flush()
        else:  # a sync producer walks the file system: run it in the thread too
            await asyncio.to_thread(self.write_all, entries)
        await flush()

    def close(self) -> None:
        """End the archive: two zero blocks, then zeros up to a multiple of the record size."""
        if self._closed:
            return
        self._closed = True
        self._links.close()
        end = 2 * BLOCK
        end += -(self._written + end) % RECORD
        self._write(b"\0" * end)


def write_tar(entries: Iterable[PackEntry], sink: BinaryIO | ByteSink, prefix: str) -> TarWriter:
    """Write a whole archive of ``entries`` under ``prefix/`` to ``sink``."""
    writer = TarWriter(sink, prefix)
    writer.write_all(entries)
    writer.close()
    return writer
