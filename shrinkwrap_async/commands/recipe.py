"""``shrinkwrap-async recipe``: print a Dockerfile, a Singularity definition or bind-mount lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shrinkwrap_async.cli import repository_name
from shrinkwrap_async.exitcodes import ExitCode
from shrinkwrap_async.packing.recipes import (
    DEFAULT_BASE_IMAGE,
    MODES,
    RUNTIMES,
    RecipeOptions,
    render_recipe,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "recipe",
        help="print a Dockerfile or Singularity definition for an export",
        description=(
            "Print a container recipe that embeds an export (--mode embed), runs the "
            "exporter at build time (--mode build), or the commands that bind-mount it "
            "instead (--mode bind)."
        ),
    )
    parser.add_argument("runtime", choices=RUNTIMES)
    parser.add_argument(
        "--fqrn",
        default="sft.cern.ch",
        type=repository_name,
        help="repository (default %(default)s)",
    )
    parser.add_argument("--mode", choices=MODES, default="embed")
    parser.add_argument("--spec", help="spec file in the build context (build mode)")
    parser.add_argument(
        "--config", help="client config file in the build context (default <fqrn>.conf)"
    )
    parser.add_argument("--keys", help="directory of public keys in the build context")
    parser.add_argument("-x", "--dest-base", default="/export/cvmfs", help="the export on the host")
    parser.add_argument("--base-image", default=DEFAULT_BASE_IMAGE, help="final image base")
    parser.add_argument(
        "--package", default="shrinkwrap-async", help="pip requirement for the build stage"
    )
    parser.add_argument("-o", "--output", help="write to this file instead of stdout")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = RecipeOptions(
        fqrn=args.fqrn,
        spec=args.spec,
        config=args.config,
        keys=args.keys,
        dest_base=args.dest_base.rstrip("/") or "/",
        base_image=args.base_image,
        package=args.package,
    )
    text = render_recipe(args.runtime, args.mode, options)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return ExitCode.OK
