"""``shrinkwrap-async export``: cvmfs_shrinkwrap's command line, on the async pipeline."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from shrinkwrap_async.cli import add_verbosity_options
from shrinkwrap_async.exitcodes import ExitCode, PartialExportError, UsageError
from shrinkwrap_async.runtime import run_async

log = logging.getLogger("shrinkwrap_async.export")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export",
        help="export a repository (or the part a spec selects) into a POSIX tree",
        description="Export a CernVM-FS repository into <dest-base>/<fqrn>, with objects "
        "in <dest-base>/.data (cvmfs_shrinkwrap's layout and options).",
    )
    parser.add_argument("-r", "--repo", required=True, help="repository name (fqrn)")
    parser.add_argument(
        "-f", "--src-config", required=True, help="client config files, colon-separated"
    )
    parser.add_argument("-t", "--spec-file", required=True, help="spec file ('-' = stdin)")
    parser.add_argument("-x", "--dest-base", default="/export/cvmfs", help="output base")
    parser.add_argument("-y", "--dest-cache", help="object store (default <dest-base>/.data)")
    parser.add_argument("-c", "--src-cache", default="", help="catalog cache base directory")
    parser.add_argument("-j", "--threads", type=int, default=0, help="requests in flight")
    parser.add_argument("-p", "--stat-period", type=float, default=10.0, help="seconds")
    parser.add_argument("-g", "--gc", action="store_true", help="collect unused objects after")
    parser.add_argument("--dry-run", action="store_true", help="walk catalogs, write nothing")
    parser.add_argument("--json", action="store_true", help="summary as JSON on stdout")
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress"
    )
    parser.add_argument(
        "--keep-variant-symlinks",
        action="store_true",
        help="write variant symlinks ($(VAR)) unresolved",
    )
    add_verbosity_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.pipeline.runner import ExportOptions, export_repository
    from shrinkwrap_async.spec.tree import Spec

    configs = [Path(p) for p in args.src_config.split(":") if p]
    for path in configs:
        if not path.is_file():
            raise UsageError(f"config file {path} does not exist (given with -f)")
    settings = ClientSettings.load(configs, args.repo)
    if args.src_cache and settings.cache_base is None:
        import dataclasses

        settings = dataclasses.replace(settings, cache_base=Path(args.src_cache))
    if args.spec_file != "-" and not Path(args.spec_file).is_file():
        raise UsageError(f"spec file {args.spec_file} does not exist (given with -t)")
    spec = Spec.load(args.spec_file)
    dest_base = Path(args.dest_base).absolute()
    options = ExportOptions(
        dest_base=dest_base,
        dest_cache=Path(args.dest_cache).absolute() if args.dest_cache else None,
        max_in_flight=args.threads if args.threads > 0 else 32,
        dry_run=args.dry_run,
        keep_raw_symlinks=args.keep_variant_symlinks,
        stat_period=args.stat_period,
        progress=args.progress and args.quiet == 0,
        live_progress=sys.stderr.isatty(),
    )
    stats = run_async(
        export_repository(
            settings,
            spec,
            options,
            config_argument=args.src_config,
            src_cache=args.src_cache,
        )
    )
    for warning in spec.warnings():  # after the walk: rules that matched nothing are known
        log.warning("spec: %s", warning)
    if args.gc and not args.dry_run:
        run_gc(dest_base, options.store_root)
    if args.json:
        print(stats.to_json())
    elif args.quiet == 0:
        print(stats.table(), file=sys.stderr if args.json else sys.stdout)
        if args.dry_run:
            print(
                f"plan: {stats.files} files ({stats.bytes} bytes), {stats.dirs} dirs, "
                f"{stats.symlinks} symlinks, {stats.objects_needed} objects to fetch, "
                f"{stats.catalogs} catalogs"
            )
    for failure in stats.failures:
        log.error("failed: %s (object %s): %s", failure.path, failure.object, failure.reason)
    if stats.failures:
        log.error("%d objects failed; rerun to resume", len(stats.failures))
        return int(PartialExportError.exit_code)
    return int(ExitCode.OK)


def run_gc(dest_base: Path, store_root: Path) -> None:
    """``-g``: sweep objects no exported tree links any more (state.gc)."""
    if importlib.util.find_spec("shrinkwrap_async.state.gc") is None:
        log.warning("garbage collection is not available in this version; skipped")
        return
    from shrinkwrap_async.state import gc

    result = gc.collect_garbage(dest_base, store_root)
    print(result.table())
