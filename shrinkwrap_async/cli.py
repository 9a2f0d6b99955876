"""The ``shrinkwrap-async`` command line: a thin dispatcher over ``commands/*``.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``run=<function(args) -> int>`` as a default. Errors derived from ShrinkwrapError end the
run with a one-line message and their exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import re
import sys
from collections.abc import Sequence

from shrinkwrap_async import __version__
from shrinkwrap_async.exitcodes import ExitCode, ShrinkwrapError

PROG = "shrinkwrap-async"

# Order is the order of the help text.
COMMANDS: tuple[str, ...] = (
    "export",
    "demo",
    "status",
    "gc",
    "verify",
    "spec",
    "pack",
    "recipe",
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``argv`` naming a command, of that one only.

    A command module imports what its command needs (``export`` the whole pipeline,
    ``pack`` the packers, ...), so importing all of them would cost every run the start-up
    of all the others. ``--help``, no command or an unknown one still get them all.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export CernVM-FS repositories over HTTP into plain POSIX trees.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = chosen_command(argv)
    for name in COMMANDS if chosen is None else (chosen,):
        module_name = f"shrinkwrap_async.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def chosen_command(argv: Sequence[str] | None) -> str | None:
    """The command ``argv`` names (its first word that is not an option), if it is known."""
    for word in argv or ():
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


_REPOSITORY_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def repository_name(text: str) -> str:
    """``-r``/``--fqrn``: dot-separated labels of letters, digits, ``-`` and ``_`` (the name
    becomes a directory of the destination, so nothing that could leave it)."""
    if not _REPOSITORY_NAME.fullmatch(text) or len(text) > 255:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a repository name (e.g. sft.cern.ch: letters, digits, "
            "'-' and '_' in dot-separated labels)"
        )
    return text


def requests_in_flight(text: str) -> int:
    """``-j``: a number of requests in flight, 0 for the default."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of requests, 0 or more: {text!r}")
    return value


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """-v/-q, shared by the commands that log."""
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less output")


def setup_logging(verbose: int = 0, quiet: int = 0) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(
        level=max(logging.DEBUG, min(logging.CRITICAL, level)),
        format=f"{PROG}: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def report_error(error: ShrinkwrapError) -> int:
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return int(error.exit_code)


def run_ending_error(error: BaseException) -> ShrinkwrapError | None:
    """``error`` as the error the command reports (its exit code and one line), or None
    for a bug, which keeps its traceback."""
    from shrinkwrap_async.pipeline.object_fetch import most_serious
    from shrinkwrap_async.store.errors import as_storage_error

    if isinstance(error, BaseExceptionGroup):
        error = most_serious(error)
    if isinstance(error, ShrinkwrapError):
        return error
    return as_storage_error(error)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", 0))
    try:
        return int(run(args))
    except ShrinkwrapError as error:
        return report_error(error)
    except (BaseExceptionGroup, Exception) as error:
        # Last resort: commands convert these themselves; never show a traceback for a
        # storage failure (an OSError or SQLite's) or a run-ending error in a task group;
        # anything else is a bug and keeps its traceback.
        final = run_ending_error(error)
        if final is None:
            raise
        return report_error(final)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return ExitCode.SIGNAL_BASE + 2
