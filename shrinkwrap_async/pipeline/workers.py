"""``export --workers N``: N shard processes on this machine, then the final pass.

It is what ``export`` runs by default (one shard per two usable cores, ``shard.auto_workers``).
First the parent checks the destination's state database, as an ordinary export does: an
export that is already up to date costs its two requests and starts no shard, and a refresh
of a tree whose catalogs are recorded runs in the parent alone (it walks only what changed
between the catalogs, which shards could not split: they walk whole catalogs), as does the
ordinary export after ``--shard K/N`` runs (their marks are in the destination). Otherwise
each worker is ``shrinkwrap-async export ... --shard K/N`` in its own process (one event
loop per core; on Linux a fork of this one, see ``shard_process``). The parent shows one
progress line (the shards report their counters to small files) and, once every shard has
ended, runs the ordinary export with the same arguments itself (no new interpreter, the
source already loaded), which downloads nothing more, sets directory metadata and writes
the provenance. When every shard ended with exit code 0, every file is in place and the
final pass walks the directories only. It then prints one summary: the final pass's counts,
with the objects, bytes and requests of all processes added up.

When the shards alone fill the usable cores (fewer than two cores per shard), each commits
its small objects in a thread instead of starting an object worker process of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinkwrap_async.exitcodes import ExitCode
from shrinkwrap_async.pipeline.catalog_shards import (
    CATALOG_SHARDS_ENV,
    CatalogSplit,
    plan_split,
    shards_outcome,
)
from shrinkwrap_async.pipeline.decompress_verify import WORKER_ENV
from shrinkwrap_async.pipeline.progress import _size, shows_progress
from shrinkwrap_async.pipeline.shard import (
    CORES_PER_SHARD,
    DONE_CATALOGS_ENV,
    SHARDS_STARTED_ENV,
    STATS_FILE_ENV,
    root_for_forks,
    write_done_catalogs,
)
from shrinkwrap_async.pipeline.shard_process import ShardProcess, start_shard
from shrinkwrap_async.pipeline.summary import ExportStats, Failure
from shrinkwrap_async.runtime import cpu_count, run_async
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.shard_marks import ShardMarks

if TYPE_CHECKING:
    from shrinkwrap_async.pipeline.refresh import RefreshPlan

log = logging.getLogger(__name__)

# What every process of a --workers run counts for itself, summed in the summary.
SUMMED = ("data_files", "data_bytes", "requests", "retries", "bytes_received", "catalogs", "linked")
# A refresh split by catalog: each entry is visited by one process only (the shards their
# catalogs, the final pass the root catalog), so these add up as well.
SPLIT_SUMMED = (
    *SUMMED,
    *("files", "dirs", "symlinks", "specials", "bytes", "removed", "unchanged"),
    *("content_copies", "catalogs_diffed"),
)
# Counted by the shard owning an entry's directory, or again by a final pass that walks
# everything (after a failed shard): one count or the other, never their sum.
COUNTED_ONCE = ("skipped_devices",)
JOIN_SECONDS = 1.0


def common_arguments(args: argparse.Namespace, spec_file: str, workers: int) -> list[str]:
    """The export options every shard process gets (the final pass runs with ``args``).

    ``-j`` is what the whole command may have in flight, so each of the ``workers`` shards
    gets its part: a proxy or Stratum-1 sees the load it was asked to see, however many
    cores there are (two shards at ``-j 8`` each are as fast here as at ``-j 16``)."""
    from shrinkwrap_async.commands.export import changes_file, requests_in_flight_of

    argv = ["-r", args.repo, "-f", args.src_config, "-t", spec_file, "-x", args.dest_base]
    if args.dest_cache:
        argv += ["-y", args.dest_cache]
    if args.src_cache:
        argv += ["-c", args.src_cache]
    argv += ["-j", str(max(1, -(-requests_in_flight_of(args) // workers)))]
    if args.keep_variant_symlinks:
        argv.append("--keep-variant-symlinks")
    changes = changes_file(args)
    if changes is not None:  # the shards append to the list the parent emptied
        argv += ["--changes", str(changes)]
    return argv


def _read_json(text: str) -> dict[str, Any]:
    start = text.find("{")
    if start < 0:
        return {}
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _progress_line(files: list[Path], done: int, total: int, started: float) -> str:
    sums = dict.fromkeys(("data_files", "data_bytes", "linked", "files"), 0)
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for key in sums:
            sums[key] += int(data.get(key, 0))
    elapsed = max(time.monotonic() - started, 1e-6)
    return (
        f"{done}/{total} shards done, {sums['linked']} files linked, "
        f"{sums['data_files']} objects ({_size(sums['data_bytes'])}, "
        f"{_size(sums['data_bytes'] / elapsed)}/s)"
    )


class Stopped(Exception):
    """SIGTERM (or SIGINT) in the parent: the shards were stopped; a rerun resumes."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    raise Stopped(signum)


