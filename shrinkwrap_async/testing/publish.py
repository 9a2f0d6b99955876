"""Publish a source tree as a signed CernVM-FS repository, the way the real server tools do.

``Publisher(out, fqrn, options).publish(source)`` writes a server root
``<out>/cvmfs/<fqrn>/`` (``.cvmfspublished``, ``.cvmfswhitelist``, ``.cvmfsreflog``,
``data/XX/...``), the master public key ``<out>/keys/<fqrn>.pub`` and private material in
``<out>/keys/private/``. Publishing again into the same ``out`` makes the next revision;
catalogs whose content did not change keep their hash. The publisher's own bookkeeping
(catalog fingerprints) lives in ``<out>/publisher/<fqrn>.json``.

``PublishOptions(external=...)`` names repository paths to publish as *external files*, as
a server with ``CVMFS_EXTERNAL_DATA`` and ``-Z none`` does: catalog flag 128, compression
bits "none", hashes over the raw bytes (per chunk for a chunked file), no object in
``data/``. Their content is written by path below ``<out>/external/`` (the docroot of the
external data server; the client's ``CVMFS_EXTERNAL_URL`` points at it). With
``compress_external`` the unchunked ones are zlib-compressed there and hashed so.

Command line: ``python -m shrinkwrap_async.testing.publish --fqrn NAME --source DIR --out
DIR`` (see ``--help``), or ``--profile NAME --seed N`` for a generated benchmark tree.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.catalogs.entry import encode_xattrs
from shrinkwrap_async.catalogs.schema import (
    COMPRESSION_SHIFT,
    HASH_ALGORITHM_SHIFT,
    STATISTICS_KINDS,
    Flag,
)
from shrinkwrap_async.exitcodes import ShrinkwrapError, UsageError
from shrinkwrap_async.hashing import Algorithm, Digest, ObjectSuffix
from shrinkwrap_async.testing import catalog_writer as cw
from shrinkwrap_async.testing.chunking import ChunkSizes, chunk_boundaries
from shrinkwrap_async.testing.signing import RepositoryKeys, make_whitelist, sign_manifest

DEFAULT_CHUNK_SIZES = ChunkSizes(4 << 20, 8 << 20, 16 << 20)
NESTED_MARKER = ".cvmfscatalog"
DIRECTORY_SIZE = 4096
MAX_XATTR_VALUE = 255
ROOT_PATH_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
ZLIB_LEVEL = 6

METAINFO = {
    "administrator": "Test Publisher",
    "email": "nobody@localhost",
    "organisation": "shrinkwrap-async tests",
    "description": "Repository content",
    "url": "http://127.0.0.1/",
    "recommended-stratum0": "stratum 0 url",
    "recommended-stratum1s": ["stratum1 url"],
    "custom": {"_comment": "Written by shrinkwrap_async.testing.publish"},
}

HISTORY_DDL = (
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER,  "
    "CONSTRAINT pk_branch PRIMARY KEY (branch),   FOREIGN KEY (parent) REFERENCES "
    "branches (branch),   CHECK ((branch <> '') OR (parent IS NULL)),   "
    "CHECK ((branch = '') OR (parent IS NOT NULL)))",
    "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER,   timestamp INTEGER, "
    "channel INTEGER, description TEXT, size INTEGER,   branch TEXT, CONSTRAINT pk_tags "
    "PRIMARY KEY (name),   FOREIGN KEY (branch) REFERENCES branches (branch))",
    "CREATE TABLE recycle_bin (hash TEXT, flags INTEGER,   CONSTRAINT pk_hash PRIMARY KEY (hash))",
)
REFLOG_DDL = (
    "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE refs (hash TEXT, type INTEGER, timestamp INTEGER, "
    "CONSTRAINT pk_refs PRIMARY KEY (hash))",
)
REFLOG_CATALOG, REFLOG_CERTIFICATE, REFLOG_HISTORY, REFLOG_METAINFO = 0, 1, 2, 3


class PublishError(ShrinkwrapError):
    """The source tree or the output directory cannot be published."""


# ---------------------------------------------------------------------------------------
# Source tree model


@dataclass(slots=True)
class SourceNode:
    """One entry of a tree to publish (scanned from disk or generated).

    ``content`` is a file path or a picklable zero-argument callable returning the bytes
    (so that worker processes can produce generated content themselves).
    """

    name: str
    kind: str  # "dir", "file", "symlink", "special"
    mode: int
    mtime: int
    uid: int = 0
    gid: int = 0
    size: int = 0  # files: byte count; char/block devices: rdev
    target: str = ""
    xattrs: tuple[tuple[str, bytes], ...] = ()
    children: list[SourceNode] | None = None
    content: str | Callable[[], bytes] | None = None
    inode: tuple[int, int] | None = None  # hard-link identity
    nlink: int = 1


def scan_directory(root: Path) -> SourceNode:
    """Read a directory tree from disk (lstat, user.* xattrs, hard-link identities)."""
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"source {root} is not a directory")
    node = _node_from_stat("", os.fspath(root), st)
    _scan_children(node, os.fspath(root))
    return node


def _read_xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    items = []
    for name in names:
        if not name.startswith("user."):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        if len(value) <= MAX_XATTR_VALUE:
            items.append((name, value))
    return tuple(sorted(items))


def _node_from_stat(name: str, path: str, st: os.stat_result) -> SourceNode:
    mode = st.st_mode
    base = {"name": name, "mode": mode, "mtime": int(st.st_mtime), "uid": st.st_uid}
    base["gid"] = st.st_gid
    if stat.S_ISDIR(mode):
        return SourceNode(kind="dir", children=[], xattrs=_read_xattrs(path), **base)
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        return SourceNode(kind="symlink", target=target, **base)
    identity = (st.st_dev, st.st_ino)
    if stat.S_ISREG(mode):
        return SourceNode(
            kind="file",
            size=st.st_size,
            content=path,
            xattrs=_read_xattrs(path),
            inode=identity,
            nlink=st.st_nlink,
            **base,
        )
    rdev = st.st_rdev if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0
    return SourceNode(kind="special", size=rdev, inode=identity, nlink=st.st_nlink, **base)


def _scan_children(node: SourceNode, path: str) -> None:
    assert node.children is not None
    with os.scandir(path) as entries:
        for entry in entries:
            child = _node_from_stat(entry.name, entry.path, entry.stat(follow_symlinks=False))
            node.children.append(child)
            if child.kind == "dir":
                _scan_children(child, entry.path)


def _walk_file_paths(node: SourceNode, path: str) -> Iterator[tuple[str, SourceNode]]:
    """``(repository path, node)`` of every regular file below ``node`` (at ``path``)."""
    for child in node.children or ():
        child_path = f"{path}/{child.name}"
        if child.kind == "file":
            yield child_path, child
        elif child.kind == "dir":
            yield from _walk_file_paths(child, child_path)


def walk_files(node: SourceNode) -> Iterator[SourceNode]:
    for child in node.children or ():
        if child.kind == "file":
            yield child
        elif child.kind == "dir":
            yield from walk_files(child)


# ---------------------------------------------------------------------------------------
# Content objects (run in worker processes for large trees)


@dataclass(frozen=True, slots=True)
class _StoreSettings:
    data_dir: str
    algorithm: Algorithm
    compress: bool
    chunk_sizes: ChunkSizes | None


@dataclass(frozen=True, slots=True)
class StoredContent:
    """A file's content as stored: one object hash, or chunks ``(offset, size, hash)``."""

    content_hash: bytes | None
    chunks: tuple[tuple[int, int, bytes], ...] = ()


