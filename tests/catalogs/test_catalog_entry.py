"""md5path vectors, the xattr codec and the row decoding of DirEntry."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shrinkwrap_async.catalogs.entry import (
    ENTRY_COLUMNS,
    CatalogError,
    decode_xattrs,
    encode_xattrs,
    entry_from_row,
    md5path,
)
from shrinkwrap_async.exitcodes import ExitCode, ShrinkwrapError
from shrinkwrap_async.hashing import Algorithm


@pytest.mark.parametrize(
    ("path", "pair"),
    [
        ("", (338333539836370388, 9098107892288553193)),
        ("/software", (3445601412511816508, 6267067367417020806)),
        ("/software/v1/bin", (-5573878024006270728, -2647145546033640383)),
        ("/software/v1/bin/app", (6896982515407964499, -1554798640376847702)),
        (
            "/lib/lhcb/ALIGNMENT/ALIGNMENT_v9r2/Phys/CommonParticles/tests/qmtest/"
            "commonparticles.qms/.svn/tmp/prop-base",
            (4069996547627848455, -3471940481646685085),
        ),
    ],
)
def test_md5path_vectors(path: str, pair: tuple[int, int]) -> None:
    assert md5path(path) == pair


def test_md5path_of_non_utf8_name_hashes_the_raw_bytes() -> None:
    import hashlib
    import struct

    raw = b"/caf\xe9"
    name = raw.decode("utf-8", "surrogateescape")
    assert md5path(name) == struct.unpack("<qq", hashlib.md5(raw).digest())


def test_xattr_known_encoding() -> None:
    blob = bytes.fromhex("01010803757365722e666f6f626172")
    assert encode_xattrs([("user.foo", b"bar")]) == blob
    assert decode_xattrs(blob) == (("user.foo", b"bar"),)


def test_xattr_empty_is_null() -> None:
    assert encode_xattrs([]) is None
    assert decode_xattrs(None) == ()
    assert decode_xattrs(b"") == ()


def test_xattr_sorted_by_name_bytes() -> None:
    blob = encode_xattrs([("user.z", b"1"), ("user.a", b"")])
    assert blob is not None
    assert blob[2:4] == bytes((6, 0)) and blob[4:10] == b"user.a"
    assert decode_xattrs(blob) == (("user.a", b""), ("user.z", b"1"))


@given(
    st.dictionaries(
        st.binary(min_size=1, max_size=255).filter(lambda b: b"\0" not in b),
        st.binary(max_size=255),
        max_size=20,
    )
)
def test_xattr_round_trip(items: dict[bytes, bytes]) -> None:
    named = {k.decode("utf-8", "surrogateescape"): v for k, v in items.items()}
    blob = encode_xattrs(named.items())
    assert dict(decode_xattrs(blob)) == named


@pytest.mark.parametrize(
    "blob",
    [
        b"\x02\x01\x01\x01ab",  # version 2
        b"\x00\x00",  # version 0
        b"\x01",  # no count
        b"\x01\x01",  # count 1, no entry
        b"\x01\x01\x08",  # half an entry header
        b"\x01\x01\x08\x03user.fooba",  # value cut short
        b"\x01\x02\x01\x01ab",  # second entry missing
        b"\x01\x01\x01\x01abEXTRA",  # trailing bytes
        b"\x01\x01\x00\x01a",  # empty name
    ],
)
def test_xattr_bad_blobs_are_catalog_errors(blob: bytes) -> None:
    with pytest.raises(CatalogError):
        decode_xattrs(blob)


def test_xattr_encoder_refuses_what_the_format_cannot_hold() -> None:
    with pytest.raises(ValueError):
        encode_xattrs([("user.long", b"x" * 256)])
    with pytest.raises(ValueError):
        encode_xattrs([("", b"x")])
    with pytest.raises(ValueError):
        encode_xattrs([("a\0b", b"x")])


def test_catalog_error_is_a_trust_failure() -> None:
    assert issubclass(CatalogError, ShrinkwrapError)
    assert CatalogError("x").exit_code == ExitCode.TRUST == 3


def row(**values: object) -> tuple:
    defaults: dict[str, object] = {
        "name": "f",
        "mode": stat.S_IFREG | 0o644,
        "size": 5,
        "mtime": 1700000000,
        "uid": 0,
        "gid": 0,
        "flags": 4,
        "hash": bytes(20),
        "symlink": "",
        "hardlinks": 1,
        "xattr": None,
    }
    defaults.update(values)
    return tuple(defaults[c] for c in ENTRY_COLUMNS)


def test_entry_hardlink_group_is_unsigned_high_word() -> None:
    packed = (0xFFFFFFFE << 32) | 3
    entry = entry_from_row("/f", row(hardlinks=packed - 2**64))  # as SQLite stores it
    assert (entry.hardlink_group, entry.linkcount) == (0xFFFFFFFE, 3)
    plain = entry_from_row("/f", row(hardlinks=None))
    assert (plain.hardlink_group, plain.linkcount) == (0, 1)


def test_entry_flags() -> None:
    entry = entry_from_row("/f", row(flags=4 | (2 << 8) | (1 << 11)))
    assert entry.hash_algorithm is Algorithm.SHAKE128 and not entry.compressed
    assert entry.content_hash is not None and entry.content_hash.hex.endswith("-shake128")
    chunked = entry_from_row("/c", row(flags=4 | 64, hash=None))
    assert chunked.is_chunked and chunked.compressed and chunked.content_hash is None
    external = entry_from_row("/e", row(flags=4 | 128 | (1 << 11)))
    assert external.is_external and not external.compressed
    directory = entry_from_row("/d", row(mode=stat.S_IFDIR | 0o755, flags=1 | 0x4000, hash=None))
    assert directory.is_directory and directory.is_bind_mountpoint and not directory.compressed
    hidden = entry_from_row("/.cvmfs", row(mode=stat.S_IFDIR | 0o555, flags=0x8003, hash=None))
    assert hidden.is_hidden and hidden.is_nested_mountpoint and not hidden.is_nested_root
    link = entry_from_row("/l", row(mode=stat.S_IFLNK | 0o777, flags=12, hash=None, symlink="t"))
    assert link.is_symlink and link.symlink == "t" and not link.is_special
    block = entry_from_row("/b", row(mode=stat.S_IFBLK | 0o600, flags=20, size=2049, hash=None))
    assert block.is_special and block.rdev == 2049


@pytest.mark.parametrize(
    "values",
    [
        {"flags": 4 | (3 << 8)},  # unknown hash algorithm
        {"flags": 4 | (5 << 11)},  # unknown compression of a regular file
        {"hash": b"\x01" * 19},  # short digest
        {"xattr": b"\x07\x00"},  # bad xattr version
    ],
)
def test_entry_invalid_rows(values: dict[str, object]) -> None:
    with pytest.raises(CatalogError):
        entry_from_row("/f", row(**values))


def test_entry_non_utf8_bytes_survive() -> None:
    entry = entry_from_row("/x", row(name=b"caf\xe9", symlink=b"\xff"))
    assert entry.name.encode("utf-8", "surrogateescape") == b"caf\xe9"
    assert entry.symlink.encode("utf-8", "surrogateescape") == b"\xff"
