"""``shrinkwrap-async spec``: build specs from traces, merge specs, check a spec."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from shrinkwrap_async import cli
from shrinkwrap_async.exitcodes import ExitCode, StorageError, UsageError
from shrinkwrap_async.spec.merge import format_rules, merge_specs, minimize
from shrinkwrap_async.spec.trace import Policy, load_listing, read_traces, rules_from_events
from shrinkwrap_async.spec.tree import Spec

PLAN_MODULE = "shrinkwrap_async.pipeline.plan"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "spec",
        help="build specs from traces, merge specs, check what a spec selects",
        description="Work with spec files (cvmfs_shrinkwrap syntax).",
    )
    actions = parser.add_subparsers(dest="spec_command", metavar="ACTION")

    trace = actions.add_parser(
        "from-trace",
        help="write a spec covering what traced jobs touched",
        description="Read CVMFS tracer logs (CVMFS_TRACEFILE), Parrot --name-list files or "
        "plain path lists and write a sorted, minimal spec.",
    )
    trace.add_argument("traces", nargs="+", metavar="TRACE", help="trace files ('-' = stdin)")
    trace.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")
    trace.add_argument(
        "--policy",
        choices=[p.value for p in Policy],
        default=Policy.PDIR.value,
        help="pdir: an opened file includes its parent flat (default); exact: only what "
        "was touched; widen: pdir, and directories of which more than --widen-share "
        "was touched become /dir/* (needs --listing)",
    )
    trace.add_argument(
        "--widen-share",
        type=_share,
        default=0.5,
        metavar="SHARE",
        help="share of a directory's entries above which 'widen' takes all of it (0.5)",
    )
    trace.add_argument(
        "--listing",
        metavar="FILE",
        help="listing JSON of the repository (listing.py dump): directory sizes for "
        "'widen'; traced paths not in it are dropped",
    )
    trace.add_argument(
        "--repo",
        type=cli.repository_name,
        metavar="FQRN",
        help="repository whose /cvmfs/<fqrn> prefix is stripped",
    )
    cli.add_verbosity_options(trace)
    trace.set_defaults(run=run_from_trace)

    merge = actions.add_parser(
        "merge",
        help="combine several specs into one minimal spec",
        description="Write one sorted, minimal spec that selects everything each spec selects.",
    )
    merge.add_argument("specs", nargs="+", metavar="SPEC", help="spec files ('-' = stdin)")
    merge.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")
    cli.add_verbosity_options(merge)
    merge.set_defaults(run=run_merge)

    check = actions.add_parser(
        "check",
        help="plan an export: what a spec selects and costs, without downloading data",
        description="Fetch the catalogs a spec needs and print what an export would create "
        "(the same as 'export --dry-run').",
    )
    check.add_argument("spec_file", metavar="SPEC", help="spec file ('-' = stdin)")
    check.add_argument(
        "-r", "--repo", required=True, type=cli.repository_name, metavar="FQRN", help="repository"
    )
    check.add_argument(
        "-f",
        "--src-config",
        default="cvmfs.conf:cvmfs.local",
        metavar="FILES",
        help="colon-separated client configuration files",
    )
    check.add_argument("-x", "--dest-base", metavar="DEST", help="compare with this export")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.add_argument(
        "--exact",
        action="store_true",
        help="list every catalog (exact distinct objects) instead of using the statistics "
        "of wholly selected nested catalogs",
    )
    cli.add_verbosity_options(check)
    check.set_defaults(run=run_check)

    parser.set_defaults(run=lambda _args: _missing_action(parser))


def _missing_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return ExitCode.USAGE


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("the share must be at least 0 and below 1")
    return value


def _write(text: str, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8", errors="surrogateescape")
        temporary.replace(path)
    except OSError as error:
        raise StorageError(f"cannot write {output}: {error.strerror}") from None


def _note(message: str) -> None:
    print(f"{cli.PROG}: {message}", file=sys.stderr)


def run_from_trace(args: argparse.Namespace) -> int:
    read = read_traces(args.traces, repository=args.repo)
    if read.skipped:
        _note(f"skipped {read.skipped_summary()}")
    if not read.events:
        raise UsageError("the traces hold no path of the repository")
    listing = load_listing(args.listing) if args.listing else None
    rules, notes = rules_from_events(
        read.events, Policy(args.policy), listing=listing, widen_share=args.widen_share
    )
    for note in notes:
        _note(note)
    _write(format_rules(minimize(rules)), args.output)
    return ExitCode.OK


def run_merge(args: argparse.Namespace) -> int:
    if args.specs.count("-") > 1:
        raise UsageError("standard input ('-') can be given once")
    rules, notes = merge_specs([Spec.load(path) for path in args.specs])
    for note in notes:
        _note(note)
    _write(format_rules(rules), args.output)
    return ExitCode.OK


def run_check(args: argparse.Namespace) -> int:
    spec = Spec.load(args.spec_file).require_selection()
    if importlib.util.find_spec(PLAN_MODULE) is None:
        _note("spec check needs the export pipeline")
        return ExitCode.USAGE
    plan_export = importlib.import_module(PLAN_MODULE).plan_export
    result = plan_export(
        spec,
        repository=args.repo,
        config_files=[Path(p) for p in args.src_config.split(":") if p],
        dest_base=Path(args.dest_base) if args.dest_base else None,
        json_output=args.json,
        exact=args.exact,
        quiet=args.quiet,
    )
    if inspect.isawaitable(result):
        from shrinkwrap_async.runtime import run_async

        result = run_async(result)
    return int(result) if result is not None else ExitCode.OK