@dataclass
class DestinationState:
    """What the state database says before any shard starts."""

    trusted: Any  # the verified root (trust.chain.TrustedRoot)
    plan: RefreshPlan  # what the state database says of it
    requests: int  # what the check cost
    up_to_date: ExportStats | None = None  # the summary of a run with nothing to do
    after_shards: bool = False  # ``--shard K/N`` runs left marks: this is their final step
    split: CatalogSplit | None = None  # a refresh to split between shards by catalog

    @property
    def incremental(self) -> bool:
        """A refresh that can diff catalogs recorded in the tree against their new versions
        (not a resumed export of this revision, whose recorded catalogs are only skipped)."""
        return bool(self.plan.applied) and not self.plan.resumes_root

    @property
    def alone(self) -> bool:
        """Whether shards that split files would not help: a refresh walks only what changed
        between the catalogs (such shards walk whole catalogs; a large refresh is split by
        catalog instead), and the step after ``--shard`` runs (a job array) has no data
        left to fetch. A resumed export of this revision uses shards: they skip the
        catalogs recorded complete, as the final pass does."""
        return self.incremental or self.after_shards


async def destination_state(
    settings: Any, spec: Spec, dest_base: Path, workers: int = 1, *, allow_older: bool = False
) -> DestinationState:
    """Whether the tree holds this revision under this spec already (then the summary of
    the run that does nothing), or an earlier one a refresh can diff against, and then
    whether ``workers`` shards should split it by catalog. Two requests, as an ordinary
    run (and the root catalog of a refresh, which the run then finds cached)."""
    from shrinkwrap_async.catalogs.cache import usable_catalog_cache_dir
    from shrinkwrap_async.network.fetcher import Fetcher
    from shrinkwrap_async.pipeline.recorded_run import up_to_date_stats
    from shrinkwrap_async.pipeline.refresh import may_go_back, plan_refresh
    from shrinkwrap_async.state.db import StateDB
    from shrinkwrap_async.trust.chain import establish_trust

    cache_dir = usable_catalog_cache_dir(settings)
    async with Fetcher(settings, max_in_flight=2) as fetcher:
        trusted = await establish_trust(fetcher, settings, cache_dir=cache_dir / "certificates")
        root_hex = trusted.root_catalog.hex
        db = await StateDB.for_destination(dest_base)
        try:
            plan = await plan_refresh(
                db,
                settings.fqrn,
                root_hash=root_hex,
                revision=trusted.revision,
                spec_digest=spec.digest(),
                tree_root=dest_base / settings.fqrn,
                allow_older=may_go_back(allow_older, trusted),
            )
        finally:
            await db.close()
        state = DestinationState(trusted, plan, 0)
        if plan.up_to_date:
            state.up_to_date = up_to_date_stats(fetcher, trusted, plan)
        else:
            state.after_shards = ShardMarks(dest_base, settings.fqrn).directory.is_dir()
            if state.incremental and workers > 1:
                state.split = await plan_split(fetcher, cache_dir, trusted, plan, spec, workers)
        state.requests = fetcher.stats.requests
        return state


async def record_running(dest_base: Path, fqrn: str, spec: Spec, state: DestinationState) -> None:
    """A run towards the new root, recorded as running before the shards of a split refresh
    start: stopped anywhere (killed with the shards), it is resumed as an unfinished refresh
    (catalogs diffed again, temp names left in the directories removed)."""
    from shrinkwrap_async.state.db import StateDB

    async with await StateDB.for_destination(dest_base) as db:
        await _begin_run(db, fqrn, spec, state)


