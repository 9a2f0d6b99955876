"""``shrinkwrap-async status``: what a destination holds and whether its last runs ended well."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shrinkwrap_async.cli import repository_name
from shrinkwrap_async.exitcodes import ExitCode


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "status",
        help="show the revision each repository of a destination is at, and its last run",
        description="For each repository exported into DEST (or only REPO): the revision "
        "and root catalog of the tree, when it was exported and published, the spec, and how "
        "the last run ended (failed objects, a stopped or killed run, a run going now). "
        "Reads the state without taking the lock. Exit 0 when every last run succeeded or is "
        "still going, 1 when one needs a rerun, 2 when nothing was exported there.",
    )
    parser.add_argument(
        "-x", "--dest-base", required=True, metavar="DEST", help="export destination"
    )
    parser.add_argument("-r", "--repo", type=repository_name, help="only this repository")
    parser.add_argument("--json", action="store_true", help="one JSON object per repository")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shrinkwrap_async.state.status import HEALTHY, describe, destination_status

    found = destination_status(Path(args.dest_base).absolute(), args.repo)
    for status in found:
        if args.json:
            print(json.dumps(status.as_json()), file=sys.stdout)
        else:
            print("\n".join(describe(status)), file=sys.stdout)
    healthy = all(status.state in HEALTHY for status in found)
    return int(ExitCode.OK if healthy else ExitCode.PARTIAL)
