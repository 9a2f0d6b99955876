"""Running coroutines from the command line: uvloop when importable, clean signal exits."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory if it is installed and not disabled, else None (stock asyncio)."""
    if os.environ.get("SHRINKWRAP_ASYNC_NO_UVLOOP"):
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_async(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """Run ``main`` to completion on a fresh event loop."""
    factory = loop_factory() if use_uvloop else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def cpu_count() -> int:
    """Cores this process may use (affinity mask and cgroup quota), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


_PR_SET_NAME = 15
_PR_SET_PDEATHSIG = 1


def _prctl(option: int, value: int | bytes) -> None:
    """Linux's prctl(2) with one argument; nothing elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def die_with_parent(parent: int, signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent ends (Linux), so a
    parent killed outright leaves no child working on alone. False if ``parent`` is gone
    already (it may have died before this call)."""
    _prctl(_PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent


def set_process_name(name: str) -> None:
    """What ``ps -o comm``, ``top`` and /proc/PID/comm show (Linux keeps 15 bytes)."""
    _prctl(_PR_SET_NAME, name.encode()[:15])
