"""``shrinkwrap-async gc``: remove objects of ``.data`` that no exported tree uses any more."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from shrinkwrap_async import cli
from shrinkwrap_async.exitcodes import ExitCode, StorageError, UsageError
from shrinkwrap_async.runtime import cpu_count
from shrinkwrap_async.state.eventlog import add_log_options, install_json_log, log_event
from shrinkwrap_async.state.gc import DATA_DIR_NAME, GcResult, collect_garbage
from shrinkwrap_async.state.lock import RunLock, add_lock_options

log = logging.getLogger("shrinkwrap_async.gc")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "gc",
        help="remove unused objects and stale temporary files from the object store",
        description="Remove objects of <dest-base>/.data that no exported tree links any "
        "more (link count 1), including those orphaned by killed runs or by trees deleted "
        "by hand, and temporary files left by killed runs. Takes the destination's lock.",
    )
    parser.add_argument(
        "-x", "--dest-base", required=True, metavar="DEST", help="export destination"
    )
    parser.add_argument(
        "-y",
        "--dest-cache",
        "--data-dir",
        dest="data_dir",
        metavar="DATA",
        default=None,
        help=f"object store (default <dest-base>/{DATA_DIR_NAME})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be removed, remove nothing"
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON lines instead of a table on stdout"
    )
    parser.add_argument(
        "--prune-dirs",
        action="store_true",
        help="also remove empty fan-out directories (an export recreates them when needed)",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="threads scanning directories in parallel where the file system answers "
        "slowly, as network and parallel ones do (default: 4 x cores, at most 32); on a "
        "local file system one thread is faster and scans alone",
    )
    add_lock_options(parser)
    add_log_options(parser)
    cli.add_verbosity_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.log_json:
        install_json_log(args.log_json)
    dest = Path(args.dest_base)
    if not dest.is_dir():
        raise UsageError(f"destination {dest} is not a directory")
    data_dir = Path(args.data_dir) if args.data_dir else dest / DATA_DIR_NAME
    workers = args.jobs if args.jobs and args.jobs > 0 else min(32, 4 * cpu_count())
    out = sys.stdout

    def on_remove(kind: str, name: str, size: int) -> None:
        if args.dry_run:
            if args.json:
                print(json.dumps({"would_remove": name, "kind": kind, "size": size}), file=out)
            else:
                print(f"would remove {kind} {name} ({size} bytes)", file=out)
        log_event(
            log,
            "gc.remove",
            f"{'would remove' if args.dry_run else 'removed'} {kind} {name}",
            level=logging.DEBUG,
            kind=kind,
            name=name,
            size=size,
            dry_run=args.dry_run,
        )

    lock = RunLock.for_destination(dest, lock_file=args.lock_file, wait=args.lock_wait)
    with lock:
        log_event(
            log,
            "gc.start",
            f"garbage collection of {data_dir}{' (dry run)' if args.dry_run else ''}",
            data_dir=str(data_dir),
            dry_run=args.dry_run,
        )
        result = collect_garbage(
            dest,
            data_dir,
            dry_run=args.dry_run,
            prune_empty_dirs=args.prune_dirs,
            workers=workers,
            on_remove=on_remove,
        )
    _report(result, as_json=args.json, quiet=args.quiet > 0)
    log_event(
        log,
        "gc.finish",
        f"garbage collection {'(dry run) ' if args.dry_run else ''}found "
        f"{result.objects_removed} unused objects ({result.bytes_removed} bytes) and "
        f"{result.temps_removed} stale temporary files",
        **{k: v for k, v in result.as_dict().items() if k != "first_error"},
    )
    if result.errors:
        raise StorageError(
            f"garbage collection finished with {result.errors} errors; first: {result.first_error}"
        )
    return ExitCode.OK


def _report(result: GcResult, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        print(json.dumps({"summary": result.as_dict()}))
        return
    if quiet:
        return
    print(result.table())
    print(f"Garbage collection took {result.seconds:.0f} seconds.")
