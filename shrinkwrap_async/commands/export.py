"""``shrinkwrap-async export``: cvmfs_shrinkwrap's command line, on the async pipeline."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shrinkwrap_async.cli import (
    add_verbosity_options,
    repository_name,
    requests_in_flight,
    run_ending_error,
)
from shrinkwrap_async.commands._running import load_source_arguments, run_stoppable
from shrinkwrap_async.exitcodes import ExitCode, UsageError
from shrinkwrap_async.pipeline import catalog_shards, shard
from shrinkwrap_async.pipeline.progress import shows_progress
from shrinkwrap_async.runtime import run_async
from shrinkwrap_async.state.eventlog import add_log_options, install_json_log, log_event
from shrinkwrap_async.state.lock import RunLock, add_lock_options
from shrinkwrap_async.state.metrics import RunMetrics, add_metrics_options, update_metrics_file

if TYPE_CHECKING:
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.pipeline.summary import ExportStats
    from shrinkwrap_async.spec.tree import Spec

log = logging.getLogger("shrinkwrap_async.export")


DEFAULT_CONFIGS = "cvmfs.conf:cvmfs.local"  # cvmfs_shrinkwrap's default for -f


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export",
        help="export a repository (or the part a spec selects) into a POSIX tree",
        description="Export a CernVM-FS repository into <dest-base>/<fqrn>, with objects "
        "in <dest-base>/.data (cvmfs_shrinkwrap's layout and options).",
    )
    parser.add_argument(
        "-r", "--repo", required=True, type=repository_name, help="repository name (fqrn)"
    )
    parser.add_argument(
        "-f",
        "--src-config",
        help=f"client config files, colon-separated (default {DEFAULT_CONFIGS}: those present)",
    )
    parser.add_argument("-t", "--spec-file", help="spec file ('-' = stdin; default <repo>.spec)")
    parser.add_argument("-x", "--dest-base", default="/export/cvmfs", help="output base")
    parser.add_argument("-y", "--dest-cache", help="object store (default <dest-base>/.data)")
    parser.add_argument("-c", "--src-cache", default="", help="catalog cache base directory")
    parser.add_argument(
        "-j",
        "--threads",
        type=requests_in_flight,
        default=0,
        help="requests in flight, for all shards together (default 32)",
    )
    parser.add_argument(
        "-p", "--stat-period", type=float, default=10.0, help="seconds between lines (0: none)"
    )
    parser.add_argument("-g", "--gc", action="store_true", help="collect unused objects after")
    parser.add_argument("--dry-run", action="store_true", help="walk catalogs, write nothing")
    parser.add_argument(
        "--allow-older-revision",
        action="store_true",
        help="apply a revision older than the one exported (else it is kept, as the client "
        "keeps its newer cached revision when a mirror or proxy serves an older one)",
    )
    parser.add_argument("--json", action="store_true", help="summary as JSON on stdout")
    parser.add_argument(
        "--changes",
        metavar="FILE",
        help="list what the run changed in the tree in FILE, a line per path: 'A path' "
        "added, 'M path' replaced, 'D path' removed (emptied first; appended to with --shard)",
    )
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress"
    )
    parser.add_argument(
        "--keep-variant-symlinks",
        action="store_true",
        help="write variant symlinks ($(VAR)) unresolved",
    )
    compat = parser.add_argument_group(
        "cvmfs_shrinkwrap options with one possible value (accepted so its command lines run)"
    )
    compat.add_argument("-s", "--src-type", default="cvmfs", help="only cvmfs (the default)")
    compat.add_argument("-b", "--src-base", help="ignored: no mounted repository is read")
    compat.add_argument("-d", "--dest-type", default="posix", help="only posix (the default)")
    compat.add_argument("-z", "--dest-config", default="", help="only empty (as upstream)")
    shard.add_arguments(parser)  # --shard, --workers, --exact (pipeline.shard)
    add_lock_options(parser)
    add_log_options(parser)
    add_metrics_options(parser)
    add_verbosity_options(parser)
    parser.set_defaults(run=run)


def apply_shrinkwrap_defaults(args: argparse.Namespace) -> None:
    """cvmfs_shrinkwrap's defaults for ``-f`` and ``-t``, and its one-valued options.

    Without ``-f`` the files of ``cvmfs.conf:cvmfs.local`` in the working directory are
    read (those present; cvmfs_shrinkwrap needs both); without ``-t``, ``<repo>.spec``."""
    if args.src_type != "cvmfs":
        raise UsageError(f"-s {args.src_type}: only cvmfs sources (repositories over HTTP)")
    if args.dest_type != "posix":
        raise UsageError(f"-d {args.dest_type}: only posix destinations")
    if args.dest_config:
        raise UsageError("-z: the POSIX destination takes no configuration (give none)")
    if args.src_config is None:
        present = [name for name in DEFAULT_CONFIGS.split(":") if Path(name).is_file()]
        if not present:
            raise UsageError(
                f"no client configuration: give -f FILE (the default, {DEFAULT_CONFIGS} in "
                "the working directory, is not there)"
            )
        args.src_config = ":".join(present)
    if args.spec_file is None:
        args.spec_file = f"{args.repo}.spec"
        if not Path(args.spec_file).is_file():
            raise UsageError(
                f"no spec file: give -t FILE (the default, {args.spec_file} in the working "
                "directory, is not there)"
            )


def run(args: argparse.Namespace) -> int:
    apply_shrinkwrap_defaults(args)
    settings, spec = load_source_arguments(args)  # once: a spec from stdin is read only here
    dest_base = Path(args.dest_base).absolute()
    if dest_base.exists() and not dest_base.is_dir():
        raise UsageError(f"destination {dest_base} is not a directory")
    if args.dry_run or args.workers != 1:  # the plan, or several shard processes
        return shard.run_elsewhere(args, settings, spec, dest_base)
    return run_loaded(args, settings, spec, dest_base)


def run_loaded(
    args: argparse.Namespace, settings: ClientSettings, spec: Spec, dest_base: Path
) -> int:
    """The export in this process, with the configuration and spec already loaded.

    A shard of a ``--workers`` parent leaves the finish event to the parent, which says it
    once for the whole command (the shard's own error line says what went wrong)."""
    report_finish = not shard.under_workers_parent()
    stats, exit_code = export_loaded(args, settings, spec, dest_base, report_finish=report_finish)
    report(args, spec, stats, exit_code)
    return exit_code


def export_loaded(
    args: argparse.Namespace,
    settings: ClientSettings,
    spec: Spec,
    dest_base: Path,
    *,
    final_pass: bool = False,
    files_done: bool = False,
    lock_held: bool = False,
    trusted: Any = None,
    plan: Any = None,
    report_finish: bool = True,
) -> tuple[ExportStats, int]:
    """Run the export; returns its statistics and exit code (printing nothing).

    ``final_pass``: the pass of ``--workers`` after its shards, run by the parent that
    holds the run lock already; ``files_done`` when every shard ended with exit code 0.
    ``lock_held``: the caller holds the run lock (a ``--workers`` parent exporting alone);
    ``trusted`` and ``plan``: the root it has just verified and its refresh plan (see
    ``export_repository``);
    ``report_finish``: write the metrics and the finish event (see :func:`finish_run`).
    """
    from shrinkwrap_async.pipeline.recorded_run import export_repository
    from shrinkwrap_async.pipeline.runner import ExportOptions

    extra: dict[str, Any] = {"shard": shard.Shard.parse(args.shard)} if args.shard else {}
    if args.shard and trusted is None:
        trusted = shard.root_from_parent(settings.fqrn)  # a forked shard of --workers
    if args.shard:
        extra["skip_catalogs"] = shard.done_by_parent(settings.fqrn)  # a resumed export
        split = catalog_shards.split_from_parent(settings.fqrn)  # a refresh split by catalog
        if split is not None:
            extra["catalog_split"] = split
    if final_pass:
        extra["files_done"] = files_done
    options = ExportOptions(
        dest_base=dest_base,
        dest_cache=dest_cache(args),
        max_in_flight=requests_in_flight_of(args),
        dry_run=args.dry_run,
        keep_raw_symlinks=args.keep_variant_symlinks,
        stat_period=args.stat_period,
        allow_older_revision=args.allow_older_revision,
        changes_file=changes_file(args),
        progress=shows_progress(args) and not final_pass,
        live_progress=sys.stderr.isatty(),
        extra=extra,
    )
    ensure_json_log(args)
    lock = RunLock.for_destination(dest_base, lock_file=args.lock_file, wait=args.lock_wait)
    started = time.time()
    stats = None
    exit_code = int(ExitCode.PARTIAL)

    async def locked_run() -> Any:
        if args.dry_run:  # writes nothing, so it needs no lock (and creates no lock file)
            return await export_repository(settings, spec, options)
        async with shard.run_lock(lock, args, held=final_pass or lock_held):  # pipeline.shard
            if not (final_pass or lock_held):
                start_changes(args)
            result = await export_repository(
                settings,
                spec,
                options,
                config_argument=args.src_config,
                src_cache=args.src_cache,
                trusted=trusted,
                plan=plan,
            )
            if args.gc and not args.dry_run:
                await asyncio.to_thread(run_gc, dest_base, options.store_root, args.quiet > 0)
            return result

    if args.shard:
        shard.stop_with_workers_parent()
    try:
        stats = run_async(
            run_stoppable(locked_run(), outcome="a rerun resumes", log=log, extra=options.extra)
        )
        exit_code = stats.exit_code if stats.exit_code is not None else int(bool(stats.failures))
    except BaseException as error:
        exit_code = ending_exit_code(error, exit_code)
        raise
    finally:
        if report_finish:
            finish_run(args, stats, exit_code, started)
    assert stats is not None  # the run either returned its statistics or raised
    return stats, exit_code


def requests_in_flight_of(args: argparse.Namespace) -> int:
    """``-j``, or the default of 32."""
    from shrinkwrap_async.pipeline.runner import ExportOptions

    return args.threads if args.threads > 0 else ExportOptions.max_in_flight


def changes_file(args: argparse.Namespace) -> Path | None:
    """``--changes``: the file every process of the run appends its changes to."""
    return Path(args.changes).absolute() if args.changes else None


def start_changes(args: argparse.Namespace) -> None:
    """Empty the ``--changes`` file, once the run holds the lock (a run that finds another
    one going must not empty that one's list); a ``--shard`` job appends to it instead, as
    the other jobs of its run do."""
    path = changes_file(args)
    if path is None or args.shard:
        return
    from shrinkwrap_async.link.change_log import start_change_log

    try:
        start_change_log(path)
    except OSError as error:
        raise UsageError(f"--changes {path}: {error.strerror}") from error


def dest_cache(args: argparse.Namespace) -> Path | None:
    """``-y``: the object store when it is not ``<dest-base>/.data``."""
    return Path(args.dest_cache).absolute() if args.dest_cache else None


_json_logs: set[str] = set()


def ensure_json_log(args: argparse.Namespace) -> None:
    """``--log-json``, installed once per process (a ``--workers`` parent, then its final
    pass, log to the same handler)."""
    if args.log_json and args.log_json not in _json_logs:
        install_json_log(args.log_json)
        _json_logs.add(args.log_json)


def ending_exit_code(error: BaseException, otherwise: int) -> int:
    """The exit code the command line gives for ``error`` (see ``cli.main``), so that the
    metrics and the finish event say what the caller sees; ``otherwise`` for a bug."""
    final = run_ending_error(error)
    return int(final.exit_code) if final is not None else otherwise


def finish_run(
    args: argparse.Namespace, stats: ExportStats | None, exit_code: int, started: float
) -> None:
    """The end of one command's export: ``--metrics-file`` and the ``export.finish`` event.

    Said once per command, by whoever ran the whole of it: the export, or the ``--workers``
    parent (its duration then covers the shards, and its outcome is theirs when they fail).
    """
    if exit_code == ExitCode.LOCKED:
        return
    seconds = round(time.time() - started, 3)
    if args.metrics_file and not args.dry_run:
        update_metrics_file(
            args.metrics_file,
            RunMetrics(
                repository=args.repo,
                exit_code=exit_code,
                revision=stats.revision if stats is not None else None,
                files=stats.files if stats is not None and exit_code == 0 else None,
                bytes=stats.bytes if stats is not None and exit_code == 0 else None,
                duration_seconds=seconds,
                failures=len(stats.failures) if stats is not None else 0,
            ),
        )
    log_event(
        log,
        "export.finish",
        f"export of {args.repo} finished with exit code {exit_code}",
        level=logging.INFO if exit_code == 0 else logging.ERROR,
        fqrn=args.repo,
        revision=stats.revision if stats is not None else None,
        exit_code=exit_code,
        files=stats.files if stats is not None else None,
        bytes=stats.bytes if stats is not None else None,
        seconds=seconds,
        up_to_date=stats.up_to_date if stats is not None else False,
    )


def report(args: argparse.Namespace, spec: Spec, stats: ExportStats, exit_code: int) -> None:
    """What an export prints when it ends: spec warnings, the summary, the outcome."""
    up_to_date = stats.up_to_date
    if not up_to_date:  # after a walk: rules that matched nothing are known (none without)
        for warning in spec.warnings():
            log.warning("spec: %s", warning)
    if args.json:
        document = stats.as_dict()
        document["exit_code"] = exit_code
        import json

        print(json.dumps(document, indent=1, sort_keys=True))
    elif args.quiet == 0:
        if up_to_date:
            print(stats.up_to_date_line(args.repo))
        else:
            print(stats.table())
        if args.dry_run:
            print(
                f"plan: {stats.files} files ({stats.bytes} bytes), {stats.dirs} dirs, "
                f"{stats.symlinks} symlinks, {stats.objects_needed} objects to fetch, "
                f"{stats.catalogs} catalogs"
            )
    if exit_code == ExitCode.UNREACHABLE:
        log.error("no object could be fetched: every server and proxy failed; rerun to resume")
    elif stats.failures:
        log.error("%d objects failed; rerun to resume", len(stats.failures))


def run_gc(dest_base: Path, store_root: Path, quiet: bool = False) -> None:
    """``-g``: sweep objects no exported tree links any more (state.gc)."""
    if importlib.util.find_spec("shrinkwrap_async.state.gc") is None:
        log.warning("garbage collection is not available in this version; skipped")
        return
    from shrinkwrap_async.state import gc

    result = gc.collect_garbage(dest_base, store_root)
    if not quiet:
        print(result.table())
