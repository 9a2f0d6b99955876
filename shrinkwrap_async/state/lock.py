"""The exclusive run lock: one export or gc at a time per destination.

The lock is an ``fcntl.flock`` on a lock file, by default ``<dest-base>/.provenance/lock``.
The kernel releases a flock when its holder dies, so a crashed or SIGKILLed run never leaves
a stale lock behind and there is nothing to break by hand. The holder writes one line
(``pid=… host=… started=…``) into the file so that a refused run can say who holds it.

Some parallel and network file systems (Lustre mounted without ``flock``, some NFS setups)
refuse ``flock``. The lock file can then live on a local disk (``--lock-file PATH``); every
run that writes the same destination must name the same file.

flock locks belong to an open file description, so two :class:`RunLock` objects on one path
exclude each other even inside one process.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from shrinkwrap_async.exitcodes import LockedError, StorageError

LOCK_FILE_NAME = "lock"
PROVENANCE_DIR = ".provenance"

# errno values meaning "this file system does not do flock" rather than "someone holds it".
_FLOCK_UNSUPPORTED = frozenset(
    code
    for code in (
        errno.ENOLCK,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.EINVAL,
        errno.ENOSYS,
    )
)
log = logging.getLogger(__name__)
_POLL_FIRST = 0.05
_POLL_MAX = 0.5


def default_lock_path(dest_base: str | os.PathLike[str]) -> Path:
    """``<dest-base>/.provenance/lock``."""
    return Path(dest_base) / PROVENANCE_DIR / LOCK_FILE_NAME


def holder_line(*, pid: int | None = None, started: float | None = None) -> str:
    """The line a holder writes into the lock file: pid, host and start time (UTC, ISO)."""
    pid = os.getpid() if pid is None else pid
    started = time.time() if started is None else started
    stamp = datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds")
    return f"pid={pid} host={socket.gethostname()} started={stamp}"


class RunLock:
    """Exclusive lock on ``path``; usable with ``async with`` (and plain ``with``).

    ``shared=True`` takes a shared lock instead: shards of one export hold it together and
    still exclude an ordinary export or a gc, which need the exclusive lock.

    ``wait`` is how many seconds to keep trying before giving up with :class:`LockedError`
    (exit 75); 0 (the default) fails at once. A file system that refuses flock raises
    :class:`StorageError` (exit 5) whose message suggests ``--lock-file`` on a local disk.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, wait: float = 0.0, shared: bool = False
    ) -> None:
        self.path = Path(path)
        self.wait = max(0.0, float(wait))
        self.shared = shared
        self._fd: int | None = None

    @classmethod
    def for_destination(
        cls,
        dest_base: str | os.PathLike[str],
        *,
        lock_file: str | os.PathLike[str] | None = None,
        wait: float = 0.0,
    ) -> RunLock:
        """The lock of a destination: ``lock_file`` if given, else the default location."""
        path = Path(lock_file) if lock_file is not None else default_lock_path(dest_base)
        return cls(path, wait=wait)

    @property
    def held(self) -> bool:
        return self._fd is not None

    # -- acquiring ----------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """One non-blocking attempt. True when acquired, False when another holder has it."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        fd = self._open()
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if error.errno in _FLOCK_UNSUPPORTED:
                raise StorageError(
                    f"the file system of {self.path} refuses flock ({error.strerror}); "
                    "put the lock on a local disk with --lock-file PATH"
                ) from error
            raise StorageError(f"cannot lock {self.path}: {error.strerror}") from error
        self._fd = fd
        if not self.shared:  # shared holders are many; the line names the exclusive one
            self._write_holder()
        return True

    def acquire_sync(self) -> None:
        """Acquire, sleeping between attempts for up to ``wait`` seconds (blocking)."""
        for pause in self._pauses():
            time.sleep(pause)

    async def acquire(self) -> None:
        """Acquire without blocking the event loop, waiting up to ``wait`` seconds."""
        for pause in self._pauses():
            await asyncio.sleep(pause)

    def _pauses(self) -> Iterator[float]:
        """Attempt after attempt until acquired, yielding the pause before each retry
        (doubling up to ``_POLL_MAX``); :class:`LockedError` once ``wait`` has run out."""
        deadline = time.monotonic() + self.wait
        delay = _POLL_FIRST
        while not self.try_acquire():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked_error()
            if delay == _POLL_FIRST:
                self._log_waiting()
            yield min(delay, remaining)
            delay = min(delay * 2, _POLL_MAX)

    def release(self) -> None:
        """Release the lock (idempotent). The holder line is cleared first."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.shared:
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    # -- context managers ---------------------------------------------------------------

    async def __aenter__(self) -> RunLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def __enter__(self) -> RunLock:
        self.acquire_sync()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    # -- helpers ------------------------------------------------------------------------

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # the destination itself, usually: --lock-file would not help
            raise StorageError(
                f"cannot create the directory {self.path.parent} (for the lock file): "
                f"{error.strerror}"
            ) from error
        try:
            # No O_TRUNC: the file may hold the current holder's line, which we must not erase.
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StorageError(
                f"cannot open lock file {self.path}: {error.strerror}; "
                "choose another place with --lock-file PATH"
            ) from error

    def _write_holder(self) -> None:
        assert self._fd is not None
        line = (holder_line() + "\n").encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, line, 0)
        except OSError:
            pass  # the holder line is informative only; the flock is what counts

    def read_holder(self) -> str | None:
        """The holder line currently in the lock file, or None when empty or unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        return text.splitlines()[0] if text else None

    def _log_waiting(self) -> None:
        from shrinkwrap_async.state.eventlog import log_event

        holder = self.read_holder() or "holder unknown"
        log_event(
            log,
            "lock.waiting",
            f"waiting up to {self.wait:g} s for the lock {self.path} ({holder})",
            lock_file=str(self.path),
            holder=holder,
        )

    def _locked_error(self) -> LockedError:
        holder = self.read_holder() or "holder unknown"
        waited = f" after waiting {self.wait:g} s" if self.wait > 0 else ""
        return LockedError(
            f"another run holds the lock {self.path} ({holder}){waited}; "
            "retry later or pass --lock-wait SECONDS"
        )


def add_lock_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--lock-file`` and ``--lock-wait`` to an argparse parser (export, gc)."""
    parser.add_argument(
        "--lock-file",
        metavar="PATH",
        default=None,
        help="lock file (default <dest-base>/.provenance/lock); use a local disk when the "
        "destination's file system refuses flock",
    )
    parser.add_argument(
        "--lock-wait",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="wait up to SECONDS for a running export or gc to finish (default: fail at "
        "once with exit code 75)",
    )
