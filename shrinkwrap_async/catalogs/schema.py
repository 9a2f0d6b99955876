"""Catalog schema facts shared by the reader and the test publisher.

The DDL is the one CernVM-FS 2.11 writes for schema 2.5, revision 6 (the statements are
stored verbatim in ``sqlite_master``, spacing included, so the publisher reproduces them
exactly). Flag bits follow ``SqlDirent`` of the upstream catalog code.
"""

from __future__ import annotations

import enum

SCHEMA_VERSION = "2.5"
SCHEMA_REVISION = 6

CATALOG_DDL: tuple[str, ...] = (
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, "
    "parent_2 INTEGER, hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, "
    "mtime INTEGER, flags INTEGER, name TEXT, symlink TEXT, uid INTEGER, gid INTEGER,  "
    "xattr BLOB,  CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2))",
    "CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2)",
    "CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, "
    "size INTEGER,  hash BLOB,  CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, "
    "offset, size),  FOREIGN KEY (md5path_1, md5path_2) REFERENCES    "
    "catalog(md5path_1, md5path_2))",
    "CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_nested_catalogs PRIMARY KEY (path))",
    "CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path))",
    "CREATE TABLE statistics (counter TEXT, value INTEGER, "
    "CONSTRAINT pk_statistics PRIMARY KEY (counter))",
)

STATISTICS_KINDS: tuple[str, ...] = (
    "regular",
    "symlink",
    "special",
    "dir",
    "nested",
    "chunked",
    "chunks",
    "file_size",
    "chunked_size",
    "xattr",
    "external",
    "external_file_size",
)
STATISTICS_COUNTERS: tuple[str, ...] = tuple(
    f"{scope}_{kind}" for scope in ("self", "subtree") for kind in STATISTICS_KINDS
)


class Flag(enum.IntFlag):
    DIR = 1
    NESTED_MOUNTPOINT = 2
    FILE = 4
    LINK = 8
    FILE_SPECIAL = 16
    NESTED_ROOT = 32
    FILE_CHUNK = 64
    FILE_EXTERNAL = 128
    BIND_MOUNTPOINT = 0x4000
    HIDDEN = 0x8000
    DIRECT_IO = 0x10000


HASH_ALGORITHM_SHIFT = 8
COMPRESSION_SHIFT = 11
FIELD_MASK = 7


class Compression(enum.IntEnum):
    ZLIB = 0
    NONE = 1


def hash_algorithm_bits(flags: int) -> int:
    return (flags >> HASH_ALGORITHM_SHIFT) & FIELD_MASK


def compression_bits(flags: int) -> int:
    return (flags >> COMPRESSION_SHIFT) & FIELD_MASK
