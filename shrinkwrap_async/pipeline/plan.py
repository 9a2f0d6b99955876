"""The plan of an export (``export --dry-run``, ``spec check``): catalogs only, no data.

The plan walks the catalogs the spec needs, exactly as the export would (same spec filter,
same object names), and counts what the export would create. Nothing is written into the
destination; catalogs go to the usual catalog cache.

Where a whole nested catalog is selected (``/x/*`` or ``/*`` reaching a catalog root, with
no rule below it), the catalog's statistics counters give the files, directories, symlinks
and bytes of its subtree without listing it, so a full-repository plan costs the root
catalog only. The distinct objects of such a subtree are not known then: the plan marks
them as estimated (an upper bound of one object per file), and ``exact=True`` lists them.

The catalogs do not hold the compressed (stored) size of an object: object bytes are
logical (inflated) sizes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from shrinkwrap_async.catalogs.cache import CatalogCache, usable_catalog_cache_dir
from shrinkwrap_async.catalogs.reader import Catalog
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ExitCode
from shrinkwrap_async.pipeline.spec_filter import select_children
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.store.data_store import DataStore
from shrinkwrap_async.store.object_names import chunk_list_digest, meta_hash, object_name

CATALOG_CONCURRENCY = 8


@dataclass
class Plan:
    """What an export of ``fqrn`` under a spec would create (counts as the export counts)."""

    fqrn: str = ""
    revision: int | None = None
    root_hash: str = ""
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0
    bytes: int = 0  # logical size of the regular files
    objects: int = 0  # distinct .data objects of the listed part
    object_bytes: int = 0  # their logical size (the stored, compressed size is unknown)
    objects_present: int = 0  # of those, already in .data
    present_bytes: int = 0
    objects_needed: int = 0  # objects to download (upper bound when estimated)
    needed_bytes: int = 0
    catalogs: int = 0  # catalogs opened
    estimated: bool = False  # some subtrees were counted from catalog statistics
    counted_subtrees: list[str] = field(default_factory=list)
    unlisted_files: int = 0  # files in those subtrees (objects not known)
    unlisted_bytes: int = 0
    external: list[str] = field(default_factory=list)  # external files, no CVMFS_EXTERNAL_URL
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    def text(self) -> str:
        def size(n: int) -> str:
            value = float(n)
            for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
                if value < 1024 or unit == "TiB":
                    return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
                value /= 1024
            return f"{n} B"

        about = "at most " if self.estimated else ""
        lines = [
            f"plan for {self.fqrn} revision {self.revision} (root catalog {self.root_hash})",
            f"  regular files     {self.files:>12}  {size(self.bytes)}",
            f"  directories       {self.dirs:>12}",
            f"  symlinks          {self.symlinks:>12}",
            f"  special files     {self.specials:>12}",
            f"  distinct objects  {self.objects:>12}  {size(self.object_bytes)} (listed part; "
            "logical sizes, the catalogs do not hold compressed sizes)",
            f"  already in .data  {self.objects_present:>12}  {size(self.present_bytes)}",
            f"  to download       {about}{self.objects_needed:>12}  {about}"
            f"{size(self.needed_bytes)}",
            f"  catalogs opened   {self.catalogs:>12}",
        ]
        if self.estimated:
            lines.append(
                f"  counted from catalog statistics (objects not listed, use --exact): "
                f"{self.unlisted_files} files in {', '.join(self.counted_subtrees)}"
            )
        for path in self.external:
            lines.append(f"  cannot export (external file, no CVMFS_EXTERNAL_URL): {path}")
        for warning in self.warnings:
            lines.append(f"  spec: {warning}")
        return "\n".join(lines)


class Planner:
    """Walks the catalogs a spec needs and fills a :class:`Plan`."""

    def __init__(
        self,
        settings: ClientSettings,
        spec: Spec,
        cache: CatalogCache,
        *,
        store: DataStore | None,
        exact: bool = False,
    ) -> None:
        from shrinkwrap_async.pipeline.runner import Ownership

        self.settings = settings
        self.spec = spec
        self.cache = cache
        self.store = store
        self.exact = exact
        self.owner = Ownership(settings)
        self.plan = Plan(fqrn=settings.fqrn)
        self.distinct: dict[str, int] = {}
        self._limit = asyncio.Semaphore(CATALOG_CONCURRENCY)

    async def run(self, root_digest: Any) -> Plan:
        if self.spec.select("", is_directory=True).descend:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._catalog(group, root_digest, ""))
        await self._finish()
        return self.plan

    async def _open(self, digest: Any, mountpoint: str) -> Catalog:
        async with self._limit:
            catalog = await self.cache.open(digest, mountpoint)
        self.plan.catalogs += 1
        return catalog

    async def _catalog(self, group: asyncio.TaskGroup, digest: Any, mountpoint: str) -> None:
        catalog = await self._open(digest, mountpoint)
        try:
            if not self.exact and self.spec.selects_whole_subtree(mountpoint):
                self._count_statistics(await catalog.statistics(), mountpoint)
                return
            pending = [mountpoint]
            while pending:
                pending.extend(await self._directory(group, catalog, pending.pop()))
        finally:
            await catalog.close()

    def _count_statistics(self, counters: dict[str, int], mountpoint: str) -> None:
        def total(kind: str) -> int:
            return counters.get(f"self_{kind}", 0) + counters.get(f"subtree_{kind}", 0)

        # Every nested root is a directory in its parent and its own catalog; the
        # catalog's own root directory is counted by the listing of its parent.
        nested = total("nested")
        files, size = total("regular"), total("file_size")
        plan = self.plan
        plan.files += files
        plan.bytes += size
        plan.dirs += total("dir") - 1 - nested
        plan.symlinks += total("symlink")
        plan.specials += total("special")
        plan.unlisted_files += files
        plan.unlisted_bytes += size
        plan.estimated = True
        plan.counted_subtrees.append(mountpoint or "/")

    async def _directory(self, group: asyncio.TaskGroup, catalog: Catalog, path: str) -> list[str]:
        """Count one directory's selected entries; returns the subdirectories to list."""
        entries = [e async for e in catalog.list_directory(path)]
        plan = self.plan
        descend: list[str] = []
        for entry, selection in select_children(self.spec, entries):
            if entry.is_directory:
                plan.dirs += 1
                if not selection.descend:
                    continue
                if entry.is_nested_mountpoint:
                    ref = await catalog.nested_catalog(entry.path)
                    if ref is None:
                        raise_missing(entry.path)
                    else:
                        group.create_task(self._catalog(group, ref.digest, entry.path))
                else:
                    descend.append(entry.path)
            elif entry.is_symlink:
                plan.symlinks += 1
            elif entry.is_special:
                plan.specials += 1
            else:
                plan.files += 1
                plan.bytes += entry.size
                await self._object(catalog, entry)
        return descend

    async def _object(self, catalog: Catalog, entry: Any) -> None:
        if entry.is_external and not self.settings.external_urls:
            self.plan.external.append(entry.path)  # the export reports it as a failure
            return
        if entry.is_chunked:
            content = chunk_list_digest(c.digest for c in await catalog.chunks(entry))
        elif entry.content_hash is not None:
            content = entry.content_hash
        else:
            self.plan.external.append(entry.path)
            return
        uid, gid = self.owner(entry.uid, entry.gid)
        name = object_name(content, meta_hash(entry.mode, uid, gid, entry.xattrs))
        self.distinct.setdefault(name, entry.size)

    async def _finish(self) -> None:
        plan = self.plan
        plan.objects = len(self.distinct)
        plan.object_bytes = sum(self.distinct.values())
        present: set[str] = set()
        if self.store is not None and self.distinct:
            store = self.store
            present = await asyncio.to_thread(store.existing, list(self.distinct))
        plan.objects_present = len(present)
        plan.present_bytes = sum(self.distinct[name] for name in present)
        plan.objects_needed = plan.objects - plan.objects_present + plan.unlisted_files
        plan.needed_bytes = plan.object_bytes - plan.present_bytes + plan.unlisted_bytes
        plan.warnings = self.spec.warnings()