_settings: _StoreSettings | None = None


def _init_worker(settings: _StoreSettings) -> None:
    global _settings
    _settings = settings


def store_object(data_dir: str, digest: Digest, suffix: str, blob: bytes) -> bool:
    """Write ``blob`` as ``data/XX/...``; ``False`` when the object already existed."""
    path = os.path.join(data_dir, digest.object_path(suffix)[len("data/") :])
    if os.path.exists(path):
        return False
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(blob)
    os.replace(temporary, path)
    return True


def _store_bytes(settings: _StoreSettings, data: bytes | memoryview, suffix: str) -> bytes:
    blob = zlib.compress(data, ZLIB_LEVEL) if settings.compress else bytes(data)
    digest = settings.algorithm.hash(blob)
    store_object(settings.data_dir, digest, suffix, blob)
    return digest.raw


def _read_content(content: str | Callable[[], bytes]) -> bytes:
    if isinstance(content, str):
        with open(content, "rb") as handle:
            return handle.read()
    return content()


def _store_content(content: str | Callable[[], bytes]) -> StoredContent:
    settings = _settings
    assert settings is not None
    data = _read_content(content)
    sizes = settings.chunk_sizes
    if sizes is not None and len(data) > sizes.minimum:
        pieces = chunk_boundaries(data, sizes)
        if len(pieces) > 1:
            view = memoryview(data)
            chunks = tuple(
                (offset, size, _store_bytes(settings, view[offset : offset + size], "P"))
                for offset, size in pieces
            )
            return StoredContent(None, chunks)
    return StoredContent(_store_bytes(settings, data, ObjectSuffix.NONE))


def _store_batch(contents: list[str | Callable[[], bytes]]) -> list[StoredContent]:
    return [_store_content(content) for content in contents]


# ---------------------------------------------------------------------------------------
# Options, results, state


@dataclass(frozen=True)
class PublishOptions:
    hash_algorithm: Algorithm = Algorithm.SHA1
    compress: bool = True
    chunk_sizes: ChunkSizes | None = DEFAULT_CHUNK_SIZES
    ttl: int = 240
    whitelist_days: int = 30
    workers: int | None = None  # None: one per core; 0/1: in this process
    external: frozenset[str] = frozenset()  # repository paths ("/a/b") published external
    # External files zlib-compressed on the external server (a server without ``-Z none``);
    # chunked ones stay raw, as each chunk is a byte range that must inflate on its own.
    compress_external: bool = False


@dataclass(frozen=True)
class PublishResult:
    revision: int
    root_hash: Digest
    catalogs: dict[str, Digest]  # mountpoint ("" = root) -> catalog hash
    rewritten_catalogs: tuple[str, ...]
    repository_dir: Path
    public_key: Path
    manifest: bytes
    files: int
    seconds: float
    external_dir: Path | None = None  # docroot of the external files (by path), if any


@dataclass
class _CatalogState:
    hash_hex: str
    size: int
    revision: int
    fingerprint: str


@dataclass
class _PublisherState:
    revision: int = -1
    root_hash: str | None = None
    history_hash: str | None = None
    catalogs: dict[str, _CatalogState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _PublisherState:
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        return cls(
            revision=raw["revision"],
            root_hash=raw["root_hash"],
            history_hash=raw.get("history_hash"),
            catalogs={k: _CatalogState(**v) for k, v in raw["catalogs"].items()},
        )

    def save(self, path: Path) -> None:
        raw = {
            "revision": self.revision,
            "root_hash": self.root_hash,
            "history_hash": self.history_hash,
            "catalogs": {k: vars(v) for k, v in self.catalogs.items()},
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(raw, indent=1, sort_keys=True))
        temporary.replace(path)


@dataclass
class _CatalogBuild:
    mountpoint: str
    rows: list[cw.CatalogRow] = field(default_factory=list)
    children: list[_CatalogBuild] = field(default_factory=list)
    next_group: int = 1
    subtree: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# The publisher


class Publisher:
    def __init__(self, out: Path, fqrn: str, options: PublishOptions | None = None) -> None:
        self.out = Path(out)
        self.fqrn = fqrn
        self.options = options or PublishOptions()
        self.repository_dir = self.out / "cvmfs" / fqrn
        self.data_dir = self.repository_dir / "data"
        self.keys_dir = self.out / "keys"
        self.state_path = self.out / "publisher" / f"{fqrn}.json"
        self.external_dir = self.out / "external"
        self._now = 0

    # -- public API ---------------------------------------------------------------------

    def publish(self, source: Path | SourceNode) -> PublishResult:
        """Publish ``source`` (a directory or a :class:`SourceNode` tree) as the next revision."""
        started = time.perf_counter()
        tree = source if isinstance(source, SourceNode) else scan_directory(Path(source))
        self.prepare_directories()
        keys = RepositoryKeys.load_or_create(self.keys_dir, self.fqrn)
        state = _PublisherState.load(self.state_path)
        self._now = max(int(time.time()), 0)
        algorithm = self.options.hash_algorithm

        reflog_entries: list[tuple[str, int]] = []
        if state.root_hash is None:
            # Like `cvmfs_server mkfs`: revision 0 is an empty root catalog.
            empty_hash, _ = self._write_empty_root()
            state.root_hash, state.revision = empty_hash, 0
            reflog_entries.append((empty_hash, REFLOG_CATALOG))

        external = self._external_nodes(tree)
        stored = self._store_contents(tree, skip=set(external))
        stored.update(self._store_external(external))
        root_build = self._build_catalogs(tree, stored)
        revision = state.revision + 1
        catalogs: dict[str, Digest] = {}
        rewritten: list[str] = []
        root_ref, root_size = self._finish_catalog(
            root_build, state, revision, catalogs, rewritten, is_root=True
        )
        root_hash = root_ref.hash_hex
        reflog_entries.append((root_hash, REFLOG_CATALOG))

        certificate_blob = zlib.compress(keys.certificate_pem, ZLIB_LEVEL)
        certificate = algorithm.hash(certificate_blob)
        store_object(
            os.fspath(self.data_dir), certificate, ObjectSuffix.CERTIFICATE, certificate_blob
        )
        metainfo_blob = zlib.compress((json.dumps(METAINFO, indent=2) + "\n").encode(), ZLIB_LEVEL)
        metainfo = algorithm.hash(metainfo_blob)
        store_object(os.fspath(self.data_dir), metainfo, ObjectSuffix.METAINFO, metainfo_blob)
        history = self._write_history(state, revision, root_hash, root_size)
        reflog_entries += [
            (certificate.hex, REFLOG_CERTIFICATE),
            (history.hex, REFLOG_HISTORY),
            (metainfo.hex, REFLOG_METAINFO),
        ]
        reflog = self._update_reflog(reflog_entries)

        manifest_body = "".join(
            f"{key}{value}\n"
            for key, value in (
                ("C", root_hash),
                ("B", root_size),
                ("R", ROOT_PATH_MD5),
                ("D", self.options.ttl),
                ("S", revision),
                ("G", "no"),
                ("A", "no"),
                ("N", self.fqrn),
                ("X", certificate.hex),
                ("H", history.hex),
                ("T", self._now),
                ("M", metainfo.hex),
                ("Y", reflog.hex),
            )
        ).encode()
        manifest = sign_manifest(manifest_body, keys, algorithm)
        whitelist = make_whitelist(
            keys,
            algorithm,
            days=self.options.whitelist_days,
            now=dt.datetime.fromtimestamp(self._now, dt.UTC),
        )
        _atomic_write(self.repository_dir / ".cvmfswhitelist", whitelist)
        _atomic_write(self.repository_dir / ".cvmfspublished", manifest)

        state.revision = revision
        state.root_hash = root_hash
        state.history_hash = history.hex
        state.save(self.state_path)
        return PublishResult(
            revision=revision,
            root_hash=Digest.from_hex(root_hash),
            catalogs=catalogs,
            rewritten_catalogs=tuple(rewritten),
            repository_dir=self.repository_dir,
            public_key=keys.public_key_path,
            manifest=manifest,
            files=sum(1 for _ in walk_files(tree)),
            seconds=time.perf_counter() - started,
            external_dir=self.external_dir if external else None,
        )

    # -- hooks for subclasses (hostile repositories: shrinkwrap_async.testing.hostile) -------

    def catalog_rows(self, mountpoint: str, rows: list[cw.CatalogRow]) -> list[cw.CatalogRow]:
        """The rows of the catalog of ``mountpoint`` (``""``: root) as they will be written.

        Called once per catalog of a revision after the rows were built from the source
        tree (statistics, fingerprints and signatures follow). Override to add or change
        rows; the default keeps them.
        """
        return rows

    def catalog_blob(self, mountpoint: str, blob: bytes, size: int) -> tuple[bytes, int]:
        """The stored bytes of the catalog of ``mountpoint`` and its inflated ``size``.

        ``blob`` is the compressed SQLite file just written; whatever this returns is stored
        under its own hash and referenced (with that size) by the parent catalog or the
        manifest, so the repository stays correctly signed. Not called for revision 0's
        empty root. The default keeps the catalog.
        """
        return blob, size

    # -- layout ----------------------------------------------------------------------------

    def prepare_directories(self) -> None:
        """Create the server root's layout (done by ``publish``; call it first to store
        objects of your own before publishing)."""
        for top in range(256):
            (self.data_dir / f"{top:02x}").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "txn").mkdir(exist_ok=True)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)

    def _store_settings(self) -> _StoreSettings:
        return _StoreSettings(
            os.fspath(self.data_dir),
            self.options.hash_algorithm,
            self.options.compress,
            self.options.chunk_sizes,
        )

    # -- file content ------------------------------------------------------------------

    def _store_contents(
        self, tree: SourceNode, skip: set[int] | None = None
    ) -> dict[int, StoredContent]:
        """Compress, hash and store every distinct file but those whose ``id`` is in
        ``skip``; result keyed by ``id(node)``."""
        unique: dict[object, list[SourceNode]] = {}
        for node in walk_files(tree):
            if skip and id(node) in skip:
                continue
            key = node.inode if node.inode is not None else _content_key(node)
            unique.setdefault(key, []).append(node)
        groups = list(unique.values())
        contents = [group[0].content for group in groups]
        for content in contents:
            if content is None:
                raise PublishError("a file node has no content")
        total = sum(group[0].size for group in groups)
        workers = self.options.workers
        if workers is None:
            workers = os.cpu_count() or 1
        settings = self._store_settings()
        if workers <= 1 or (len(groups) < 64 and total < (16 << 20)):
            _init_worker(settings)
            results = _store_batch(contents)  # type: ignore[arg-type]
        else:
            batch = max(1, min(256, len(contents) // (workers * 8) or 1))
            batches = [contents[i : i + batch] for i in range(0, len(contents), batch)]
            with ProcessPoolExecutor(
                max_workers=workers, initializer=_init_worker, initargs=(settings,)
            ) as pool:
                results = [item for part in pool.map(_store_batch, batches) for item in part]
        stored: dict[int, StoredContent] = {}
        for group, result in zip(groups, results, strict=True):
            for node in group:
                stored[id(node)] = result
        return stored

    def _external_nodes(self, tree: SourceNode) -> dict[int, tuple[str, SourceNode]]:
        """The files named by ``options.external``, keyed by ``id(node)``."""
        wanted = self.options.external
        if not wanted:
            return {}
        found = {path: node for path, node in _walk_file_paths(tree, "") if path in wanted}
        missing = sorted(wanted - found.keys())
        if missing:
            raise PublishError(f"external paths not regular files of the source: {missing}")
        return {id(node): (path, node) for path, node in found.items()}

    def _store_external(
        self, external: dict[int, tuple[str, SourceNode]]
    ) -> dict[int, StoredContent]:
        """Write each external file's content to ``external_dir`` by path; hash it raw.

        Large files are chunked as any other (each chunk is then a byte range of the one
        external file), nothing goes to ``data/``.
        """
        algorithm = self.options.hash_algorithm
        sizes = self.options.chunk_sizes
        stored: dict[int, StoredContent] = {}
        for key, (path, node) in external.items():
            assert node.content is not None
            data = _read_content(node.content)
            target = self.external_dir / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            pieces = chunk_boundaries(data, sizes) if sizes is not None else [(0, len(data))]
            if len(pieces) == 1 and self.options.compress_external:
                blob = zlib.compress(data, ZLIB_LEVEL)
                _atomic_write(target, blob)
                stored[key] = StoredContent(algorithm.hash(blob).raw)
                continue
            _atomic_write(target, data)
            if len(pieces) > 1:
                chunks = tuple(
                    (offset, size, algorithm.hash(data[offset : offset + size]).raw)
                    for offset, size in pieces
                )
                stored[key] = StoredContent(None, chunks)
            else:
                stored[key] = StoredContent(algorithm.hash(data).raw)
        return stored

    # -- catalogs ------------------------------------------------------------------------

    def _build_catalogs(self, tree: SourceNode, stored: dict[int, StoredContent]) -> _CatalogBuild:
        root = _CatalogBuild("")
        root.rows.append(self._directory_row("", tree, Flag.DIR))
        self._add_children(root, "", tree, stored)
        pending = [root]
        while pending:
            build = pending.pop()
            build.rows = self.catalog_rows(build.mountpoint, build.rows)
            pending += build.children
        return root

    def _directory_row(self, path: str, node: SourceNode, flags: int) -> cw.CatalogRow:
        subdirectories = sum(1 for child in node.children or () if child.kind == "dir")
        return cw.CatalogRow(
            path=path,
            name=node.name if path else "",
            mode=node.mode,
            size=DIRECTORY_SIZE,
            mtime=node.mtime,
            uid=node.uid,
            gid=node.gid,
            flags=int(flags),
            hardlinks=2 + subdirectories,
            xattr=encode_xattrs(node.xattrs),
        )

    def _add_children(
        self,
        catalog: _CatalogBuild,
        path: str,
        node: SourceNode,
        stored: dict[int, StoredContent],
    ) -> None:
        children = sorted(node.children or (), key=lambda c: os.fsencode(c.name))
        groups = self._hardlink_groups(catalog, children)
        for child in children:
            child_path = f"{path}/{child.name}"
            if child.kind == "dir":
                if _has_marker(child):
                    nested = _CatalogBuild(child_path)
                    catalog.rows.append(
                        self._directory_row(child_path, child, Flag.DIR | Flag.NESTED_MOUNTPOINT)
                    )
                    nested.rows.append(
                        self._directory_row(child_path, child, Flag.DIR | Flag.NESTED_ROOT)
                    )
                    catalog.children.append(nested)
                    self._add_children(nested, child_path, child, stored)
                else:
                    catalog.rows.append(self._directory_row(child_path, child, Flag.DIR))
                    self._add_children(catalog, child_path, child, stored)
            else:
                catalog.rows.append(
                    self._leaf_row(child_path, child, stored, groups.get(id(child), 1))
                )

    @staticmethod
    def _hardlink_groups(catalog: _CatalogBuild, children: list[SourceNode]) -> dict[int, int]:
        """Packed ``hardlinks`` values of files sharing an inode inside one directory."""
        by_inode: dict[tuple[int, int], list[SourceNode]] = {}
        for child in children:
            if child.kind in ("file", "special") and child.inode is not None and child.nlink > 1:
                by_inode.setdefault(child.inode, []).append(child)
        packed: dict[int, int] = {}
        for members in by_inode.values():
            if len(members) < 2:
                continue
            value = cw.pack_hardlinks(catalog.next_group, len(members))
            catalog.next_group += 1
            for member in members:
                packed[id(member)] = value
        return packed

    def _leaf_row(
        self, path: str, node: SourceNode, stored: dict[int, StoredContent], hardlinks: int
    ) -> cw.CatalogRow:
        row = cw.CatalogRow(
            path=path,
            name=node.name,
            mode=node.mode,
            size=node.size,
            mtime=node.mtime,
            uid=node.uid,
            gid=node.gid,
            flags=int(Flag.FILE),
            hardlinks=hardlinks,
        )
        if node.kind == "symlink":
            row.flags |= Flag.LINK
            row.symlink = node.target
            row.size = len(os.fsencode(node.target))
            return row
        if node.kind == "special":
            row.flags |= Flag.FILE_SPECIAL
            return row
        content = stored[id(node)]
        row.xattr = encode_xattrs(node.xattrs)
        row.flags |= self.options.hash_algorithm.flag << HASH_ALGORITHM_SHIFT
        if path in self.options.external:
            row.flags |= Flag.FILE_EXTERNAL
            if content.chunks or not self.options.compress_external:
                row.flags |= 1 << COMPRESSION_SHIFT  # stored raw
        elif not self.options.compress:
            row.flags |= 1 << COMPRESSION_SHIFT
        if content.chunks:
            row.flags |= Flag.FILE_CHUNK
            row.chunks = list(content.chunks)
        else:
            row.content_hash = content.content_hash
        return row

    def _finish_catalog(
        self,
        build: _CatalogBuild,
        state: _PublisherState,
        root_revision: int,
        catalogs: dict[str, Digest],
        rewritten: list[str],
        *,
        is_root: bool = False,
    ) -> tuple[cw.NestedRef, int]:
        """Write (or reuse) ``build`` and its nested catalogs; post-order."""
        nested_refs: list[cw.NestedRef] = []
        subtree = dict.fromkeys(STATISTICS_KINDS, 0)
        for child in build.children:
            ref, _ = self._finish_catalog(child, state, root_revision, catalogs, rewritten)
            nested_refs.append(ref)
            child_self = cw.self_counters(child.rows, len(child.children))
            cw.add_counters(subtree, child_self)
            cw.add_counters(subtree, child.subtree)
        build.subtree = subtree
        fingerprint = cw.catalog_fingerprint(build.rows, nested_refs)
        previous = state.catalogs.get(build.mountpoint)
        if not is_root and previous is not None and previous.fingerprint == fingerprint:
            catalogs[build.mountpoint] = Digest.from_hex(previous.hash_hex)
            return cw.NestedRef(build.mountpoint, previous.hash_hex, previous.size), previous.size
        if is_root:
            revision = root_revision
            previous_hash = state.root_hash
        else:
            revision = previous.revision + 1 if previous else 1
            previous_hash = previous.hash_hex if previous else cw.NULL_HASH_HEX
        properties = cw.catalog_properties(
            root_prefix=None if is_root else build.mountpoint,
            revision=revision,
            previous_revision=previous_hash,
            last_modified=self._now,
            ttl=self.options.ttl if is_root else None,
        )
        self_stats = cw.self_counters(build.rows, len(build.children))
        digest, size = self._store_catalog(
            build.rows, nested_refs, properties, self_stats, subtree, mountpoint=build.mountpoint
        )
        state.catalogs[build.mountpoint] = _CatalogState(digest.hex, size, revision, fingerprint)
        catalogs[build.mountpoint] = digest
        rewritten.append(build.mountpoint)
        return cw.NestedRef(build.mountpoint, digest.hex, size), size

    def _store_catalog(
        self,
        rows: list[cw.CatalogRow],
        nested: list[cw.NestedRef],
        properties: dict[str, str],
        self_stats: dict[str, int],
        subtree: dict[str, int],
        *,
        mountpoint: str | None = None,
    ) -> tuple[Digest, int]:
        with tempfile.TemporaryDirectory(dir=self.data_dir / "txn") as scratch:
            path = Path(scratch) / "catalog.db"
            cw.write_catalog(path, rows, nested, properties, self_stats, subtree)
            raw = path.read_bytes()
        blob, size = zlib.compress(raw, ZLIB_LEVEL), len(raw)
        if mountpoint is not None:
            blob, size = self.catalog_blob(mountpoint, blob, size)
        digest = self.options.hash_algorithm.hash(blob)
        store_object(os.fspath(self.data_dir), digest, ObjectSuffix.CATALOG, blob)
        return digest, size

    def _write_empty_root(self) -> tuple[str, int]:
        row = cw.CatalogRow(
            path="", name="", mode=0o40755, size=DIRECTORY_SIZE, mtime=self._now,
            uid=os.getuid(), gid=os.getgid(), flags=int(Flag.DIR), hardlinks=2,
        )  # fmt: skip
        properties = {
            "schema": "2.5",
            "schema_revision": "6",
            "revision": "0",
            "last_modified": str(self._now),
        }
        stats = cw.self_counters([row], 0)
        digest, size = self._store_catalog(
            [row], [], properties, stats, dict.fromkeys(STATISTICS_KINDS, 0)
        )
        return digest.hex, size

    # -- history, reflog ------------------------------------------------------------------

    def _write_history(
        self, state: _PublisherState, revision: int, root_hash: str, root_size: int
    ) -> Digest:
        algorithm = self.options.hash_algorithm
        with tempfile.TemporaryDirectory(dir=self.data_dir / "txn") as scratch:
            path = Path(scratch) / "history.db"
            if state.history_hash:
                previous = Digest.from_hex(state.history_hash)
                blob = self.data_dir.parent / previous.object_path(ObjectSuffix.HISTORY)
                path.write_bytes(zlib.decompress(blob.read_bytes()))
                db = sqlite3.connect(path, isolation_level=None)
                db.execute(
                    "INSERT OR REPLACE INTO properties (key, value) VALUES "
                    "('previous_revision', ?)",
                    (state.history_hash,),
                )
            else:
                db = sqlite3.connect(path, isolation_level=None)
                for statement in HISTORY_DDL:
                    db.execute(statement)
                db.executemany(
                    "INSERT INTO properties (key, value) VALUES (?, ?)",
                    [("schema", "1.0"), ("schema_revision", "3"), ("fqrn", self.fqrn)],
                )
                db.execute("INSERT INTO branches VALUES ('', NULL, 0)")
            stamp = dt.datetime.fromtimestamp(self._now, dt.UTC)
            name = f"generic-{stamp:%Y-%m-%dT%H:%M:%SZ}"
            taken = {row[0] for row in db.execute("SELECT name FROM tags")}
            if name in taken:
                name = f"{name}-r{revision}"
            tag = "INSERT OR REPLACE INTO tags VALUES (?, ?, ?, ?, 0, ?, ?, '')"
            db.execute(tag, (name, root_hash, revision, self._now, "", root_size))
            trunk = db.execute(
                "SELECT hash, revision, timestamp, size FROM tags WHERE name = 'trunk'"
            ).fetchone()
            if trunk is not None:
                db.execute(tag, ("trunk-previous", *trunk[:3], "default undo target", trunk[3]))
            db.execute(tag, ("trunk", root_hash, revision, self._now, "current HEAD", root_size))
            db.close()
            blob_bytes = zlib.compress(path.read_bytes(), ZLIB_LEVEL)
        digest = algorithm.hash(blob_bytes)
        store_object(os.fspath(self.data_dir), digest, ObjectSuffix.HISTORY, blob_bytes)
        return digest

    def _update_reflog(self, entries: list[tuple[str, int]]) -> Digest:
        path = self.repository_dir / ".cvmfsreflog"
        scratch = self.repository_dir / ".cvmfsreflog.tmp"
        if path.exists():
            shutil.copyfile(path, scratch)
            db = sqlite3.connect(scratch, isolation_level=None)
        else:
            scratch.unlink(missing_ok=True)
            db = sqlite3.connect(scratch, isolation_level=None)
            for statement in REFLOG_DDL:
                db.execute(statement)
            db.executemany(
                "INSERT INTO properties (key, value) VALUES (?, ?)",
                [("schema", "1.0"), ("schema_revision", "0"), ("fqrn", self.fqrn)],
            )
        db.executemany(
            "INSERT OR REPLACE INTO refs (hash, type, timestamp) VALUES (?, ?, ?)",
            [(hash_hex, kind, self._now) for hash_hex, kind in entries],
        )
        db.close()
        scratch.replace(path)
        return self.options.hash_algorithm.hash(path.read_bytes())


def _content_key(node: SourceNode) -> object:
    """Identical generated content (a hashable callable) is stored once."""
    if isinstance(node.content, str):
        return id(node)
    try:
        hash(node.content)
    except TypeError:
        return id(node)
    return ("content", node.content)


def _has_marker(node: SourceNode) -> bool:
    return any(
        child.name == NESTED_MARKER and child.kind == "file" for child in node.children or ()
    )


def _atomic_write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


# ---------------------------------------------------------------------------------------
# Command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shrinkwrap_async.testing.publish",
        description="Publish a directory (or a generated profile) as a signed CernVM-FS "
        "repository below OUT/cvmfs/FQRN; publishing again makes the next revision.",
    )
    parser.add_argument("--fqrn", required=True, help="repository name, e.g. test.local")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", type=Path, help="directory tree to publish")
    source.add_argument("--profile", help="generated tree: reference, small, medium, large")
    parser.add_argument("--seed", type=int, default=1, help="seed of --profile (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--hash", default="sha1", choices=["sha1", "rmd160", "shake128"])
    parser.add_argument("--compression", default="zlib", choices=["zlib", "none"])
    parser.add_argument("--chunk-min", type=int, default=DEFAULT_CHUNK_SIZES.minimum)
    parser.add_argument("--chunk-avg", type=int, default=DEFAULT_CHUNK_SIZES.average)
    parser.add_argument("--chunk-max", type=int, default=DEFAULT_CHUNK_SIZES.maximum)
    parser.add_argument("--no-chunking", action="store_true", help="never chunk files")
    parser.add_argument("--whitelist-days", type=int, default=30)
    parser.add_argument("--ttl", type=int, default=240)
    parser.add_argument("--workers", type=int, default=None, help="worker processes")
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="PATH",
        help="publish repository path PATH (/a/b) as an external file; its content goes "
        "to OUT/external/PATH (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        chunk_sizes = None
        if not args.no_chunking:
            try:
                chunk_sizes = ChunkSizes(args.chunk_min, args.chunk_avg, args.chunk_max)
            except ValueError as error:
                raise UsageError(str(error)) from None
        options = PublishOptions(
            hash_algorithm=Algorithm.from_name(args.hash),
            compress=args.compression == "zlib",
            chunk_sizes=chunk_sizes,
            ttl=args.ttl,
            whitelist_days=args.whitelist_days,
            workers=args.workers,
            external=frozenset(args.external),
        )
        if args.profile:
            from shrinkwrap_async.testing.synthetic import build_profile

            try:
                source: Path | SourceNode = build_profile(args.profile, args.seed)
            except KeyError as error:
                raise UsageError(str(error.args[0])) from None
        else:
            source = args.source
        result = Publisher(args.out, args.fqrn, options).publish(source)
    except ShrinkwrapError as error:
        print(f"publish: {error}", file=sys.stderr)
        return int(error.exit_code)
    print(
        f"revision {result.revision} root {result.root_hash.hex} files {result.files} "
        f"catalogs {len(result.catalogs)} rewritten {len(result.rewritten_catalogs)} "
        f"in {result.seconds:.1f} s -> {result.repository_dir}"
    )
    return 0


if __name__ == "__main__":
    # Run the package module's main, so that its classes are the ones the profiles use.
    from shrinkwrap_async.testing.publish import main as package_main

    sys.exit(package_main())
