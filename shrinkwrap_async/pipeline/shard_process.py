"""Starting the shard processes of ``export --workers``: forked on Linux, else a new program.

A shard is ``shrinkwrap-async export ... --shard K/N`` run as a process of its own. On Linux
it is a fork of the ``--workers`` parent, which has every module it needs imported already:
a new interpreter spends about 0.15 s of CPU on start-up and imports before its first
request, on the cores the shards are there to use. A fork copies only the thread that
calls it, and whatever locks other threads hold at that moment stay held in the child; so
the parent forks only while it is its one thread (the command line is, when it starts its
shards; a program calling ``cli.main`` from a thread of its own is not). Otherwise, off
Linux, or with ``SHRINKWRAP_ASYNC_SHARD_SPAWN=1``, each shard is a new
``python -m shrinkwrap_async`` (``=0`` forks whatever the threads).

Either way the parent sees the same small interface (``stdout``, ``poll``, ``wait``,
``send_signal``, ``returncode``, as :class:`subprocess.Popen`): the shard's standard output
(its ``--json`` summary) comes through a pipe, its standard error is the parent's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from typing import IO, Protocol

from shrinkwrap_async.runtime import set_process_name

SPAWN_ENV = "SHRINKWRAP_ASYNC_SHARD_SPAWN"  # "1": never fork; "0": fork even with threads
SHARD_NAME_PREFIX = "shard "  # a forked shard's process name (``ps -o comm``, /proc/PID/comm)


class ShardProcess(Protocol):
    stdout: IO[str] | None
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


def start_shard(argv: list[str], env: dict[str, str]) -> ShardProcess:
    """Start ``shrinkwrap-async <argv>`` with environment ``env``, its output on a pipe."""
    choice = env.get(SPAWN_ENV, "")
    one_thread = threading.active_count() == 1
    if sys.platform == "linux" and (choice == "0" or (choice != "1" and one_thread)):
        try:
            return ForkedShard(argv, env)
        except OSError:  # no fork now (process limit, memory): a new program may still start
            pass
    return subprocess.Popen(
        [sys.executable, "-m", "shrinkwrap_async", *argv],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


class ForkedShard:
    """``cli.main(argv)`` in a fork of this process; exits with its code, never returns.

    The child keeps only the thread that forked. It stops sharing the parent's signal
    handling (handlers and the event loop's wake-up pipe), gets its own standard streams
    (output to the pipe, input from /dev/null), environment and logging, and leaves with
    ``os._exit``, so none of the parent's clean-up (temporary directories, atexit) runs in it.
    Like a spawned shard, it asks for SIGTERM should the parent die
    (:func:`~shrinkwrap_async.pipeline.shard.stop_with_workers_parent`).
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # or its buffer would be written twice, by both processes
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
        try:
            pid = os.fork()
        except OSError:
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # pragma: no cover - the child (its coverage is the shard's behaviour)
            os.close(read_end)
            _run_child(argv, env, write_end)
        os.close(write_end)
        self.pid = pid
        self.stdout: IO[str] | None = open(read_end, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.returncode: int | None = None
        self._reaping = threading.Lock()

    def poll(self) -> int | None:
        if self.returncode is None and self._reaping.acquire(blocking=False):
            try:
                self._reap(os.WNOHANG)
            finally:
                self._reaping.release()
        return self.returncode

    def wait(self) -> int:
        with self._reaping:
            self._reap(0)
        assert self.returncode is not None
        return self.returncode

    def _reap(self, options: int) -> None:
        if self.returncode is not None:
            return
        while True:
            try:
                pid, status = os.waitpid(self.pid, options)
            except ChildProcessError:  # reaped elsewhere: the exit code is lost
                self.returncode = 1
                return
            except InterruptedError:
                continue
            break
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def process_name(argv: list[str]) -> str:
    """``shard K/N``: a fork has its parent's command line, so this is what tells the
    shards apart in ``ps`` and ``top``."""
    shard = argv[argv.index("--shard") + 1] if "--shard" in argv[:-1] else "?"
    return SHARD_NAME_PREFIX + shard


def _run_child(argv: list[str], env: dict[str, str], output: int) -> None:  # pragma: no cover
    code = 1
    try:
        set_process_name(process_name(argv))
        signal.set_wakeup_fd(-1)  # the parent's event loop would be woken by our signals
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(output, 1)
        os.close(output)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding="utf-8")  # noqa: SIM115
        sys.stderr = io.TextIOWrapper(  # the parent's may be a capture of its own
            open(2, "wb", buffering=0, closefd=False),  # noqa: SIM115
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
        )
        os.environ.clear()
        os.environ.update(env)
        for handler in list(logging.root.handlers):  # the parent's: the shard makes its own
            logging.root.removeHandler(handler)
        from shrinkwrap_async import cli

        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