def raise_missing(path: str) -> None:
    from shrinkwrap_async.catalogs.entry import CatalogError

    raise CatalogError(f"no nested catalog registered for mountpoint {path!r}")


async def make_plan(
    settings: ClientSettings,
    spec: Spec,
    *,
    dest_base: Path | None,
    dest_cache: Path | None = None,
    exact: bool = False,
    catalog_cache_dir: Path | None = None,
) -> Plan:
    """Establish trust, walk the catalogs the spec needs, compare with ``.data``."""
    from shrinkwrap_async.network.fetcher import Fetcher
    from shrinkwrap_async.pipeline.runner import first_shrinkwrap_error
    from shrinkwrap_async.trust.chain import establish_trust

    store_root = dest_cache or (dest_base / ".data" if dest_base is not None else None)
    store = DataStore(store_root) if store_root is not None else None
    cache_dir = usable_catalog_cache_dir(settings, catalog_cache_dir)
    async with Fetcher(settings) as fetcher:
        trusted = await establish_trust(fetcher, settings, cache_dir=cache_dir / "certificates")
        planner = Planner(
            settings, spec, CatalogCache(cache_dir / "catalogs", fetcher), store=store, exact=exact
        )
        try:
            plan = await planner.run(trusted.root_catalog)
        except BaseExceptionGroup as group:
            raise first_shrinkwrap_error(group) from None
    plan.revision = trusted.revision
    plan.root_hash = trusted.root_catalog.hex
    return plan


def report(plan: Plan, *, json_output: bool, quiet: int = 0, stream: TextIO | None = None) -> int:
    """Print the plan (JSON on stdout for tools, else text); returns the exit code."""
    out = stream or sys.stdout
    if json_output:
        print(plan.to_json(), file=out)
    elif quiet == 0:
        print(plan.text(), file=out)
    return int(ExitCode.OK)


async def plan_export(
    spec: Spec,
    *,
    repository: str,
    config_files: Sequence[Path],
    dest_base: Path | None = None,
    dest_cache: Path | None = None,
    json_output: bool = False,
    exact: bool = False,
    quiet: int = 0,
) -> int:
    """``spec check``: load the configuration, plan, print; returns the exit code."""
    from shrinkwrap_async.exitcodes import UsageError

    for path in config_files:
        if not path.is_file():
            raise UsageError(f"config file {path} does not exist (given with -f)")
    settings = ClientSettings.load(list(config_files), repository)
    plan = await make_plan(
        settings,
        spec,
        dest_base=dest_base.absolute() if dest_base is not None else None,
        dest_cache=dest_cache,
        exact=exact,
    )
    return report(plan, json_output=json_output, quiet=quiet)
