"""Checking an exported tree against its catalogs, and its ``.data`` objects against their hashes.

What was exported (root hash, spec) comes from ``<dest-base>/.provenance/<fqrn>/export.json``.
The catalogs are read through the catalog cache (a miss costs a hash-verified download).
For every entry the spec selects, the tree must hold the right type, mode, symlink target
and, for regular files, a hard link to the expected ``.data`` object. Every object is
re-hashed once: the content hash is taken over the *stored* bytes, so an uncompressed object
is hashed as it is, and a zlib object is recompressed the way the server does (level 6);
when that does not reproduce the hash (another zlib build), the object is downloaded and
its inflated bytes compared, so a mismatch is only reported when the bytes really differ.
Chunked files are checked chunk by chunk against the catalog's chunk list.
"""

from __future__ import annotations

import logging
import os
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shrinkwrap_async.catalogs.cache import CatalogCache, usable_catalog_cache_dir
from shrinkwrap_async.catalogs.entry import DirEntry
from shrinkwrap_async.catalogs.reader import Catalog
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.config.variant_symlinks import expand_variant_symlink
from shrinkwrap_async.hashing import Digest, ObjectSuffix
from shrinkwrap_async.link.tree_writer import MARKER_NAME
from shrinkwrap_async.network.errors import FetchError
from shrinkwrap_async.pipeline.decompress_verify import ContentError, inflate_whole
from shrinkwrap_async.pipeline.spec_filter import select_children
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.provenance import read_export_record
from shrinkwrap_async.store.object_names import ObjectMeta, chunk_list_digest, object_name

log = logging.getLogger(__name__)
ZLIB_LEVEL = 6  # the server's deflate level (zlib's default)


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # object-corrupt, object-missing, missing, wrong-type, wrong-mode,
    # wrong-link, wrong-target, extraneous, unverifiable
    path: str  # repository path ("/" for the root); "" for objects
    detail: str
    object: str = ""

    def line(self) -> str:
        where = self.path or self.object
        return f"{self.kind}: {where}: {self.detail}"


@dataclass
class VerifyReport:
    fqrn: str
    root_hash: str
    entries_checked: int = 0
    objects_checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def bad_objects(self) -> set[str]:
        return {p.object for p in self.problems if p.kind == "object-corrupt" and p.object}


