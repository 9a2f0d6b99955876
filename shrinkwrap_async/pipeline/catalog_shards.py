"""A refresh split between shards by catalog.

A refresh that can diff catalogs visits only what changed; shards that split files would
each diff every changed catalog. So a large refresh is split by catalog instead:

* the parent opens the new root catalog and gives each changed catalog below it (with
  every catalog nested in it) to one shard, the largest first to the least loaded; where
  only one catalog below it changed (a release added under ``/sw`` of a repository whose
  root holds little else), it looks into that one instead, and so on down, and the
  shards pass through the catalogs it looked into as they do through the root's;
* it records a running export towards the new root before the shards start, so that a
  run stopped anywhere is resumed as any unfinished refresh is;
* each shard refreshes its catalogs as an ordinary refresh would (diff, apply, finalise
  their directories) and reports each one complete; it passes through the root catalog's
  directories (and those of the catalogs the parent looked into) on the way, creating any
  that are missing, applying nothing else there;
* the parent records the reported catalogs applied, and its final pass is an ordinary
  refresh resumed: it diffs the root catalog (and those passed through), skips the
  catalogs recorded with their new hash, and does any a shard left unfinished.

Small refreshes stay in one process (:data:`SPLIT_MIN_BYTES`): starting shards costs more
than it saves there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinkwrap_async.pipeline.shard import Shard, ShardRun, read_from_parent, write_for_shards

if TYPE_CHECKING:
    from shrinkwrap_async.link.tree_writer import RelPath
    from shrinkwrap_async.pipeline.link_stage import LinkStage
    from shrinkwrap_async.pipeline.refresh import RefreshPlan
    from shrinkwrap_async.spec.tree import Spec

# --workers: a JSON file of the catalog split (which shard refreshes which catalog)
CATALOG_SHARDS_ENV = "SHRINKWRAP_ASYNC_CATALOG_SHARDS"
# Inflated bytes of changed catalogs below which a refresh stays in one process (about
# 40,000 catalog entries). A 1 % change, split or not, objects at hand: 3.8 MB of changed
# catalogs (20,000 files) 0.18-0.19 s in one process, 0.20-0.21 s split; 17 MB (100,000
# files) 0.30-0.31 s, 0.26-0.28 s split.
SPLIT_MIN_BYTES = 8 * 1024 * 1024
SPLIT_MIN_BYTES_ENV = "SHRINKWRAP_ASYNC_SPLIT_MIN_BYTES"  # another bound (comparisons, tests)
# How far down a chain of single changed catalogs the parent looks for catalogs to split
# (software.eessi.io: /versions/<v>/software/linux/<arch>/<vendor>/<cpu>/...).
MAX_DESCENT = 8


@dataclass(frozen=True)
class CatalogSplit:
    """Which shard refreshes each changed catalog given out, the versions the tree holds
    (mountpoint -> hash), which the shards diff against, and the catalogs the shards pass
    through on the way to theirs (the root, and those the parent looked into)."""

    owners: dict[str, int]
    applied: dict[str, str]
    passed: frozenset[str] = frozenset({""})

    def owner_of(self, mountpoint: str) -> int | None:
        """The shard refreshing the catalog at ``mountpoint``: that of the catalog given
        out that holds it; None for the catalogs passed through and unchanged subtrees."""
        for top, index in self.owners.items():
            if mountpoint == top or mountpoint.startswith(top + "/"):
                return index
        return None

    def write(self, path: Path, fqrn: str) -> None:
        data = {"owners": self.owners, "applied": self.applied, "passed": sorted(self.passed)}
        write_for_shards(path, fqrn, data)


def assign(sizes: dict[str, int], shards: int) -> dict[str, int]:
    """Catalogs (mountpoint -> inflated size) to ``shards`` shards: the largest first, each
    to the shard with the fewest bytes so far (the lowest index among equals, so that with
    fewer catalogs than shards, shards 0 to n-1 get them)."""
    load = [0] * shards
    owners: dict[str, int] = {}
    for mountpoint, size in sorted(sizes.items(), key=lambda item: (-item[1], item[0])):
        index = min(range(shards), key=lambda k: (load[k], k))
        owners[mountpoint] = index
        load[index] += max(size, 1)
    return owners


async def plan_split(
    fetcher: Any, cache_dir: Path, trusted: Any, plan: RefreshPlan, spec: Spec, shards: int
) -> CatalogSplit | None:
    """The split of a refresh towards ``trusted``'s root, or None when it is better done
    in one process (fewer than two changed catalogs the spec reaches to give out, or too
    little). Opens the root catalog, and the single changed catalog below it while there is
    only one (fetched once into the catalog cache, where the run finds them)."""
    from shrinkwrap_async.catalogs.cache import CatalogCache
    from shrinkwrap_async.network.errors import FetchError
    from shrinkwrap_async.pipeline.catalog_fetch import CatalogOpener

    cache = CatalogCache(cache_dir / "catalogs", fetcher)
    opener = CatalogOpener(cache)
    passed = [""]
    try:
        # A corrupt catalog raises TrustError (exit 3), as it would end the run itself.
        catalog = (await opener.open_root(trusted.root_catalog)).catalog
        changed = await _changed_below(catalog, plan, spec)
        for _ in range(MAX_DESCENT):
            if len(changed) != 1:
                break
            (mountpoint,) = changed
            try:
                child = (await opener.open_nested(catalog, mountpoint)).catalog
            except FetchError:  # missing: one process reports it as it would (partial)
                break
            below = await _changed_below(child, plan, spec)
            if not below:  # the changes are that catalog's own
                break
            passed.append(mountpoint)
            catalog, changed = child, below
    finally:
        await opener.close_all()
    if len(changed) < 2 or sum(changed.values()) < split_min_bytes():
        return None
    return CatalogSplit(assign(changed, shards), dict(plan.applied), frozenset(passed))


async def _changed_below(catalog: Any, plan: RefreshPlan, spec: Spec) -> dict[str, int]:
    """The catalogs right below ``catalog`` whose hash is not the one the tree holds and
    that the spec reaches: mountpoint -> inflated size."""
    return {
        ref.path: ref.size
        for ref in await catalog.nested_catalogs()
        if plan.applied.get(ref.path) != ref.digest.hex and spec.descends_into(ref.path)
    }


def shards_outcome(
    split: CatalogSplit, shard_stats: list[dict[str, Any]], root_hex: str
) -> tuple[dict[str, str], list[str]]:
    """What the parent records once the shards (``shard_stats``, by index) have ended: the
    catalogs to record applied, and those to forget. Forgotten are the catalogs the shards'
    catalogs lost, and every catalog of a shard that refreshed another root than
    ``root_hex`` (one started as a new program after a publish, or that reported nothing):
    the final pass then walks those whole rather than diff from a version the tree no
    longer holds."""
    completed: dict[str, str] = {}
    forget: list[str] = []
    for index, stats in enumerate(shard_stats):
        if stats.get("root_hash") == root_hex:
            for mountpoint, digest in (stats.get("catalogs_applied") or {}).items():
                completed[str(mountpoint)] = str(digest)
            forget.extend(str(mountpoint) for mountpoint in stats.get("catalogs_gone") or ())
        else:
            theirs = {*split.applied, *split.owners}
            forget.extend(sorted(m for m in theirs if split.owner_of(m) == index))
    return completed, forget


def split_min_bytes() -> int:
    """:data:`SPLIT_MIN_BYTES`, or the bound ``SHRINKWRAP_ASYNC_SPLIT_MIN_BYTES`` names."""
    try:
        return int(os.environ.get(SPLIT_MIN_BYTES_ENV, SPLIT_MIN_BYTES))
    except ValueError:
        return SPLIT_MIN_BYTES


def split_from_parent(fqrn: str) -> CatalogSplit | None:
    """The split this shard's ``--workers`` parent made, if it made one (and it can be
    read: otherwise the shard splits files, as for a first export)."""
    data = read_from_parent(CATALOG_SHARDS_ENV, fqrn)
    if data is None:
        return None
    try:
        owners = {str(k): int(v) for k, v in data["owners"].items()}
        applied = {str(k): str(v) for k, v in data["applied"].items()}
        passed = frozenset(str(m) for m in data["passed"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return CatalogSplit(owners, applied, passed)


class CatalogShardRun(ShardRun):
    """The runner's view of a shard of a split refresh: every entry of the catalogs it
    owns, nothing of the others; the directories of the catalogs above them passed
    through."""

    def __init__(self, shard: Shard, exporter: Any, split: CatalogSplit) -> None:
        super().__init__(shard, exporter)
        self.split = split

    def owns_catalog(self, mountpoint: str) -> bool:
        """Whether this shard refreshes the catalog at ``mountpoint`` (a catalog given
        out; those nested in it go with it)."""
        return self.split.owners.get(mountpoint) == self.shard.index

    def passes_through(self, catalog: str) -> bool:
        return catalog in self.split.passed  # the final pass applies it

    def leaves_to_another(self, catalog: str, nested: str) -> bool:
        return (
            catalog in self.split.passed
            and nested not in self.split.passed
            and not self.owns_catalog(nested)
        )

    def link_stage(self, base: LinkStage) -> LinkStage:
        return base  # the directories of its catalogs are this shard's alone

    def listing_share(self, rel: RelPath) -> tuple[int, int] | None:
        return None

    def takes_entry(self, entry: Any, rel: RelPath) -> bool:
        return True

    def wants(self, job: Any) -> bool:
        return True
