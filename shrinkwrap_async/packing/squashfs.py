"""SquashFS images of an export, through the standard tools.

The image root stands for /cvmfs: it holds ``<fqrn>/``, so that ``--bind image:/cvmfs``
(Apptainer: ``--bind image.sqfs:/cvmfs:image-src=/``) or ``mount image /cvmfs`` gives
``/cvmfs/<fqrn>/...``. Three ways to build it:

- ``stream``: our reproducible tar stream piped into ``mksquashfs - IMAGE -tar`` (squashfs-tools
  4.5.1 as shipped by Debian, and 4.6+) or into ``tar2sqfs`` (squashfs-tools-ng). The packer
  sees only ``PackEntry`` records, so the same path serves a future direct feed from the
  export pipeline.
- ``tree``: ``mksquashfs <dest>/<fqrn> IMAGE -keep-as-directory``, reading the tree itself
  (every xattr namespace it can read is stored; the tree root and marker keep their mtimes).
- ``auto``: ``stream`` when a tool that reads tar is installed, else ``tree``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shrinkwrap_async.exitcodes import StorageError, UsageError
from shrinkwrap_async.packing.entries import PackEntry
from shrinkwrap_async.packing.tar import TarWriter
from shrinkwrap_async.runtime import cpu_count

METHODS: tuple[str, ...] = ("auto", "stream", "tree")
MISSING_TOOLS = (
    "SquashFS output needs mksquashfs (Debian/Ubuntu: apt-get install squashfs-tools; "
    "RHEL: dnf install squashfs-tools) or tar2sqfs (squashfs-tools-ng)"
)


@dataclass(frozen=True)
class SquashfsOptions:
    """How to build the image. ``mtime`` is the superblock time and the image root's mtime."""

    mtime: int = 0
    all_root: bool = False
    processors: int | None = None
    compressor: str | None = None  # mksquashfs -comp / tar2sqfs -c; tool default if None
    extra_args: Sequence[str] = field(default_factory=tuple)

    def processor_count(self) -> int:
        return self.processors or cpu_count()


