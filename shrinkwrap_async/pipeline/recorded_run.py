"""An export as the commands run it: the trust chain, the state database's plan, the
pipeline (:class:`~shrinkwrap_async.pipeline.runner.Exporter`), provenance, and the record
of the run (catalogs applied, failures, shard marks, how it ended).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shrinkwrap_async.catalogs.cache import CatalogCache, usable_catalog_cache_dir
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ExitCode, ShrinkwrapError
from shrinkwrap_async.pipeline.refresh import (
    RefreshPlan,
    keeps_newer,
    may_go_back,
    plan_refresh,
)
from shrinkwrap_async.pipeline.runner import Exporter, ExportOptions, first_shrinkwrap_error
from shrinkwrap_async.pipeline.shard import PARTITION, under_workers_parent
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.eventlog import log_event
from shrinkwrap_async.state.shard_marks import ShardMarks, run_key
from shrinkwrap_async.store.errors import as_storage_error

log = logging.getLogger(__name__)


async def export_repository(
    settings: ClientSettings,
    spec: Spec,
    options: ExportOptions,
    *,
    config_argument: str = "",
    src_cache: str = "",
    catalog_cache_dir: Path | None = None,
    use_state: bool = True,
    trusted: Any = None,
    plan: RefreshPlan | None = None,
) -> ExportStats:
    """Establish trust, run the pipeline, write provenance. Raises systemic errors.

    ``trusted``: the :class:`~shrinkwrap_async.trust.chain.TrustedRoot` the caller has
    just established, and ``plan`` the refresh plan it made for it from the state database
    (the ``--workers`` parent before it decides to export alone).

    With ``use_state`` (and not a dry run) the destination's state database decides what
    can be skipped (:mod:`pipeline.refresh`) and records the run (``stats.up_to_date``,
    ``catalogs_skipped`` and ``catalogs_diffed`` tell what it skipped).
    """
    from shrinkwrap_async.network.fetcher import Fetcher
    from shrinkwrap_async.state.db import StateDB
    from shrinkwrap_async.trust.chain import establish_trust

    cache_dir = usable_catalog_cache_dir(settings, catalog_cache_dir)
    fqrn = settings.fqrn
    async with Fetcher(settings, max_in_flight=options.max_in_flight) as fetcher:
        if trusted is None:
            trusted = await establish_trust(fetcher, settings, cache_dir=cache_dir / "certificates")
        root_hex = trusted.root_catalog.hex
        spec_digest = spec.digest()
        db = None
        if use_state and not options.dry_run and "shard" not in options.extra:
            db = await StateDB.for_destination(options.dest_base)
        try:
            split = options.extra.get("catalog_split")
            if split is not None:  # a shard of a refresh split by catalog: diffs as its parent
                plan = RefreshPlan(spec_changed=False, applied=dict(split.applied))
            elif db is None:  # a dry run, or a shard: skips only what its parent says is done
                plan = RefreshPlan(applied=dict(options.extra.get("skip_catalogs") or {}))
                if "shard" in options.extra and not options.dry_run:
                    plan.kept = _kept_by_a_shard(options, fqrn, trusted)
                    plan.up_to_date = plan.kept is not None
            elif plan is None:
                plan = await plan_refresh(
                    db,
                    fqrn,
                    root_hash=root_hex,
                    revision=trusted.revision,
                    spec_digest=spec_digest,
                    tree_root=options.dest_base / fqrn,
                    allow_older=may_go_back(options.allow_older_revision, trusted),
                )
            if plan.up_to_date:
                stats = up_to_date_stats(fetcher, trusted, plan)
                log_up_to_date(fqrn, stats)
                return stats
            return await _run_recorded(
                settings,
                spec,
                options,
                fetcher,
                trusted,
                plan,
                db,
                cache_dir,
                config_argument=config_argument,
                src_cache=src_cache,
            )
        finally:
            if db is not None:
                await db.close()


def _kept_by_a_shard(options: ExportOptions, fqrn: str, trusted: Any) -> Any:
    """A ``--shard`` run started on its own (a batch array) decides as its final pass will:
    a revision older than the one exported is not applied (the parent of ``--workers``
    decided before it started its shards)."""
    from shrinkwrap_async.state.db import read_last_export

    if under_workers_parent():
        return None
    last = read_last_export(options.dest_base, fqrn)
    allowed = may_go_back(options.allow_older_revision, trusted)
    return last if keeps_newer(last, trusted.revision, allowed) else None


def log_up_to_date(fqrn: str, stats: ExportStats) -> None:
    """The line of a run with nothing to do: up to date, or a newer revision kept."""
    if stats.offered_revision is not None:
        log_event(
            log,
            "export.kept_newer",
            f"kept {fqrn} revision {stats.revision}: the server offers revision "
            f"{stats.offered_revision}, which is older (a stale mirror or proxy?); "
            "--allow-older-revision applies it",
            level=logging.WARNING,
            fqrn=fqrn,
            revision=stats.revision,
            offered_revision=stats.offered_revision,
        )
        return
    log_event(
        log,
        "export.up_to_date",
        f"{fqrn} revision {stats.revision} is already exported with this spec",
        fqrn=fqrn,
        revision=stats.revision,
        root_hash=stats.root_hash,
    )


def up_to_date_stats(fetcher: Any, trusted: Any, plan: RefreshPlan) -> ExportStats:
    """The summary of a run with nothing to do (``plan.up_to_date``)."""
    if plan.kept is not None:
        stats = ExportStats(
            revision=plan.kept.revision,
            root_hash=plan.kept.root_hash,
            up_to_date=True,
            offered_revision=trusted.revision,
            exit_code=0,
        )
    else:
        revision, root_hex = trusted.revision, trusted.root_catalog.hex
        stats = ExportStats(revision=revision, root_hash=root_hex, up_to_date=True, exit_code=0)
    stats.take_fetch_counters(getattr(fetcher, "stats", None))
    return stats


def outcome_exit_code(stats: ExportStats, transfer_failures: int) -> int:
    """0 complete; 4 when nothing could be fetched because the upstream was unreachable
    (every failure a transfer failure, no object fetched); else 1 (partial, resumable)."""
    if not stats.failures:
        return int(ExitCode.OK)
    if stats.data_files == 0 and transfer_failures >= len(stats.failures):
        return int(ExitCode.UNREACHABLE)
    return int(ExitCode.PARTIAL)


async def _run_recorded(
    settings: ClientSettings,
    spec: Spec,
    options: ExportOptions,
    fetcher: Any,
    trusted: Any,
    plan: RefreshPlan,
    db: Any,
    cache_dir: Path,
    *,
    config_argument: str,
    src_cache: str,
) -> ExportStats:
    """The pipeline between ``begin_export`` and ``finish_export`` of the state database."""
    from shrinkwrap_async.state.db import ABORTED, PARTIAL, SUCCEEDED
    from shrinkwrap_async.state.provenance import write_provenance

    fqrn = settings.fqrn
    root_hex = trusted.root_catalog.hex
    log_event(
        log,
        "export.start",
        f"exporting {fqrn} revision {trusted.revision} ({root_hex})"
        + (f", pinned by {trusted.pinned.reason}" if trusted.pinned else ""),
        fqrn=fqrn,
        revision=trusted.revision,
        root_hash=root_hex,
        spec_digest=spec.digest(),
    )

    async def applied(mountpoint: str, digest_hex: str) -> None:
        await db.record_catalog_applied(fqrn, mountpoint, digest_hex)
        log_event(
            log,
            "catalog.applied",
            f"catalog {mountpoint or '/'} ({digest_hex}) applied",
            level=logging.DEBUG,
            fqrn=fqrn,
            mountpoint=mountpoint,
            digest=digest_hex,
        )

    reported: dict[str, str] = {}

    async def report(mountpoint: str, digest_hex: str) -> None:
        reported[mountpoint] = digest_hex  # a catalog shard: its parent records them

    on_applied = applied if db is not None else None
    if "catalog_split" in options.extra:
        on_applied = report
    if db is not None:
        await db.begin_export(
            fqrn, root_hash=root_hex, revision=trusted.revision, spec_digest=spec.digest()
        )
    marks = ShardMarks(options.dest_base, fqrn)
    marks_key = shard_marks_key(settings, spec, options, root_hex)
    files_done = bool(options.extra.get("files_done")) or _shards_complete(
        marks, marks_key, options, fqrn
    )
    cache = CatalogCache(cache_dir / "catalogs", fetcher)
    exporter = Exporter(
        settings,
        spec,
        options,
        fetcher,
        cache,
        refresh=plan,
        on_catalog_applied=on_applied,
        files_done=files_done,
    )
    status, exit_code = ABORTED, int(ExitCode.PARTIAL)
    try:
        try:
            stats = await exporter.run(trusted.root_catalog)
        except BaseExceptionGroup as group:
            raise first_shrinkwrap_error(group) from None
        stats.revision = trusted.revision
        stats.root_hash = root_hex
        exit_code = outcome_exit_code(stats, exporter.transfer_failures)
        stats.exit_code = exit_code
        stats.catalogs_skipped = exporter.catalogs_skipped
        stats.catalogs_diffed = exporter.differ.diffed
        stats.catalogs_applied = dict(reported)
        split = options.extra.get("catalog_split")
        if split is not None and exit_code == 0:  # gone from its catalogs: parent forgets
            stats.catalogs_gone = [
                mountpoint
                for mountpoint in stale_catalogs(split.applied, exporter)
                if split.owner_of(mountpoint) == options.extra["shard"].index
            ]
        status = SUCCEEDED if exit_code == 0 else PARTIAL
        for failure in stats.failures:
            log_event(
                log,
                "object.failed",
                f"failed: {failure.path}"
                + (f" (object {failure.object})" if failure.object else "")
                + f": {failure.reason}",
                level=logging.ERROR,
                fqrn=fqrn,
                path=failure.path,
                name=failure.object,
                reason=failure.reason,
            )
        if not options.dry_run and "shard" not in options.extra:  # shards: final pass
            write_provenance(
                options.dest_base,
                fqrn,
                config_files=settings.config_files,
                config_argument=config_argument,
                src_cache=src_cache,
                dest_cache=options.store_root,
                root_hash=stats.root_hash,
                revision=trusted.revision,
                spec_text=spec.to_text(),
                servers=settings.server_urls,
                summary=stats.as_dict(),
                publish_time=trusted.publish_time,
                pinned_by=trusted.pinned.reason if trusted.pinned else None,
            )
    except BaseException as error:
        # A local write failure (disk full, read-only, ...) not converted where it happened.
        storage = None if isinstance(error, ShrinkwrapError) else as_storage_error(error)
        if storage is not None:
            exit_code = int(storage.exit_code)
        elif isinstance(error, ShrinkwrapError):
            exit_code = int(error.exit_code)
        elif isinstance(error, asyncio.CancelledError) and "stop_signal" in options.extra:
            exit_code = int(ExitCode.SIGNAL_BASE) + int(options.extra["stop_signal"])
        if db is not None:
            await asyncio.shield(_finish(db, fqrn, ABORTED, exit_code, None))
        if storage is not None:
            raise storage from error
        raise
    if not options.dry_run:
        _update_shard_marks(marks, marks_key, options, exit_code)
    if db is not None:
        if stats.failures:
            await db.record_failures(fqrn, [(f.object or f.path, f.reason) for f in stats.failures])
        if status == SUCCEEDED:
            await _forget_stale_catalogs(db, fqrn, exporter)
        elif exporter.failed_mountpoints:  # half-way there: diffing from the old row is wrong
            await db.forget_catalogs(fqrn, exporter.failed_mountpoints)
        await _finish(db, fqrn, status, exit_code, stats)
    return stats


def shard_marks_key(
    settings: ClientSettings, spec: Spec, options: ExportOptions, root_hex: str
) -> str:
    """What a shard's mark is valid for: the same files linked to the same objects."""
    maps = [(sorted(m.rules.items()), m.default) for m in (settings.uid_map, settings.gid_map)]
    return run_key(
        PARTITION,
        root_hex,
        spec.digest(),
        maps,
        settings.claim_ownership,
        os.geteuid(),
        options.store_root,
    )