async def _begin_run(db: Any, fqrn: str, spec: Spec, state: DestinationState) -> None:
    await db.begin_export(
        fqrn,
        root_hash=state.trusted.root_catalog.hex,
        revision=state.trusted.revision,
        spec_digest=spec.digest(),
    )


async def record_shards_done(
    dest_base: Path, fqrn: str, catalogs: dict[str, str], forget: list[str]
) -> None:
    """The shards of a split refresh have ended: the catalogs they completed, for the final
    pass to skip, and those to forget (see ``catalog_shards.shards_outcome``); the running
    record of :func:`record_running` gives way to the final pass's own."""
    from shrinkwrap_async.state.db import StateDB

    async with await StateDB.for_destination(dest_base) as db:
        await db.record_catalogs_applied(fqrn, catalogs)
        await db.forget_catalogs(fqrn, forget)
        await db.discard_running(fqrn)


async def record_stopped_run(
    dest_base: Path, fqrn: str, spec: Spec, state: DestinationState, exit_code: int
) -> None:
    """A run whose shards were stopped (a signal) or failed: recorded as aborted, as an
    ordinary export records itself, so that the history and the next run see it.

    The record is best effort when the destination itself failed (full, read-only): the
    shards' exit code and message say what happened, and a rerun resumes from the
    ``.data`` store and the tree without it."""
    from shrinkwrap_async.state.db import ABORTED, StateDB
    from shrinkwrap_async.store.errors import as_storage_error

    try:
        async with await StateDB.for_destination(dest_base) as db:
            await _begin_run(db, fqrn, spec, state)
            await db.finish_export(fqrn, status=ABORTED, exit_code=exit_code)
    except Exception as error:
        failure = as_storage_error(error)
        if failure is None:
            raise
        print(f"shrinkwrap-async: the stopped run is not recorded: {failure}", file=sys.stderr)


def report_up_to_date(args: argparse.Namespace, stats: ExportStats, workers: int) -> int:
    if args.json:
        data = stats.as_dict()
        data.update(up_to_date=True, workers=workers, shards=[])
        print(json.dumps(data, indent=1, sort_keys=True))
    elif args.quiet == 0:
        print(stats.up_to_date_line(args.repo))
    return int(ExitCode.OK)


def run_workers(
    args: argparse.Namespace,
    spec: Spec,
    workers: int,
    *,
    settings: Any,
    dest_base: Path,
) -> int:
    """Run ``workers`` shards, then the final pass; print one summary; return the exit code.

    An export that is up to date starts no shard. A refresh of a tree whose catalogs are
    recorded walks only what changed between the catalogs: shards that split files would
    each diff every catalog, so a large one is split by catalog instead
    (``pipeline.catalog_shards``) and a small one runs here, in one process. Whatever
    happens, the command's metrics and finish event are written once, here.
    """
    from shrinkwrap_async.commands import export

    export.ensure_json_log(args)
    started = time.time()
    stats: ExportStats | None = None
    exit_code = int(ExitCode.PARTIAL)
    try:
        stats, exit_code = _run(args, spec, workers, settings, dest_base)
    except BaseException as error:
        exit_code = export.ending_exit_code(error, exit_code)
        raise
    finally:
        export.finish_run(args, stats, exit_code, started)
    return exit_code


