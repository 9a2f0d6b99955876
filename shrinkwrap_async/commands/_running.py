"""What the commands that read a repository share: ``-r -f -t -c``, and a stoppable run.

``export`` and ``pack`` (streaming from the repository) take the same source arguments,
checked the same way, and both stop cleanly on the first SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from shrinkwrap_async.exitcodes import ExitCode, ShrinkwrapError, UsageError

if TYPE_CHECKING:
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.spec.tree import Spec

T = TypeVar("T")


def load_source_arguments(args: argparse.Namespace) -> tuple[ClientSettings, Spec]:
    """The client settings and spec of ``-r -f -t -c``; a missing file is a usage error."""
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.spec.tree import Spec

    configs = [Path(p) for p in args.src_config.split(":") if p]
    if not configs:
        raise UsageError("-f needs at least one client config file")
    for path in configs:
        if not path.is_file():
            raise UsageError(f"config file {path} {_not_a_file(path)} (given with -f)")
    settings = ClientSettings.load(configs, args.repo)
    if args.src_cache and settings.cache_base is None:
        settings = dataclasses.replace(settings, cache_base=Path(args.src_cache))
    if args.spec_file != "-" and not Path(args.spec_file).is_file():
        spec_path = Path(args.spec_file)
        raise UsageError(f"spec file {spec_path} {_not_a_file(spec_path)} (given with -t)")
    return settings, Spec.load(args.spec_file).require_selection()


def _not_a_file(path: Path) -> str:
    return "is not a regular file" if path.exists() else "does not exist"


class StoppedBySignal(ShrinkwrapError):
    """SIGINT/SIGTERM: in-flight work abandoned, the run ended cleanly (exit 128 + N)."""

    def __init__(self, signum: int, outcome: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; {outcome}")
        self.exit_code = ExitCode.SIGNAL_BASE + signum  # type: ignore[assignment]


async def run_stoppable(
    coro: Coroutine[Any, Any, T],
    *,
    outcome: str,
    log: logging.Logger,
    extra: dict[str, Any] | None = None,
) -> T:
    """Run ``coro``; the first SIGINT/SIGTERM cancels it cleanly, a second one exits at once.

    A run stopped by a signal raises :class:`StoppedBySignal` whose message ends with
    ``outcome`` (what the user is left with, e.g. "a rerun resumes"). The signal number is
    left in ``extra["stop_signal"]`` (ExportOptions.extra) so that the state database
    records the run's exit code as 128 + N.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coro)
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            os._exit(ExitCode.SIGNAL_BASE + signum)  # second signal: stop now
        received.append(signum)
        if extra is not None:
            extra["stop_signal"] = signum
        log.warning("%s received: stopping (again to stop at once)", signal.Signals(signum).name)
        task.cancel()

    handled: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread():
        handled = ()  # signals are delivered to the main thread only (embedding, tests)
    for signum in handled:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            raise StoppedBySignal(received[0], outcome) from None
        raise
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