def _shards_complete(marks: ShardMarks, key: str, options: ExportOptions, fqrn: str) -> bool:
    """Whether an ordinary export runs after shards that all left their mark."""
    if options.dry_run or "shard" in options.extra:
        return False
    shards = marks.complete(key)
    if shards:
        log_event(
            log,
            "export.shards_complete",
            f"all {shards} shards ended complete: every file is in place, "
            "walking the directories only",
            fqrn=fqrn,
            shards=shards,
        )
    return bool(shards)


def _update_shard_marks(
    marks: ShardMarks, key: str, options: ExportOptions, exit_code: int
) -> None:
    """A complete shard leaves its mark; a complete ordinary export removes them all. A
    mark that cannot be written costs only speed (the final pass then checks every file)."""
    if exit_code != 0 or "catalog_split" in options.extra:  # its parent records catalogs
        return
    shard = options.extra.get("shard")
    try:
        if shard is not None:
            marks.record(key, shard.index, shard.count)
        else:
            marks.clear()
    except OSError as error:
        log.warning("shard marks in %s: %s", marks.directory, error.strerror or error)


async def _forget_stale_catalogs(db: Any, fqrn: str, exporter: Exporter) -> None:
    """After a complete run, drop rows of catalogs the tree no longer holds (removed,
    merged or excluded), keeping those inside subtrees that were skipped unchanged."""
    stale = stale_catalogs(await db.applied_catalogs(fqrn), exporter)
    if stale:
        await db.forget_catalogs(fqrn, stale)


def stale_catalogs(applied: Iterable[str], exporter: Exporter) -> list[str]:
    """Of the ``applied`` catalogs, those a complete run neither walked nor left in a
    subtree skipped unchanged: the tree no longer holds them."""
    skipped = exporter.skipped_mountpoints
    return [
        mountpoint
        for mountpoint in applied
        if mountpoint
        and mountpoint not in exporter.walked_mountpoints
        and mountpoint not in skipped
        and not any(mountpoint.startswith(top + "/") for top in skipped)
    ]


async def _finish(
    db: Any, fqrn: str, status: str, exit_code: int, stats: ExportStats | None
) -> None:
    await db.finish_export(
        fqrn,
        status=status,
        exit_code=exit_code,
        files=stats.files if stats is not None else None,
        bytes_total=stats.bytes if stats is not None else None,
    )