@functools.cache
def _mksquashfs_reads_tar(binary: str) -> bool:
    try:
        result = subprocess.run(
            [binary, "-help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    help_text = result.stdout + result.stderr
    return any(line.split()[:1] == ["-tar"] for line in help_text.splitlines())


def choose_method(method: str) -> tuple[str, list[str]]:
    """(method, tool argv prefix) for ``method`` among METHODS, given the installed tools."""
    if method not in METHODS:
        raise UsageError(f"unknown SquashFS method {method!r} (use {', '.join(METHODS)})")
    mksquashfs = shutil.which("mksquashfs")
    tar2sqfs = shutil.which("tar2sqfs")
    if method in ("auto", "stream"):
        if mksquashfs and _mksquashfs_reads_tar(mksquashfs):
            return "stream", [mksquashfs]
        if tar2sqfs:
            return "stream", [tar2sqfs]
        if method == "stream":
            raise UsageError(
                "--squashfs-method stream needs mksquashfs >= 4.5.1 (reads tar with -tar) "
                "or tar2sqfs (squashfs-tools-ng)"
            )
    if mksquashfs:
        return "tree", [mksquashfs]
    raise UsageError(MISSING_TOOLS)


def mksquashfs_common_args(options: SquashfsOptions, *, reads_tar: bool) -> list[str]:
    """Options for reproducible images.

    With ``-tar``, mksquashfs 4.5.1 ignores ``-root-time``; the times then come from
    ``SOURCE_DATE_EPOCH`` (see ``mksquashfs_environment``) instead of ``-mkfs-time``.
    """
    times = (
        [] if reads_tar else ["-mkfs-time", str(options.mtime), "-root-time", str(options.mtime)]
    )
    args = [
        "-noappend",
        "-no-progress",
        "-quiet",
        "-xattrs",
        "-reproducible",
        *times,
        "-root-mode",
        "0755",
        "-root-uid",
        "0",
        "-root-gid",
        "0",
        "-processors",
        str(options.processor_count()),
    ]
    if options.all_root:
        args.append("-all-root")
    if options.compressor:
        args += ["-comp", options.compressor]
    return [*args, *options.extra_args]


def mksquashfs_environment(options: SquashfsOptions, newest_mtime: int) -> dict[str, str]:
    """The environment for ``mksquashfs -tar``, which ignores ``-root-time``.

    ``SOURCE_DATE_EPOCH`` then sets the superblock and image root times, and it also clamps
    every later file time to itself; so it is the newest of ``options.mtime`` and the newest
    entry, which leaves every file time as it is.
    """
    epoch = max(options.mtime, newest_mtime)
    return {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}


def tar2sqfs_args(options: SquashfsOptions) -> list[str]:
    args = [
        "--quiet",
        "--force",
        "--keep-time",
        "--defaults",
        f"uid=0,gid=0,mode=0755,mtime={options.mtime}",
        "--num-jobs",
        str(options.processor_count()),
    ]
    if options.compressor:
        args += ["--compressor", options.compressor]
    return [*args, *options.extra_args]


def _temporary_output(output: Path) -> Path:
    return output.with_name(f".{output.name}.tmp-{os.getpid()}")


def _run_checked(
    argv: list[str], stdin: int | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
    except OSError as error:
        raise UsageError(f"cannot run {argv[0]}: {error.strerror}") from error


def _fail(argv: list[str], returncode: int, stderr: bytes) -> StorageError:
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    detail = lines[-1] if lines else "no message"
    return StorageError(f"{Path(argv[0]).name} failed (exit {returncode}): {detail}")


def build_squashfs_from_tree(
    dest_base: Path, fqrn: str, output: Path, options: SquashfsOptions, method: str = "auto"
) -> list[str]:
    """Build ``output`` from ``<dest_base>/<fqrn>`` with the tree method. Returns the argv."""
    chosen, tool = choose_method("tree" if method == "tree" else method)
    if chosen != "tree":
        raise UsageError("internal: build_squashfs_from_tree called for a stream method")
    source = dest_base / fqrn
    if not source.is_dir():
        raise UsageError(f"no export of {fqrn} in {dest_base} (missing {source})")
    temporary = _temporary_output(output)
    argv = [*tool, str(source), str(temporary), "-keep-as-directory"]
    argv += mksquashfs_common_args(options, reads_tar=False)
    process = _run_checked(
        argv, env={k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    )
    _, stderr = process.communicate()
    if process.returncode != 0:
        temporary.unlink(missing_ok=True)
        raise _fail(argv, process.returncode, stderr)
    os.replace(temporary, output)
    return argv


def build_squashfs_from_entries(
    entries: Iterable[PackEntry],
    fqrn: str,
    output: Path,
    options: SquashfsOptions,
    newest_mtime: int,
) -> list[str]:
    """Build ``output`` by streaming ``entries`` as tar into a tool that reads tar.

    ``newest_mtime`` is an upper bound of the entries' mtimes (see ``mksquashfs_environment``).
    """
    _, tool = choose_method("stream")
    temporary = _temporary_output(output)
    env = None
    if Path(tool[0]).name == "tar2sqfs":
        argv = [*tool, *tar2sqfs_args(options), str(temporary)]
    else:
        argv = [*tool, "-", str(temporary), "-tar"]
        argv += mksquashfs_common_args(options, reads_tar=True)
        env = mksquashfs_environment(options, newest_mtime)
    process = _run_checked(argv, stdin=subprocess.PIPE, env=env)
    assert process.stdin is not None and process.stderr is not None
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(process.stderr, stderr_chunks), daemon=True)
    reader.start()
    try:
        writer = TarWriter(process.stdin, fqrn, gnu_long_links=True)
        writer.write_all(entries)
        writer.close()
        process.stdin.close()
    except BrokenPipeError:
        pass  # the tool stopped reading: its exit status and message tell why
    except BaseException:
        process.kill()
        process.wait()
        temporary.unlink(missing_ok=True)
        raise
    returncode = process.wait()
    reader.join()
    if returncode != 0:
        temporary.unlink(missing_ok=True)
        raise _fail(argv, returncode, b"".join(stderr_chunks))
    os.replace(temporary, output)
    return argv


def _drain(stream: IO[bytes], into: list[bytes]) -> None:
    for line in stream:
        into.append(line)
