"""A server binary run in the foreground on 127.0.0.1, for tests and benchmarks.

:class:`LoopbackDaemon` holds what the nginx and squid fixtures share: a private temporary
directory for the configuration, pid file and logs, a free loopback port, the launch, the
wait until the port answers, the stop and the context manager. A subclass names its binary
and writes its configuration in :meth:`LoopbackDaemon.prepare`, which returns the command.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

__all__ = [
    "BinaryMissing",
    "LoopbackDaemon",
    "free_loopback_port",
    "require_binary",
    "skip_if_missing",
    "stop_process",
    "wait_for_port",
]


class BinaryMissing(RuntimeError):
    """The server binary is not installed; tests skip, scripts report it."""


def require_binary(path: str) -> str:
    if Path(path).is_file():
        return path
    found = shutil.which(Path(path).name)
    if found is None:
        raise BinaryMissing(f"{path} is not installed")
    return found


def skip_if_missing(path: str) -> str:
    """For tests: the binary's path, or ``pytest.skip`` when it is absent."""
    try:
        return require_binary(path)
    except BinaryMissing as error:
        import pytest

        pytest.skip(str(error))
        raise  # unreachable; keeps type checkers happy


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"server exited with {process.returncode}: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within {timeout}s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class LoopbackDaemon:
    """``with Daemon(...) as server: server.url``; leaving the block stops it.

    Subclasses set :attr:`binary`, :attr:`log_name` (where the daemon reports why it did not
    start, relative to its directory) and :attr:`start_timeout`, and implement
    :meth:`prepare`.
    """

    binary: ClassVar[str]
    log_name: ClassVar[str]
    start_timeout: ClassVar[float]

    def __init__(self) -> None:
        self.port = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def directory(self) -> Path | None:
        """The private directory of the running daemon (None when stopped)."""
        return Path(self._tmp.name) if self._tmp is not None else None

    def prepare(self, binary: str, directory: Path) -> list[str]:
        """Write the configuration into ``directory`` for :attr:`port`; the command to run."""
        raise NotImplementedError

    def start(self) -> Self:
        binary = require_binary(self.binary)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{Path(self.binary).name}-")
        directory = Path(self._tmp.name)
        self.port = free_loopback_port()
        try:
            self._process = subprocess.Popen(
                self.prepare(binary, directory),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=directory,
            )
            wait_for_port(
                self.port, self._process, directory / self.log_name, timeout=self.start_timeout
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
