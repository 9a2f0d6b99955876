"""Incremental refresh: what the previous runs left in the tree, and which catalogs to skip.

The state database (``state/db.py``) remembers, per repository, the last completed export
(root hash, spec digest) and every catalog whose subtree is fully in the tree
(mountpoint → catalog hash). From that:

- the same root hash and spec as the last completed export: nothing to do (the run ends
  after the whitelist and manifest requests);
- otherwise a nested catalog whose hash equals the one applied at its mountpoint, under the
  same spec, is skipped with its whole subtree, unlisted and unfetched: a catalog's hash
  covers its entries and the hashes of its own nested catalogs, so an equal hash means an
  equal subtree. Changed catalogs are walked against the tree (prune what is gone, link
  what is new or changed; files already linked to the right object cost one stat).
- a spec change forgets every applied catalog: the next run walks everything the new spec
  selects and prunes what it no longer selects.

:class:`CatalogProgress` counts the outstanding work of one catalog's subtree (directory
listings, files, nested catalogs) so that a catalog is recorded as applied as soon as its
subtree is complete without failures; after a crash the next run skips those catalogs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.state.db import StateDB

log = logging.getLogger(__name__)

DirMeta = tuple[tuple[str, ...], int, int, int, int]  # rel, mode, uid, gid, mtime


@dataclass
class RefreshPlan:
    """What the previous runs tell this run of ``fqrn``."""

    up_to_date: bool = False  # same root hash and spec as the last completed export
    spec_changed: bool = True  # no previous run, or a different spec: walk and prune all
    applied: dict[str, str] = field(default_factory=dict)  # mountpoint → catalog hash

    def can_skip(self, mountpoint: str, digest_hex: str, tree_root: Path) -> bool:
        """Whether the catalog ``digest_hex`` at ``mountpoint`` is already in the tree."""
        if self.applied.get(mountpoint) != digest_hex:
            return False
        return (tree_root / mountpoint.lstrip("/")).is_dir()


async def plan_refresh(
    db: StateDB, fqrn: str, *, root_hash: str, spec_digest: str, tree_root: Path
) -> RefreshPlan:
    """Read the state database; forget applied catalogs recorded under another spec."""
    last = await db.last_export(fqrn)
    latest = await db.latest_run(fqrn)
    tree_present = tree_root.is_dir()
    if (
        last is not None
        and tree_present
        and last.root_hash == root_hash
        and last.spec_digest == spec_digest
        and (latest is None or latest.status == "succeeded")
    ):
        return RefreshPlan(up_to_date=True, spec_changed=False)
    previous_spec = latest.spec_digest if latest is not None else None
    if previous_spec != spec_digest or not tree_present:
        applied = await db.applied_catalogs(fqrn)
        if applied:
            await db.forget_catalogs(fqrn, applied)
        return RefreshPlan(spec_changed=True)
    return RefreshPlan(spec_changed=False, applied=await db.applied_catalogs(fqrn))


CompletionCallback = Callable[["CatalogProgress"], Awaitable[None]]


class CatalogProgress:
    """Outstanding work of one catalog's subtree; calls ``on_complete`` when it drains.

    ``add`` before queueing a piece of work that belongs to the catalog (a directory
    listing, a file, a nested catalog), ``done`` when it is finished (``failed`` if it did
    not make it into the tree). A nested catalog counts as one piece of its parent until
    its own subtree is complete; a failure anywhere below marks every ancestor failed, so
    only catalogs whose whole subtree is in the tree are recorded.
    """

    def __init__(
        self,
        mountpoint: str,
        digest_hex: str,
        parent: CatalogProgress | None,
        on_complete: CompletionCallback,
    ) -> None:
        self.mountpoint = mountpoint
        self.digest_hex = digest_hex
        self.parent = parent
        self.on_complete = on_complete
        self.pending = 0
        self.failed = False
        self.completed = False
        self.dirs: list[DirMeta] = []  # directories to finalise when the subtree is done
        if parent is not None:
            parent.add()

    def add(self, count: int = 1) -> None:
        self.pending += count

    def fail(self) -> None:
        self.failed = True

    async def done(self, *, failed: bool = False) -> None:
        if failed:
            self.failed = True
        self.pending -= 1
        if self.pending == 0 and not self.completed:
            self.completed = True
            await self.on_complete(self)
            if self.parent is not None:
                await self.parent.done(failed=self.failed)
