"""Running ``shrinkwrap-async`` from async tests: in this process, or as a child process.

In this process (:func:`run_cli`) the command runs in a worker thread, so that the test's
event loop, and the loopback servers on it, keep answering; its output goes to pytest's
``capsys``. A child process (:func:`run_cli_process`) is for what only a process shows:
signals, several exports at once, the bytes written to stdout.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async import cli
from shrinkwrap_async.testing.shared import write_client_config

__all__ = [
    "ProcessResult",
    "run_cli",
    "run_cli_process",
    "source_arguments",
    "start_cli_process",
]


async def run_cli(*argv: str) -> int:
    """``shrinkwrap-async ARGV`` in a worker thread of this process; its exit code."""
    return await asyncio.get_running_loop().run_in_executor(None, cli.main, list(argv))


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int
    stdout: bytes
    stderr: str  # decoded (undecodable bytes replaced): for messages in assertions


async def start_cli_process(*argv: str) -> asyncio.subprocess.Process:
    """``python -m shrinkwrap_async ARGV`` started in a child process: stdin empty, stdout
    and stderr piped (read them with ``communicate()``). For tests that signal the child."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shrinkwrap_async", *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_cli_process(*argv: str, timeout: float | None = None) -> ProcessResult:
    """``python -m shrinkwrap_async ARGV`` in a child process, to its end.

    ``timeout`` (seconds) bounds the wait; the child is killed when it runs out.
    """
    process = await start_cli_process(*argv)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    assert process.returncode is not None
    return ProcessResult(process.returncode, out, err.decode(errors="replace"))


def source_arguments(
    directory: Path, server_url: str, keys_dir: Path, fqrn: str, spec_text: str = "/*\n"
) -> list[str]:
    """``-r FQRN -f CONFIG -t SPEC``: the fixtures' client config (DIRECT, owners mapped to
    0; see :func:`~shrinkwrap_async.testing.shared.write_client_config`) and a spec file
    holding ``spec_text``, both written into ``directory``."""
    config = write_client_config(directory, server_url, keys_dir)
    spec = directory / "test.spec"
    spec.write_text(spec_text)
    return ["-r", fqrn, "-f", str(config), "-t", str(spec)]