class TreeVerifier:
    """Walks the catalogs of one export and checks the tree and the objects it links to."""

    def __init__(
        self,
        settings: ClientSettings,
        dest_base: Path,
        fetcher: Any,
        *,
        store_root: Path | None = None,
        owner: Callable[[int, int], tuple[int, int]] | None = None,
    ) -> None:
        from shrinkwrap_async.pipeline.runner import Ownership

        self.settings = settings
        self.fqrn = settings.fqrn
        self.tree = dest_base / settings.fqrn
        self.store = store_root or dest_base / ".data"
        self.fetcher = fetcher
        self.owner = owner or Ownership(settings)
        self.env = settings.symlink_environment()
        self.cache = CatalogCache(usable_catalog_cache_dir(settings) / "catalogs", fetcher)
        self.privileged = os.geteuid() == 0
        self._objects_seen: set[str] = set()

    async def verify(self, root_hash: str, spec: Spec) -> VerifyReport:
        report = VerifyReport(self.fqrn, root_hash)
        root = await self.cache.open(Digest.from_hex(root_hash), "")
        try:
            await self._walk(root, report, spec)
        finally:
            await root.close()
        return report

    async def _walk(self, root: Catalog, report: VerifyReport, spec: Spec) -> None:
        """Every directory the spec selects, depth first: a loop with a stack rather than
        recursion (a tree may be thousands of levels deep). A nested catalog is opened
        when its directory's turn comes and closed once its subtree is done."""
        # (catalog, directory) to check; (catalog, nested mountpoint entry) to open; or a
        # catalog whose subtree is done, to close
        stack: list[tuple[Catalog, str] | tuple[Catalog, DirEntry] | Catalog] = [(root, "")]
        try:
            while stack:
                item = stack.pop()
                if isinstance(item, Catalog):
                    await item.close()
                    continue
                catalog, where = item
                if isinstance(where, DirEntry):
                    ref = await catalog.nested_catalog(where.path)
                    if ref is not None:
                        nested = await self.cache.open(ref.digest, where.path)
                        stack += (nested, (nested, where.path))
                    continue
                subdirs = await self._directory(catalog, where, report, spec)
                for entry in reversed(subdirs):
                    stack.append((catalog, entry if entry.is_nested_mountpoint else entry.path))
        finally:
            for item in stack:
                if isinstance(item, Catalog):
                    await item.close()

    async def _directory(
        self, catalog: Catalog, path: str, report: VerifyReport, spec: Spec
    ) -> list[DirEntry]:
        """Check the entries of directory ``path``; the subdirectories to check next."""
        entries = [e async for e in catalog.list_directory(path)]
        kept = {MARKER_NAME} if path == "" else set()
        subdirs: list[DirEntry] = []
        for entry, selection in select_children(spec, entries):
            kept.add(entry.name)
            report.entries_checked += 1
            if await self._entry(catalog, entry, report) and selection.descend:
                subdirs.append(entry)
        try:
            present = set(os.listdir(self.tree / path.lstrip("/")))
        except OSError:
            present = set()
        for name in sorted(present - kept):
            report.problems.append(Problem("extraneous", f"{path}/{name}", "not in the catalog"))
        return subdirs

    async def _entry(self, catalog: Catalog, entry: DirEntry, report: VerifyReport) -> bool:
        """Check one entry; returns whether it is a directory present in the tree."""
        target = self.tree / entry.path.lstrip("/")
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            if entry.is_special and not stat.S_ISFIFO(entry.mode) and not self.privileged:
                return False  # device nodes are skipped when not privileged
            report.problems.append(Problem("missing", entry.path, "not in the tree"))
            return False
        if entry.is_directory:
            if not stat.S_ISDIR(st.st_mode):
                report.problems.append(Problem("wrong-type", entry.path, "not a directory"))
                return False
            if stat.S_IMODE(st.st_mode) != stat.S_IMODE(entry.mode):
                detail = f"mode {stat.S_IMODE(st.st_mode):o}, expected {stat.S_IMODE(entry.mode):o}"
                report.problems.append(Problem("wrong-mode", entry.path, detail))
            return True
        if entry.is_symlink:
            if not stat.S_ISLNK(st.st_mode):
                report.problems.append(Problem("wrong-type", entry.path, "not a symlink"))
                return False
            actual = os.readlink(target)
            wanted = expand_variant_symlink(entry.symlink, self.env)
            if actual not in (wanted, entry.symlink):
                report.problems.append(
                    Problem("wrong-target", entry.path, f"points to {actual!r}, not {wanted!r}")
                )
            return False
        if entry.is_special:
            if stat.S_IFMT(st.st_mode) != stat.S_IFMT(entry.mode):
                report.problems.append(Problem("wrong-type", entry.path, "wrong special file type"))
            return False
        if not stat.S_ISREG(st.st_mode):
            report.problems.append(Problem("wrong-type", entry.path, "not a regular file"))
            return False
        await self._regular(catalog, entry, st, report)
        return False

    async def _regular(
        self, catalog: Catalog, entry: DirEntry, st: os.stat_result, report: VerifyReport
    ) -> None:
        uid, gid = self.owner(entry.uid, entry.gid)
        meta = ObjectMeta(entry.mode, uid, gid, entry.mtime, entry.xattrs)
        chunks = await catalog.chunks(entry) if entry.is_chunked else None
        if chunks is not None:
            content = chunk_list_digest(c.digest for c in chunks)
        elif entry.content_hash is not None:
            content = entry.content_hash
        else:
            return
        name = object_name(content, meta.meta_hash)
        object_path = self.store / name
        try:
            obj = os.stat(object_path, follow_symlinks=False)
        except FileNotFoundError:
            report.problems.append(Problem("object-missing", entry.path, "no object", name))
            return
        if (obj.st_ino, obj.st_dev) != (st.st_ino, st.st_dev):
            report.problems.append(
                Problem("wrong-link", entry.path, f"not linked to .data/{name}", name)
            )
        if name in self._objects_seen:
            return
        self._objects_seen.add(name)
        report.objects_checked += 1
        if obj.st_size != entry.size:
            report.problems.append(
                Problem("object-corrupt", "", f"{obj.st_size} bytes, expected {entry.size}", name)
            )
            return
        if chunks is None:
            pieces = [(content, ObjectSuffix.NONE, 0, entry.size)]
        else:
            pieces = [(c.digest, ObjectSuffix.PARTIAL, c.offset, c.size) for c in chunks]
        with open(object_path, "rb") as f:
            for digest, suffix, offset, size in pieces:
                f.seek(offset)
                data = f.read(size)
                verdict = await self._piece_ok(digest, suffix, data, entry.compressed)
                if verdict is None:
                    report.problems.append(
                        Problem("unverifiable", "", f"cannot fetch {digest.hex} to compare", name)
                    )
                elif not verdict:
                    report.problems.append(
                        Problem("object-corrupt", "", f"bytes at {offset} do not match", name)
                    )
                    return

    async def _piece_ok(
        self, digest: Digest, suffix: str, data: bytes, compressed: bool
    ) -> bool | None:
        if not compressed:
            return digest.algorithm.hash(data) == digest
        if digest.algorithm.hash(zlib.compress(data, ZLIB_LEVEL)) == digest:
            return True
        try:  # another deflate build: compare with what the server holds
            stored = await self.fetcher.fetch_object(digest, suffix)
        except FetchError as error:
            log.warning("cannot fetch %s to compare: %s", digest.hex, error)
            return None
        try:  # bounded: a bomb or a stream of another length is no match
            return inflate_whole(stored, len(data), compressed=True) == data
        except ContentError:
            return False


async def verify_destination(
    settings: ClientSettings, dest_base: Path, *, store_root: Path | None = None
) -> VerifyReport:
    """Verify the export of ``settings.fqrn`` in ``dest_base`` (as recorded in provenance)."""
    from shrinkwrap_async.network.fetcher import Fetcher

    record = read_export_record(dest_base, settings.fqrn)
    spec = Spec.parse(record.get("spec") or "/*\n", source="export.json")
    async with Fetcher(settings) as fetcher:
        verifier = TreeVerifier(settings, dest_base, fetcher, store_root=store_root)
        return await verifier.verify(record["root_hash"], spec)


def remove_bad_objects(report: VerifyReport, store_root: Path) -> int:
    """Unlink corrupt objects from ``.data`` so that an export downloads them again."""
    removed = 0
    for name in sorted(report.bad_objects()):
        try:
            (store_root / name).unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed
