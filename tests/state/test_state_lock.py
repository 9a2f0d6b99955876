"""The run lock: exclusion in one process and across processes, waiting, messages."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shrinkwrap_async.exitcodes import ExitCode, LockedError
from shrinkwrap_async.state.lock import RunLock, default_lock_path


def test_default_location(tmp_path: Path) -> None:
    assert default_lock_path(tmp_path) == tmp_path / ".provenance" / "lock"
    lock = RunLock.for_destination(tmp_path, lock_file=tmp_path / "elsewhere.lock")
    assert lock.path == tmp_path / "elsewhere.lock"


async def test_second_holder_is_refused_with_holder_named(tmp_path: Path) -> None:
    first = RunLock.for_destination(tmp_path)
    async with first:
        assert first.held
        holder = first.read_holder()
        assert holder is not None and f"pid={os.getpid()}" in holder and "started=" in holder
        second = RunLock.for_destination(tmp_path)
        with pytest.raises(LockedError) as refused:
            await second.acquire()
        assert refused.value.exit_code == ExitCode.LOCKED == 75
        assert f"pid={os.getpid()}" in str(refused.value)
        assert not second.held
    assert not first.held
    # Released: the next one gets it, and the holder line was cleared on release.
    async with RunLock.for_destination(tmp_path) as third:
        assert third.held


async def test_waiting_holder_gets_the_lock_after_release(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "lock")
    await first.acquire()
    waiter = RunLock(tmp_path / "lock", wait=30)
    task = asyncio.create_task(waiter.acquire())
    await asyncio.sleep(0.2)
    assert not task.done()  # still waiting while the first holds it
    first.release()
    await task  # completes because the first released, long before the 30 s limit
    assert waiter.held
    waiter.release()


def test_sync_context_manager(tmp_path: Path) -> None:
    with RunLock(tmp_path / "lock") as lock:
        assert lock.held
        assert not RunLock(tmp_path / "lock").try_acquire()
    assert RunLock(tmp_path / "lock").try_acquire()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from shrinkwrap_async.state.lock import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire_sync()
    print("held", flush=True)
    sys.stdin.readline()  # hold until told to go
    lock.release()
    """
)


def start_holder(path: Path) -> subprocess.Popen[str]:
    """A child process holding the lock at ``path`` (returned once it holds it); it
    releases the lock and exits when a line is written to its stdin."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
    except BaseException:
        holder.kill()
        holder.wait()
        raise
    return holder


def test_lock_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = start_holder(path)
    try:
        assert holder.stdin is not None
        other = RunLock(path)
        with pytest.raises(LockedError, match=f"pid={holder.pid}"):
            other.acquire_sync()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with RunLock(path) as lock:
        assert lock.held


def test_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = start_holder(path)
    assert not RunLock(path).try_acquire()
    holder.kill()
    holder.wait()
    # The kernel released the flock with the process; the stale holder line does not matter.
    waiter = RunLock(path, wait=30)
    waiter.acquire_sync()
    assert waiter.held
    waiter.release()


def test_unwritable_lock_location_is_a_storage_error(tmp_path: Path) -> None:
    """A destination that cannot be made is named as such (another lock file would not
    help); a lock file that cannot be opened suggests --lock-file."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    from shrinkwrap_async.exitcodes import StorageError

    with pytest.raises(StorageError) as below_a_file:
        RunLock.for_destination(blocker / "dest").try_acquire()
    message = str(below_a_file.value)
    assert message.startswith(f"cannot create the directory {blocker}/dest/.provenance")
    assert "--lock-file" not in message
    (tmp_path / "lock").mkdir()
    with pytest.raises(StorageError, match="--lock-file"):
        RunLock(tmp_path / "lock").try_acquire()


def test_file_system_refusing_flock_is_exit_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for a Lustre/NFS mount without flock: the kernel answers ENOLCK."""
    import errno
    import fcntl

    from shrinkwrap_async.exitcodes import ExitCode, StorageError

    def refuse(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(StorageError, match="--lock-file") as refused:
        RunLock(tmp_path / "lock").try_acquire()
    assert refused.value.exit_code == ExitCode.STORAGE == 5


async def test_waiting_is_logged_as_an_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO)
    with RunLock(tmp_path / "lock"), pytest.raises(LockedError, match="after waiting"):
        await RunLock(tmp_path / "lock", wait=0.2).acquire()
    waiting = [r for r in caplog.records if getattr(r, "shrinkwrap_event", "") == "lock.waiting"]
    assert len(waiting) == 1 and f"pid={os.getpid()}" in waiting[0].getMessage()


def test_shared_holders_coexist_and_exclude_an_exclusive_one(tmp_path):
    path = tmp_path / "lock"
    first = RunLock(path, shared=True)
    second = RunLock(path, shared=True)
    exclusive = RunLock(path)
    assert first.try_acquire()
    assert second.try_acquire()
    assert not exclusive.try_acquire()
    first.release()
    second.release()
    assert exclusive.try_acquire()
    assert not RunLock(path, shared=True).try_acquire()
    exclusive.release()
