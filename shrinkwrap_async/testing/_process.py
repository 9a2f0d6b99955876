"""Helpers shared by the nginx and squid fixtures: free loopback ports, readiness, skips."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


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
