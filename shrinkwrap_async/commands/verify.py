"""``shrinkwrap-async verify``: re-hash ``.data`` objects and check a tree against its catalogs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from shrinkwrap_async.cli import add_verbosity_options, repository_name
from shrinkwrap_async.exitcodes import ExitCode, UsageError
from shrinkwrap_async.runtime import run_async
from shrinkwrap_async.state.lock import add_lock_options

log = logging.getLogger("shrinkwrap_async.verify")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "verify",
        help="check an exported tree and its objects; optionally repair them",
        description="Re-hash the objects of <dest-base>/.data that the export of REPO uses "
        "and check the tree against the catalogs it was exported from (types, modes, "
        "symlink targets, links to the right objects, extraneous entries). Exit 0 when "
        "everything matches, 1 when problems were found (or remain after --repair).",
    )
    parser.add_argument("-x", "--dest-base", required=True, help="export destination")
    parser.add_argument(
        "-r", "--repo", required=True, type=repository_name, help="repository name (fqrn)"
    )
    parser.add_argument(
        "-f",
        "--src-config",
        help="client config files, colon-separated (default: the copy in .provenance)",
    )
    parser.add_argument("-y", "--dest-cache", help="object store (default <dest-base>/.data)")
    parser.add_argument(
        "--repair",
        action="store_true",
        help="remove corrupt objects and re-export (downloads what is wrong or missing; "
        "the tree is brought to the repository's current revision)",
    )
    parser.add_argument("--json", action="store_true", help="problems as JSON lines on stdout")
    add_lock_options(parser)
    add_verbosity_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.state.verify import verify_destination

    dest = Path(args.dest_base).absolute()
    if not dest.is_dir():
        raise UsageError(f"destination {dest} is not a directory")
    if args.src_config:
        configs = [Path(p) for p in args.src_config.split(":") if p]
    else:
        configs = [dest / ".provenance" / args.repo / "src.config"]
    for path in configs:
        if not path.is_file():
            raise UsageError(f"config file {path} does not exist (give one with -f)")
    settings = ClientSettings.load(configs, args.repo)
    store = Path(args.dest_cache).absolute() if args.dest_cache else dest / ".data"
    report = run_async(verify_destination(settings, dest, store_root=store))
    _print(report, args)
    if report.ok or not args.repair:
        return int(ExitCode.OK if report.ok else ExitCode.PARTIAL)
    run_async(_repair(settings, dest, store, report, args))
    after = run_async(verify_destination(settings, dest, store_root=store))
    _print(after, args)
    return int(ExitCode.OK if after.ok else ExitCode.PARTIAL)


async def _repair(settings, dest: Path, store: Path, report, args) -> None:  # type: ignore[no-untyped-def]
    """Drop corrupt objects and the refresh state, then export again under the lock."""
    from shrinkwrap_async.pipeline.recorded_run import export_repository
    from shrinkwrap_async.pipeline.runner import ExportOptions
    from shrinkwrap_async.spec.tree import Spec
    from shrinkwrap_async.state.db import StateDB
    from shrinkwrap_async.state.lock import RunLock
    from shrinkwrap_async.state.provenance import read_export_record
    from shrinkwrap_async.state.verify import remove_bad_objects

    record = read_export_record(dest, settings.fqrn)
    spec = Spec.parse(record.get("spec") or "/*\n", source="export.json")
    async with RunLock.for_destination(dest, lock_file=args.lock_file, wait=args.lock_wait):
        removed = remove_bad_objects(report, store)
        log.info("removed %d corrupt objects; exporting again", removed)
        db = await StateDB.for_destination(dest)
        try:
            await db.forget_repository(settings.fqrn)  # no short cut, no skipped catalogs
        finally:
            await db.close()
        options = ExportOptions(
            dest_base=dest, dest_cache=store if store != dest / ".data" else None
        )
        stats = await export_repository(settings, spec, options)
    if args.quiet == 0:
        print(
            f"repair: {removed} corrupt objects removed, {stats.data_files} objects fetched, "
            f"{stats.linked} files linked, {stats.removed} entries removed"
        )


def _print(report, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    out = sys.stdout
    if args.json:
        for problem in report.problems:
            print(json.dumps(dataclasses.asdict(problem)), file=out)
        return
    for problem in report.problems:
        print(problem.line(), file=out)
    if args.quiet == 0 or report.problems:
        print(
            f"{report.fqrn}: {report.entries_checked} entries and {report.objects_checked} "
            f"objects checked, {len(report.problems)} problems",
            file=out,
        )