def _run(
    args: argparse.Namespace, spec: Spec, workers: int, settings: Any, dest_base: Path
) -> tuple[ExportStats | None, int]:
    import threading

    from shrinkwrap_async.commands import export

    allow_older = args.allow_older_revision
    state = run_async(
        destination_state(settings, spec, dest_base, workers, allow_older=allow_older)
    )
    if state.up_to_date is not None:
        from shrinkwrap_async.pipeline.recorded_run import log_up_to_date
        from shrinkwrap_async.pipeline.runner import ExportOptions

        stats = state.up_to_date
        log_up_to_date(settings.fqrn, stats)
        if args.gc:  # as the ordinary export does after any complete run
            options = ExportOptions(dest_base=dest_base, dest_cache=export.dest_cache(args))
            export.run_gc(dest_base, options.store_root, args.quiet > 0)
        return stats, report_up_to_date(args, stats, workers)
    split = state.split
    if split is not None:  # no more shards than catalogs to give them
        workers = max(split.owners.values()) + 1
    if state.alone and split is None:
        log.info(
            "refreshing from the catalogs' differences in one process, without shards"
            if state.incremental
            else "completing the work of earlier --shard runs in one process"
        )
        stats, exit_code = export.export_loaded(
            args,
            settings,
            spec,
            dest_base,
            lock_held=True,
            trusted=state.trusted,
            plan=state.plan,
            report_finish=False,
        )
        stats.requests += state.requests
        export.report(args, spec, stats, exit_code)
        return stats, exit_code
    handled = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if handled else None
    try:
        return _run_shards(args, spec, workers, settings, dest_base, state, split)
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        print(f"shrinkwrap-async: stopped by {name}; a rerun resumes", file=sys.stderr)
        exit_code = int(ExitCode.SIGNAL_BASE) + stop.signum
    except KeyboardInterrupt:
        exit_code = int(ExitCode.SIGNAL_BASE) + signal.SIGINT
    finally:
        if handled:
            signal.signal(signal.SIGTERM, previous)
    run_async(record_stopped_run(dest_base, settings.fqrn, spec, state, exit_code))
    return None, exit_code


def _run_shards(
    args: argparse.Namespace,
    spec: Spec,
    workers: int,
    settings: Any,
    dest_base: Path,
    state: DestinationState,
    split: CatalogSplit | None = None,
) -> tuple[ExportStats | None, int]:
    """``split``: a refresh split by catalog (pipeline.catalog_shards), whose final pass is
    the refresh resumed; else shards split files and the final pass walks directories."""
    started = time.monotonic()
    show = shows_progress(args)
    live = sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="shrinkwrap-workers.") as scratch:
        spec_file = args.spec_file
        if spec_file == "-":  # the shards cannot read standard input again
            spec_file = str(Path(scratch) / "spec")
            Path(spec_file).write_text(spec.to_text(), encoding="utf-8", errors="surrogateescape")
        common = common_arguments(args, spec_file, workers)
        stats_files = [Path(scratch) / f"shard-{k}.json" for k in range(workers)]
        processes: list[ShardProcess] = []
        shard_env = dict(os.environ, **{SHARDS_STARTED_ENV: repr(time.time())})
        if split is not None:
            below = max(split.passed, key=len) or "/"
            log.info(
                "refreshing %d catalogs below %s in %d shards, split by catalog",
                len(split.owners),
                below,
                workers,
            )
            assignment = Path(scratch) / "catalog-split.json"
            split.write(assignment, settings.fqrn)
            shard_env[CATALOG_SHARDS_ENV] = str(assignment)
            # a run stopped anywhere from here on is resumed as any unfinished refresh
            run_async(record_running(dest_base, settings.fqrn, spec, state))
        elif state.plan.applied:  # a resumed export: the shards skip what is complete
            done = Path(scratch) / "done-catalogs.json"
            write_done_catalogs(done, settings.fqrn, state.plan.applied)
            shard_env[DONE_CATALOGS_ENV] = str(done)
        if workers * CORES_PER_SHARD > cpu_count():  # the shards alone fill the cores
            shard_env.setdefault(WORKER_ENV, "0")  # commit in a thread, no extra process
        # What the shards run, imported once here before they are forked (the final pass
        # needs it too).
        import shrinkwrap_async.pipeline.recorded_run  # noqa: F401

        try:
            with root_for_forks(state.trusted):  # every shard exports the parent's revision
                for index in range(workers):
                    env = dict(shard_env, **{STATS_FILE_ENV: str(stats_files[index])})
                    shard_argv = [*common, "--shard", f"{index}/{workers}", "--workers", "1"]
                    shard_argv = ["export", *shard_argv, "--json", "--no-progress", "-q"]
                    processes.append(start_shard(shard_argv, env))
            outputs = _wait(processes, stats_files, show, live, started, args.stat_period)
        except BaseException:
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                process.wait()
            raise
        codes = [process.returncode for process in processes]
        shard_stats = [_read_json(text) for text in outputs]
        fatal = [code for code in codes if code not in (0, int(ExitCode.PARTIAL))]
        if fatal:
            message = f"shards ended with exit codes {codes}; final pass not run"
            print(f"shrinkwrap-async: {message}", file=sys.stderr)
            exit_code = fatal[0] if fatal[0] > 0 else int(ExitCode.SIGNAL_BASE) - fatal[0]
            run_async(record_stopped_run(dest_base, settings.fqrn, spec, state, exit_code))
            return None, exit_code
    from shrinkwrap_async.commands import export

    # Every file is in place when every shard ended complete on the parent's revision (a
    # shard started as a new program verified its own, which a publish may have moved on).
    root_hex = state.trusted.root_catalog.hex
    same_root = all(s.get("root_hash") == root_hex for s in shard_stats)
    if split is not None:  # the catalogs the shards completed; the final pass does the rest
        completed, forget = shards_outcome(split, shard_stats, root_hex)
        run_async(record_shards_done(dest_base, settings.fqrn, completed, forget))
    stats, exit_code = export.export_loaded(
        args,
        settings,
        spec,
        dest_base,
        final_pass=True,
        files_done=split is None and not any(codes) and same_root,
        trusted=state.trusted,
        report_finish=False,
    )
    stats.requests += state.requests
    summed = SUMMED if split is None else SPLIT_SUMMED
    summary = merge_summaries(dict(stats.as_dict(), exit_code=exit_code), shard_stats, summed)
    summary.elapsed = time.monotonic() - started
    if args.json:
        data = summary.as_dict()
        data["workers"] = workers
        data["shards"] = [{k: s.get(k, 0) for k in SUMMED} for s in shard_stats]
        print(json.dumps(data, indent=1, sort_keys=True))
    elif args.quiet == 0:
        print(summary.table())
        print(f"workers|{workers}|Shard processes")
    return summary, exit_code


def _wait(
    processes: list[ShardProcess],
    stats_files: list[Path],
    show: bool,
    live: bool,
    started: float,
    period: float,
) -> list[str]:
    """Wait for every shard, reading their outputs; one progress line for all of them.

    A thread per shard reads its output to the end and reaps it, so the wait ends as soon
    as the last shard has (a polling interval here once cost a tenth of a second a run).
    """
    import threading

    outputs = [""] * len(processes)

    def read(index: int) -> None:
        stream = processes[index].stdout
        assert stream is not None
        outputs[index] = stream.read()
        processes[index].wait()

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(processes))]
    for reader in readers:
        reader.start()
    # Without lines (-q, --no-progress, -p 0) the wait still wakes now and then, for signals.
    interval = (0.5 if live else period) if show else JOIN_SECONDS
    next_line = time.monotonic() + interval
    for reader in readers:
        while reader.is_alive():
            # a bounded join, so that a signal's handler runs promptly in this thread
            reader.join(min(max(next_line - time.monotonic(), 0.0), JOIN_SECONDS))
            if time.monotonic() < next_line:
                continue
            next_line = time.monotonic() + interval
            if show:
                done = sum(process.poll() is not None for process in processes)
                line = _progress_line(stats_files, done, len(processes), started)
                sys.stderr.write(f"\r\x1b[K{line}" if live else f"{line}\n")
                sys.stderr.flush()
    if show and live:
        sys.stderr.write("\r\x1b[K")
    return outputs


def merge_summaries(
    final: dict[str, Any], shards: list[dict[str, Any]], summed: tuple[str, ...] = SUMMED
) -> ExportStats:
    """The final pass's counts, with objects, bytes and requests (``summed``) of every
    process summed."""
    fields = set(ExportStats.__dataclass_fields__)
    stats = ExportStats(**{k: v for k, v in final.items() if k in fields and k != "failures"})
    stats.failures = [Failure(**f) for f in final.get("failures", [])]
    for key in summed:
        setattr(stats, key, getattr(stats, key) + sum(int(s.get(key, 0)) for s in shards))
    for key in COUNTED_ONCE:
        setattr(stats, key, max(getattr(stats, key), sum(int(s.get(key, 0)) for s in shards)))
    stats.dedup_files = max(0, stats.files - stats.data_files)
    return stats
