#!/usr/bin/env python3
"""End-to-end export benchmark: full export, refreshes and the machine's ceilings.

    scripts/bench [--scale reference|small|medium|large|large-small[-deep]] [-j 16,64]
                  [--workers 1,2] [--squid]

Generates the synthetic repository of the scale once (cached under ``.bench-cache/``, with
a second revision in which 1 % of the files changed), serves it with nginx on 127.0.0.1
(optionally through Squid), and measures, in one run:

1. full export into a destination of its own, per ``-j`` and ``--workers``: wall, files/s,
   MB/s (logical and transferred), CPU seconds, HTTP requests, and peak RSS: of the export
   process (``wait4``), of each process of its tree (``VmHWM``) and of the tree's sum
   (sampled from ``/proc``);
2. no-change refresh (same destination, same revision): wall and requests;
3. refresh after the 1 % change: wall, requests, bytes received;
4. ceilings over the same objects: ``curl --parallel --parallel-max 64`` to /dev/null, and a
   pure inflate+hash pass in one Python process; export throughput as a ratio of each;
   and each export against a curl pass that opens its round of ``--repeat`` (the machine's
   speed drifts within a run). For the 1 % change: curl of only the changed objects, curl
   of everything a client fetches for the change (root files, changed catalogs, changed
   objects), and a bare start of the command (``import shrinkwrap_async.cli``).

Destinations are deleted after the last export of the run, never right before a timed
export (ext4 without a journal creates files slowly for minutes after a mass deletion;
docs/performance.md). When the disk runs short, old destinations are deleted and the next
export waits ``--settle`` seconds; the JSON records it.

Prints a table beside the real cvmfs_shrinkwrap's figures (reference scale) and writes JSON
to ``bench-results/``. Loops are bounded; everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shrinkwrap_async.pipeline.shard import auto_workers
from shrinkwrap_async.pipeline.shard_process import SHARD_NAME_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".bench-cache"
DEFAULT_RESULTS = REPO_ROOT / "bench-results"
SCALES = ("reference", "small", "medium", "large", "large-small", "large-small-deep")
CHANGE_FRACTION = 0.01
CHANGED_MTIME_OFFSET = 86_400
EXPORT_TIMEOUT = 3600.0  # seconds; a bound, not an expectation
CURL_PARALLEL = 64
# Object suffixes that are file content (none = whole file, P = chunk); catalogs (C),
# certificates (X), histories (H), metainfo (M) are not part of the ceilings' object set.
CONTENT_SUFFIXES = ("", "P")
CATALOG_SUFFIXES = ("C",)
ROOT_FILES = (".cvmfspublished", ".cvmfswhitelist")  # what a client fetches first
RSS_SAMPLE_PERIOD = 0.05  # seconds between /proc samples of the export's process tree
RECENT_DELETION_SECONDS = 360  # ext4 without a journal: slow creates this long after
DELETION_MARKER = "last-deletion.json"  # in the cache directory: when and how much
MIN_FREE_BYTES = 2 << 30  # keep this much free beside the destinations of a run

# The real cvmfs_shrinkwrap 2.11.5 on the reference repository (benchmark issue), 2 cores,
# nginx on 127.0.0.1, fresh destination each run.
REAL_SHRINKWRAP = {
    "files": 20_000,
    "objects": 17_978,
    "export_seconds": {4: 18.2, 16: 14.1, 64: 14.9},
    "best_files_per_second": 1_417,
    "best_mb_per_second": 45,
    "max_rss_mb": 31,
    "unchanged_rerun_seconds": "0.8-1.1",
    "curl_parallel_64_seconds": 1.55,
    "curl_to_files_sync_seconds": 3.5,
    "python_zlib_decompress_seconds": 2.7,
    "sha1_seconds": 0.23,
}


# ---------------------------------------------------------------------------------------
# Repositories


@dataclass(frozen=True)
class BenchRepository:
    """A generated repository: revision 1 in ``base``, a 1 %-changed revision in ``changed``.

    Both are publisher output directories (``<dir>/cvmfs/<fqrn>``, ``<dir>/keys``) below
    ``root``, which nginx serves; ``changed`` shares unchanged objects with ``base`` by
    hard links.
    """

    root: Path
    fqrn: str

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def changed(self) -> Path:
        return self.root / "changed"

    def public_key(self) -> Path:
        return self.base / "keys" / f"{self.fqrn}.pub"

    def server_url(self, http_base: str, revision: str) -> str:
        return f"{http_base}/{revision}/cvmfs/{self.fqrn}"

    def data_dir(self, revision: str) -> Path:
        return self.root / revision / "cvmfs" / self.fqrn / "data"


def _changed_tree(tree: Any, seed: int, fraction: float) -> int:
    """Give ``fraction`` of the regular files (not markers, not hard links) new content."""
    from shrinkwrap_async.testing.publish import walk_files
    from shrinkwrap_async.testing.synthetic import GeneratedContent

    candidates = [
        node
        for node in walk_files(tree)
        if node.name != ".cvmfscatalog" and node.inode is None and node.size > 0
    ]
    rng = random.Random(f"change-{seed}")
    chosen = rng.sample(candidates, max(1, round(len(candidates) * fraction)))
    for number, node in enumerate(chosen):
        kind = getattr(node.content, "kind", "words")
        node.content = GeneratedContent(seed + 7_919, 30_000_000 + number, node.size, kind)
        node.mtime += CHANGED_MTIME_OFFSET
    return len(chosen)


def build_tree(scale: Any, seed: int) -> Any:
    """The publisher's tree for ``scale``: a profile name or a ``synthetic.Profile``."""
    from shrinkwrap_async.testing import synthetic

    if isinstance(scale, str):
        return synthetic.build_profile(scale, seed)
    return synthetic.build_tree(scale, seed)


def ensure_repository(
    cache: Path,
    scale: Any,
    seed: int,
    *,
    name: str | None = None,
    changed: bool = True,
    log: Any = print,
) -> BenchRepository:
    """Generate (once) revision 1 and, if ``changed``, the 1 %-changed revision of ``scale``."""
    from shrinkwrap_async.testing.publish import Publisher, PublishOptions

    label = name or (scale if isinstance(scale, str) else "custom")
    repo = BenchRepository(cache / f"{label}-seed{seed}", f"{label}.bench.local")
    repo.root.mkdir(parents=True, exist_ok=True)
    base_done, changed_done = repo.root / "base.done", repo.root / "changed.done"
    workers = None if isinstance(scale, str) else 1
    if not base_done.exists():
        shutil.rmtree(repo.base, ignore_errors=True)
        log(f"generating {label} (seed {seed}) in {repo.base} ...")
        result = Publisher(repo.base, repo.fqrn, PublishOptions(workers=workers)).publish(
            build_tree(scale, seed)
        )
        log(f"  revision {result.revision}: {result.files} files in {result.seconds:.1f} s")
        base_done.touch()
    if changed and not changed_done.exists():
        shutil.rmtree(repo.changed, ignore_errors=True)
        # Hard-linked copy: the publisher replaces files by rename, never in place.
        subprocess.run(["cp", "-al", str(repo.base), str(repo.changed)], check=True)
        tree = build_tree(scale, seed)
        count = _changed_tree(tree, seed, CHANGE_FRACTION)
        log(f"republishing {label} with {count} files changed ...")
        result = Publisher(repo.changed, repo.fqrn, PublishOptions(workers=workers)).publish(tree)
        log(f"  revision {result.revision} in {result.seconds:.1f} s")
        changed_done.touch()
    return repo


def _object_entries(
    data_dir: Path, suffixes: tuple[str, ...], only_new: bool
) -> Iterator[os.DirEntry[str]]:
    """The committed objects below ``data_dir`` whose suffix is one of ``suffixes``
    (``""`` for whole files), fan-out directories in order; ``only_new``: those not shared
    (by hard link) with the other revision."""
    for sub in sorted(data_dir.iterdir()):
        if not sub.is_dir() or len(sub.name) != 2:
            continue
        for entry in os.scandir(sub):
            last = entry.name[-1:]
            suffix = last if last in ("C", "X", "H", "M", "P") else ""
            if entry.name.endswith(".tmp") or suffix not in suffixes:
                continue
            if only_new and entry.stat().st_nlink > 1:
                continue
            yield entry


def content_objects(
    data_dir: Path, *, only_new: bool = False, suffixes: tuple[str, ...] = CONTENT_SUFFIXES
) -> list[Path]:
    """Objects with one of ``suffixes`` below ``data_dir`` (default: whole files and chunks),
    sorted."""
    return sorted(Path(entry.path) for entry in _object_entries(data_dir, suffixes, only_new))


def count_objects(data_dir: Path, *, only_new: bool = False) -> tuple[int, int]:
    """How many content objects :func:`content_objects` would list, and their bytes,
    without holding their names (the harness's memory shows in the export's ru_maxrss)."""
    count = size = 0
    for entry in _object_entries(data_dir, CONTENT_SUFFIXES, only_new):
        count += 1
        size += entry.stat().st_size
    return count, size


# ---------------------------------------------------------------------------------------
# Servers


@contextlib.contextmanager
def serve(docroot: Path, *, squid: bool) -> Iterator[tuple[str, str]]:
    """``(origin_url, proxy)``: nginx on 127.0.0.1 and the CVMFS_HTTP_PROXY value."""
    from shrinkwrap_async.testing.nginx import NginxServer

    with NginxServer(docroot) as nginx:
        if not squid:
            yield nginx.url, "DIRECT"
            return
        from shrinkwrap_async.testing import squid as squid_module

        with squid_module.SquidProxy() as proxy:
            yield nginx.url, proxy.url


# ---------------------------------------------------------------------------------------
# Measurements


@dataclass
class ProcessRun:
    """One subprocess: wall seconds, CPU seconds, peak RSS (MB) and its output.

    ``max_rss_mb`` is the process's own ``ru_maxrss``; ``tree`` is what the sampler saw
    of the process and its descendants (see :class:`TreeMemorySampler`).
    """

    returncode: int
    wall: float
    cpu_user: float
    cpu_sys: float
    max_rss_mb: float
    stdout: str
    stderr: str
    tree: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


def _status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of ``pid`` from ``/proc``; empty once it has gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            text = handle.read()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        if line.startswith((b"VmRSS:", b"VmHWM:")):
            key, value = line.split(b":", 1)
            found[key.decode()] = int(value.split()[0])
    return found


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _command(pid: int) -> str | None:
    """The command line of ``pid`` (arguments joined by spaces), or None once it has gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None


def _is_forked_shard(pid: int) -> bool:
    """A shard of ``--workers``, forked by the export (named, not exec'd: shard_process)."""
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().startswith(SHARD_NAME_PREFIX)
    except OSError:
        return False


def _role(pid: int, root: int) -> str:
    """A short name for a process of the export's tree."""
    if pid == root:
        return "export"
    if _is_forked_shard(pid):
        return "shard export"
    command = _command(pid)
    if command is None:
        return "?"
    if "resource_tracker" in command:
        return "resource tracker"
    if "multiprocessing" in command or "spawn_main" in command:
        return "object worker"
    if "shrinkwrap_async" in command:
        return "shard export"
    return command.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


class TreeMemorySampler:
    """Samples the RSS of a process and all its descendants from ``/proc``.

    Records the largest sum of ``VmRSS`` over the tree seen at one sample (a lower bound
    of the true simultaneous peak: a short peak between samples is missed) and, for each
    process, its last ``VmHWM`` (the kernel's own peak of that process, exact). The sum of
    the ``VmHWM`` values is an upper bound: the peaks need not coincide.
    """

    def __init__(self, root: int, period: float = RSS_SAMPLE_PERIOD) -> None:
        self.root = root
        self.period = period
        self.peak_sum_kib = 0
        self.samples = 0
        self.processes: dict[int, dict[str, Any]] = {}
        self._root_command: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        processes = sorted(self.processes.values(), key=lambda p: p["pid"])
        return {
            "peak_rss_sum_mb": round(self.peak_sum_kib / 1024, 1),
            "hwm_sum_mb": round(sum(p["hwm_kib"] for p in processes) / 1024, 1),
            "samples": self.samples,
            "processes": [
                {
                    "pid": p["pid"],
                    "role": p["role"],
                    "hwm_mb": round(p["hwm_kib"] / 1024, 1),
                    "max_sampled_rss_mb": round(p["rss_kib"] / 1024, 1),
                }
                for p in processes
            ],
        }

    def sample(self) -> None:
        total = 0
        pending = [self.root]
        seen = 0
        while pending and seen < 4096:  # bounded: a tree of an export is small
            pid = pending.pop()
            seen += 1
            status = _status_kib(pid)
            if not status:
                continue
            if pid != self.root and self._not_yet_started(pid):
                pending.extend(_children(pid))
                continue
            record = self.processes.get(pid)
            if record is None:
                record = {"pid": pid, "role": _role(pid, self.root), "hwm_kib": 0, "rss_kib": 0}
                self.processes[pid] = record
            rss = status.get("VmRSS", 0)
            total += rss
            record["rss_kib"] = max(record["rss_kib"], rss)
            record["hwm_kib"] = max(record["hwm_kib"], status.get("VmHWM", 0))
            pending.extend(_children(pid))
        self.samples += 1
        self.peak_sum_kib = max(self.peak_sum_kib, total)

    def _not_yet_started(self, pid: int) -> bool:
        """A child forked by the export that has not exec'd its own program yet: it shares
        the export's pages (copy on write) and reports them as its own RSS and VmHWM, so it
        is neither counted nor named until it runs its program. A forked shard of
        ``--workers`` never execs; it is counted once it has named itself, pages it still
        shares with the export included (so the sum is an upper bound there)."""
        if _is_forked_shard(pid):
            return False
        if self._root_command is None:
            self._root_command = _command(self.root)
        command = _command(pid)
        return command is None or command == self._root_command

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period)


def run_measured(
    argv: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> ProcessRun:
    """Run ``argv``: its own rusage with ``wait4`` (peak RSS, user+sys of it and its
    waited-for children) and the RSS of its process tree sampled from ``/proc``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        sampler = TreeMemorySampler(process.pid)
        sampler.start()
        deadline = started + timeout
        try:
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.01)
        finally:
            tree = sampler.stop()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ProcessRun(
            returncode=process.returncode,
            wall=wall,
            cpu_user=usage.ru_utime,
            cpu_sys=usage.ru_stime,
            max_rss_mb=usage.ru_maxrss / 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            tree=tree,
        )


@dataclass
class ExportSetup:
    """Config files, spec and directories for export runs against one repository."""

    repo: BenchRepository
    work: Path
    http_base: str
    proxy: str

    def config(self, revision: str, cache: Path) -> Path:
        path = self.work / f"{revision}-{cache.name}.conf"
        path.write_text(
            f"CVMFS_SERVER_URL={self.repo.server_url(self.http_base, revision)}\n"
            f"CVMFS_HTTP_PROXY={self.proxy}\n"
            f"CVMFS_PUBLIC_KEY={self.repo.public_key()}\n"
            f"CVMFS_CACHE_BASE={cache}\n"
            "CVMFS_SHARED_CACHE=no\nCVMFS_CLAIM_OWNERSHIP=yes\n"
        )
        return path

    def spec(self) -> Path:
        path = self.work / "everything.spec"
        path.write_text("/*\n")
        return path

    def export_argv(
        self, config: Path, dest: Path, jobs: int, workers: int | None = None
    ) -> list[str]:
        """The export command; ``--workers`` only when given (else the command's default,
        one shard per two usable cores)."""
        return [
            sys.executable,
            "-m",
            "shrinkwrap_async",
            "export",
            "-r",
            self.repo.fqrn,
            "-f",
            str(config),
            "-t",
            str(self.spec()),
            "-x",
            str(dest),
            "-j",
            str(jobs),
            *([] if workers is None else ["--workers", str(workers)]),
            "--json",
            "--no-progress",
        ]


def export_once(
    setup: ExportSetup, config: Path, dest: Path, jobs: int, workers: int | None = None
) -> dict[str, Any]:
    """One export run: the process figures merged with its ``--json`` summary."""
    run = run_measured(setup.export_argv(config, dest, jobs, workers), timeout=EXPORT_TIMEOUT)
    result: dict[str, Any] = {
        "exit": run.returncode,
        "wall": round(run.wall, 3),
        "cpu_user": round(run.cpu_user, 2),
        "cpu_sys": round(run.cpu_sys, 2),
        "cpu": round(run.cpu, 2),
        # ru_maxrss from wait4: at least the harness's own RSS when it started the export
        # (exec keeps the high-water mark of the forked copy), so only a comparison with
        # earlier rounds; the sampled figures below are the export's own.
        "max_rss_mb": round(run.max_rss_mb, 1),
        "export_hwm_mb": next(
            (p["hwm_mb"] for p in run.tree.get("processes", []) if p["role"] == "export"), None
        ),
        "rss_tree": run.tree,
        "peak_rss_sum_mb": run.tree.get("peak_rss_sum_mb"),
    }
    try:
        summary = json.loads(run.stdout)
    except json.JSONDecodeError:
        summary = None
    if summary is None or run.returncode != 0:
        result["error"] = (run.stderr.strip().splitlines() or ["no output"])[-1][:500]
    if summary is not None:
        for key in ("files", "bytes", "data_files", "requests", "retries", "bytes_received"):
            result[key] = summary.get(key)
        result["failures"] = len(summary.get("failures", []))
        result["export_elapsed"] = summary.get("elapsed")
        files, logical = summary.get("files") or 0, summary.get("bytes") or 0
        received = summary.get("bytes_received") or 0
        result["files_per_s"] = round(files / run.wall, 1)
        result["mb_per_s_logical"] = round(logical / run.wall / 1e6, 1)
        result["mb_per_s_transferred"] = round(received / run.wall / 1e6, 1)
    return result


def _process_peaks(run: dict[str, Any]) -> str:
    """``export 80 + object worker 44`` from a run's ``rss_tree`` (VmHWM per process)."""
    processes = (run.get("rss_tree") or {}).get("processes") or []
    return " + ".join(f"{p['role']} {p['hwm_mb']:.0f}" for p in processes) or "-"


class Destinations:
    """Export destinations of one benchmark run: each full export gets its own, and all
    are deleted after the run (:meth:`delete_all`), not before a timed export.

    Mass deletion on ext4 without a journal makes file creation slow for 1-6 minutes, so
    a deletion is recorded in ``marker`` and, when the disk runs short in the middle of a
    run, the next export waits ``settle`` seconds after it (and says so in its result).
    """

    def __init__(self, work: Path, marker: Path, *, needed_bytes: int, settle: float) -> None:
        self.work = work
        self.marker = marker
        self.needed_bytes = needed_bytes
        self.settle = settle
        self.kept: list[Path] = []
        self._count = 0

    def new(self, label: str) -> tuple[Path, dict[str, Any]]:
        """A fresh run directory, and notes for the run's result (a deletion it follows)."""
        notes: dict[str, Any] = {}
        free = shutil.disk_usage(self.work).free
        if self.kept and free < self.needed_bytes + MIN_FREE_BYTES:
            deleted = self.delete_all()
            notes["followed_deletion"] = {"runs_deleted": deleted, "settled_s": self.settle}
            time.sleep(self.settle)
        self._count += 1
        run_dir = self.work / f"{self._count:02d}-{label}"
        run_dir.mkdir(parents=True)
        self.kept.append(run_dir)
        return run_dir, notes

    def delete_all(self) -> int:
        deleted = len(self.kept)
        for run_dir in self.kept:
            shutil.rmtree(run_dir, ignore_errors=True)
        self.kept = []
        if deleted:
            record_deletion(self.marker, deleted)
        return deleted


def file_system_type(path: Path) -> str:
    """The type of the file system holding ``path`` (``/proc/mounts``: longest mount point)."""
    target = str(path.resolve())
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) > len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    return kind


def record_deletion(marker: Path, runs: int) -> None:
    marker.write_text(json.dumps({"time": time.time(), "runs": runs}) + "\n")


def recent_deletion(marker: Path) -> float | None:
    """Seconds since the benchmark last deleted destinations, if under 6 minutes."""
    try:
        then = json.loads(marker.read_text())["time"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age = time.time() - float(then)
    return age if 0 <= age < RECENT_DELETION_SECONDS else None


@dataclass
class Variant:
    """One ``(-j, --workers)`` case: its full exports so far and the last destination."""

    jobs: int
    workers: int | None
    fulls: list[dict[str, Any]] = field(default_factory=list)
    last_run: Path | None = None  # holds ``dest`` and ``cache`` of the latest full export

    @property
    def label(self) -> str:
        return f"j{self.jobs}" + ("" if self.workers is None else f"-w{self.workers}")


def measure_full(setup: ExportSetup, variant: Variant, destinations: Destinations) -> None:
    """One full export of ``variant`` into a destination of its own (nothing is deleted
    here, see :class:`Destinations`)."""
    run_dir, notes = destinations.new(variant.label)
    variant.last_run = run_dir
    config = setup.config("base", run_dir / "cache")
    run = export_once(setup, config, run_dir / "dest", variant.jobs, variant.workers)
    variant.fulls.append({**run, **notes})


def variant_outcome(setup: ExportSetup, variant: Variant, *, refresh: bool) -> dict[str, Any]:
    """The fastest full export of ``variant`` (all walls kept), then the two refreshes into
    its last destination."""
    shown = f"default ({auto_workers()})" if variant.workers is None else variant.workers
    outcome: dict[str, Any] = {"jobs": variant.jobs, "workers": shown}
    outcome["full"] = min(variant.fulls, key=lambda run: (run["exit"] != 0, run["wall"]))
    outcome["full"]["walls"] = [run["wall"] for run in variant.fulls]
    outcome["full"]["ratios_to_round_curl"] = [  # each export against its round's curl pass
        round(run["curl_round_seconds"] / run["wall"], 3)
        for run in variant.fulls
        if run.get("curl_round_seconds") and run["wall"] and run["exit"] == 0
    ]
    if refresh:
        assert variant.last_run is not None
        dest, cache = variant.last_run / "dest", variant.last_run / "cache"
        jobs, workers = variant.jobs, variant.workers
        outcome["no_change"] = export_once(setup, setup.config("base", cache), dest, jobs, workers)
        outcome["change_1pct"] = export_once(
            setup, setup.config("changed", cache), dest, jobs, workers
        )
    return outcome


def python_start_seconds(runs: int) -> float:
    """Best wall of a bare ``python3 -c 'import shrinkwrap_async.cli'`` (the command's
    fixed start-up cost, before it sends a request)."""
    argv = [sys.executable, "-c", "import shrinkwrap_async.cli"]

    def once() -> float:
        started = time.perf_counter()
        subprocess.run(argv, check=True, timeout=120)
        return time.perf_counter() - started

    return best_of(runs, once)


def profile_export(
    setup: ExportSetup, jobs: int, tool: str, out_dir: Path, destinations: Destinations
) -> Path:
    """One more full export under ``pyinstrument`` or ``py-spy``; the report's path.

    The export runs in one process (``--workers 1``), so that the profile is the pipeline's
    and not a parent waiting for its shards. pyinstrument samples the event-loop thread
    (asyncio-aware, text tree); py-spy samples every thread, including the inflate and tree
    executors (collapsed stacks, ``--threads``).
    """
    run_dir, _ = destinations.new(f"profile-j{jobs}")
    config = setup.config("base", run_dir / "cache")
    argv = setup.export_argv(config, run_dir / "dest", jobs, workers=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if tool == "pyinstrument":
        report = out_dir / f"profile-pyinstrument-j{jobs}-{stamp}.txt"
        command = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(report)]
        command += ["-m", *argv[2:]]
    else:
        report = out_dir / f"profile-py-spy-j{jobs}-{stamp}.txt"
        command = ["py-spy", "record", "-f", "raw", "-r", "250", "--threads", "-o", str(report)]
        command += ["--", *argv]
    done = subprocess.run(command, capture_output=True, text=True, timeout=EXPORT_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return report


def curl_ceiling(
    objects: list[Path],
    docroot: Path,
    http_base: str,
    work: Path,
    proxy: str = "DIRECT",
    *,
    label: str = "objects",
) -> float:
    """Seconds for ``curl --parallel --parallel-max 64`` to fetch ``objects`` to /dev/null.

    Through ``proxy`` when it is not DIRECT, so that the ceiling takes the export's path.
    The list of URLs stays in ``work`` (:func:`curl_listing`) for :func:`time_curl`.
    """
    listing = curl_listing(work, label)
    with listing.open("w") as handle:
        for path in objects:
            relative = path.relative_to(docroot).as_posix()
            handle.write(f'url = "{http_base}/{relative}"\noutput = "/dev/null"\n')
    return time_curl(listing, proxy)


def curl_listing(work: Path, label: str) -> Path:
    return work / f"curl-{label}.txt"


def time_curl(listing: Path, proxy: str = "DIRECT") -> float:
    """Seconds for curl to fetch the URLs of ``listing`` (a ``-K`` file) to /dev/null."""
    argv = ["curl", "--parallel", "--parallel-max", str(CURL_PARALLEL), "--no-progress-meter"]
    argv += ["--fail", "-K", str(listing)]
    if proxy != "DIRECT":
        argv += ["--proxy", proxy]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=EXPORT_TIMEOUT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"curl exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def inflate_hash_ceiling(objects: list[Path]) -> dict[str, Any]:
    """One Python process: SHA-1 of each stored object and its inflation.

    The inflation is timed with the export's backend (``shrinkwrap_async.inflate``: ISA-L
    where python-isal is installed), which the ratio uses, and with the standard ``zlib``
    module, the figure the real tool's measurements were given beside. Reading the files
    is not timed (they are in the page cache after the curl pass anyway).
    """
    from shrinkwrap_async import inflate as backend

    inflate = digest = standard = 0.0
    logical = 0
    for path in objects:
        blob = path.read_bytes()
        started = time.perf_counter()
        hashlib.sha1(blob).digest()
        hashed = time.perf_counter()
        inflater = backend.decompressobj()
        logical += len(inflater.decompress(blob)) + len(inflater.flush())
        inflated = time.perf_counter()
        zlib.decompress(blob)
        standard += time.perf_counter() - inflated
        digest += hashed - started
        inflate += inflated - hashed
    return {
        "sha1_seconds": round(digest, 3),
        "inflate_seconds": round(inflate, 3),
        "inflate_backend": backend.BACKEND,
        "zlib_inflate_seconds": round(standard, 3),
        "inflate_hash_seconds": round(digest + inflate, 3),
        "logical_bytes": logical,
    }


def best_of(runs: int, measure: Any) -> float:
    return min(measure() for _ in range(max(1, runs)))


# ---------------------------------------------------------------------------------------
# The run


@dataclass
class BenchConfig:
    scale: Any = "reference"
    seed: int = 1
    jobs: list[int] = field(default_factory=lambda: [16, 64])  # export -j (requests in flight)
    workers: list[int | None] = field(default_factory=lambda: [None])  # export --workers
    squid: bool = False
    refresh: bool = True
    ceilings: bool = True
    ceiling_runs: int = 3
    repeat: int = 1  # full exports per (-j, --workers); the fastest is reported
    cache: Path = DEFAULT_CACHE
    results: Path = DEFAULT_RESULTS
    name: str | None = None
    profile: str | None = None  # "pyinstrument" or "py-spy": one extra profiled export
    settle: float = 60.0  # seconds to wait after deleting destinations in the middle of a run
    dest_base: Path | None = None  # where destinations go (default: the cache's file system)
    drop_caches: bool = False  # free the kernel's unused dentries and inodes (root)


def dentry_state() -> dict[str, int] | None:
    """The kernel's dentry count, how many of them are unused, and its inode count (Linux),
    else None.

    Millions of dentries and inodes left by earlier runs lengthen the kernel's hash chains
    (path look-ups, and ``insert_inode_locked`` for every file made): the reference export
    took 1.93 s against 1.82 s (medians of 8) after unused dentries were freed, and 2.26-2.50
    s against 1.91-2.13 s on ext4 once the inodes of other cached repositories went too. The
    figures carry the counts they were made at.
    """
    try:
        fields = Path("/proc/sys/fs/dentry-state").read_text().split()
        inodes = Path("/proc/sys/fs/inode-nr").read_text().split()
    except OSError:
        return None
    return {"dentries": int(fields[0]), "unused": int(fields[1]), "inodes": int(inodes[0])}


def drop_kernel_caches(cache: Path, keep: Path) -> int:
    """Free unused dentries and inodes (``vm.drop_caches = 2``; needs root), those of the
    other repositories in ``cache`` (all but ``keep``) included: their cached pages, which
    keep an inode, are evicted first (``POSIX_FADV_DONTNEED``). After a million-file
    benchmark two million such inodes stayed, and this VM's inode hash has 65,536 buckets
    (``ihash_entries`` on its kernel command line), so every inode an export makes walked
    chains of about 30. Dropping the whole page cache (``3``) would do it too, but then
    an ext4 destination reads its bitmaps and inode tables from the disk again: 2.8-3.1 s
    against 1.9-2.2 s. Returns the files evicted."""
    evicted = 0
    for directory, names, files in os.walk(cache):
        if Path(directory) == keep:
            names.clear()
            continue
        for name in files:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                evicted += 1
            finally:
                os.close(fd)
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("2\n")
    except OSError as error:
        raise SystemExit(f"scripts/bench: --drop-caches: {error.strerror} (needs root)") from None
    return evicted


def read_objects(data_dir: Path) -> int:
    """Read every file of ``data_dir`` once (bytes read), so that neither curl's first
    pass nor the first export reads the repository from the disk after caches were dropped
    (a million-file curl ceiling of one run took 30.7 s that way against 22.5 s)."""
    total = 0
    for directory, _, names in os.walk(data_dir):
        for name in names:
            with open(os.path.join(directory, name), "rb") as stream:
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
    return total


def measure_ceilings(
    config: BenchConfig, repo: BenchRepository, http_base: str, proxy: str, work: Path, log: Any
) -> dict[str, Any]:
    """curl over all content objects, over the 1 % change (objects only, and everything a
    client fetches for it), the bare start of the command, and inflate+hash."""
    base_objects = content_objects(repo.data_dir("base"))
    new_objects = content_objects(repo.data_dir("changed"), only_new=True)
    new_catalogs = content_objects(
        repo.data_dir("changed"), only_new=True, suffixes=CATALOG_SUFFIXES
    )
    root_files = [repo.changed / "cvmfs" / repo.fqrn / name for name in ROOT_FILES]
    client_fetch = root_files + new_catalogs + new_objects
    runs = config.ceiling_runs

    def curl(objects: list[Path], label: str) -> float:
        return round(
            best_of(
                runs,
                lambda: curl_ceiling(objects, repo.root, http_base, work, proxy, label=label),
            ),
            3,
        )

    ceilings: dict[str, Any] = {}
    log(f"ceiling: curl --parallel-max {CURL_PARALLEL}, {len(base_objects)} objects ...")
    ceilings["curl_seconds"] = curl(base_objects, "all")
    ceilings["curl_changed_seconds"] = curl(new_objects, "changed")
    ceilings["change_client_files"] = len(client_fetch)
    ceilings["change_catalogs"] = len(new_catalogs)
    ceilings["curl_change_client_seconds"] = curl(client_fetch, "client")
    ceilings["python_start_seconds"] = round(python_start_seconds(runs), 3)
    log("ceiling: inflate+hash in one Python process ...")
    passes = [inflate_hash_ceiling(base_objects) for _ in range(runs)]
    ceilings.update(min(passes, key=lambda p: p["inflate_hash_seconds"]))
    del base_objects, new_objects, new_catalogs, client_fetch  # the harness stays small
    return ceilings


def add_ratios(outcome: dict[str, Any], ceilings: dict[str, Any]) -> None:
    """Export throughput against the ceilings; the 1 % change against its references."""
    wall = outcome["full"]["wall"]
    if ceilings and wall:
        outcome["full"]["ratio_to_curl"] = round(ceilings["curl_seconds"] / wall, 3)
        outcome["full"]["ratio_to_inflate_hash"] = round(ceilings["inflate_hash_seconds"] / wall, 3)
    paired = outcome["full"].get("ratios_to_round_curl")
    if paired:
        outcome["full"]["ratio_to_round_curl_median"] = round(statistics.median(paired), 3)
    change = outcome.get("change_1pct")
    if not change or not ceilings.get("curl_changed_seconds"):
        return
    change["ratio_to_curl_changed"] = round(change["wall"] / ceilings["curl_changed_seconds"], 2)
    client = ceilings["curl_change_client_seconds"]
    change["ratio_to_curl_client"] = round(change["wall"] / client, 2)
    change["ratio_to_curl_client_and_start"] = round(
        change["wall"] / (client + ceilings["python_start_seconds"]), 2
    )


def run_benchmark(config: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Everything, as one JSON-able dict (also written to ``config.results``)."""
    need_changed = config.refresh or config.ceilings
    repo = ensure_repository(
        config.cache, config.scale, config.seed, name=config.name, changed=need_changed, log=log
    )
    # Counted without keeping a list: the harness's own memory shows in the export's
    # ru_maxrss (see ``export_once``), and a million paths would be hundreds of MB.
    object_count, stored_bytes = count_objects(repo.data_dir("base"))
    label = config.name or (config.scale if isinstance(config.scale, str) else "custom")
    dentries_at_start = dentry_state()
    if config.drop_caches:
        log("dropping the kernel's unused dentries and inodes (other repositories' too) ...")
        evicted = drop_kernel_caches(config.cache, repo.root)
        log(f"  {evicted:,} files of other repositories evicted; reading the objects again")
        for revision in ("base", "changed") if need_changed else ("base",):
            read_objects(repo.data_dir(revision))
        python_start_seconds(1)  # the interpreter and the exporter's modules, read back
    results: dict[str, Any] = {
        "scale": label,
        "seed": config.seed,
        "squid": config.squid,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": list(os.getloadavg()),
            "dentries_at_start": dentries_at_start,
            "caches_dropped": config.drop_caches,
            # what the measurements started from (after --drop-caches and the read-back)
            "dentries_measured_from": dentry_state(),
        },
        "repository": {
            "fqrn": repo.fqrn,
            "content_objects": object_count,
            "stored_bytes": stored_bytes,
        },
        "exports": [],
        "notes": [],
    }
    if need_changed:
        changed_count, _ = count_objects(repo.data_dir("changed"), only_new=True)
        results["repository"]["changed_objects"] = changed_count
    dest_parent = config.dest_base or config.cache
    dest_parent.mkdir(parents=True, exist_ok=True)
    results["destinations"] = {"path": str(dest_parent), "fs": file_system_type(dest_parent)}
    marker = dest_parent / DELETION_MARKER
    age = recent_deletion(marker)
    if age is not None and results["destinations"]["fs"] == "ext4":
        note = (
            f"destinations were deleted {age:.0f} s before this run: on ext4, creating "
            "files can be slow for up to 6 minutes after that"
        )
        log(f"note: {note}")
        results["notes"].append(note)
    with (
        tempfile.TemporaryDirectory(prefix="bench-", dir=config.cache) as scratch,
        tempfile.TemporaryDirectory(prefix="bench-dest-", dir=dest_parent) as dest_scratch,
        serve(repo.root, squid=config.squid) as (http_base, proxy),
    ):
        work = Path(scratch)
        setup = ExportSetup(repo, work, http_base, proxy)
        ceilings: dict[str, Any] = {}
        if config.ceilings:
            ceilings = measure_ceilings(config, repo, http_base, proxy, work, log)
            results["repository"]["logical_bytes"] = ceilings.pop("logical_bytes")
        results["ceilings"] = ceilings
        # A destination holds the logical bytes (inflated) plus its inodes' blocks.
        needed = results["repository"].get("logical_bytes") or 3 * stored_bytes
        destinations = Destinations(
            Path(dest_scratch),
            marker,
            needed_bytes=needed + 8192 * object_count,
            settle=config.settle,
        )
        try:
            # --repeat N runs the cases in turn, N rounds: a drift of the machine's speed
            # then touches every case alike.
            variants = [
                Variant(jobs, workers) for workers in config.workers for jobs in config.jobs
            ]
            for _ in range(max(1, config.repeat)):
                # A curl pass of all objects opens each round: every export is compared
                # with one made minutes, not a whole run, away from it.
                round_curl = None
                if config.ceilings:
                    log("curl pass of this round ...")
                    round_curl = round(time_curl(curl_listing(work, "all"), proxy), 3)
                    ceilings.setdefault("curl_round_seconds", []).append(round_curl)
                for variant in variants:
                    shown = "" if variant.workers is None else f" --workers {variant.workers}"
                    log(f"export -j {variant.jobs}{shown} ...")
                    measure_full(setup, variant, destinations)
                    if round_curl is not None:
                        variant.fulls[-1]["curl_round_seconds"] = round_curl
            for variant in variants:
                outcome = variant_outcome(setup, variant, refresh=config.refresh)
                add_ratios(outcome, ceilings)
                results["exports"].append(outcome)
            if config.profile:
                jobs = config.jobs[0]
                log(f"profiling one export -j {jobs} with {config.profile} ...")
                report = profile_export(setup, jobs, config.profile, config.results, destinations)
                results["profile_report"] = str(report)
        finally:
            log("deleting the destinations of this run ...")
            destinations.delete_all()
    results["host"]["load_avg_at_end"] = list(os.getloadavg())
    results["host"]["dentries_at_end"] = dentry_state()
    if label == "reference":
        results["real_cvmfs_shrinkwrap"] = REAL_SHRINKWRAP
    config.results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = config.results / f"{label}-{stamp}.json"
    out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    results["json_path"] = str(out)
    return results


# ---------------------------------------------------------------------------------------
# Output


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def dentries_line(host: dict[str, Any]) -> str:
    """The kernel's dentry counts the run started and ended with (older JSON has none)."""
    start, end = host.get("dentries_at_start"), host.get("dentries_at_end")
    if not start:
        return "kernel dentries: not recorded"

    def inodes(state: dict[str, int]) -> str:
        return f", {state['inodes']:,} inodes" if "inodes" in state else ""  # older JSON

    text = f"kernel dentries at start {start['dentries']:,} ({start['unused']:,} unused)"
    text += inodes(start)
    measured_from = host.get("dentries_measured_from")
    if host.get("caches_dropped") and measured_from:
        text += (
            f"; after --drop-caches and reading the repository back {measured_from['dentries']:,}"
            + inodes(measured_from)
        )
    if end:
        text += f"; at end {end['dentries']:,}" + inodes(end)
    return text


def format_table(results: dict[str, Any]) -> str:
    repo = results["repository"]
    lines = [
        f"scale {results['scale']}: {repo['content_objects']} content objects, "
        f"{repo['stored_bytes'] / 1e6:.0f} MB stored"
        + (f", {repo['logical_bytes'] / 1e6:.0f} MB logical" if "logical_bytes" in repo else "")
        + (
            f"; 1 % change = {repo['changed_objects']} new objects"
            if "changed_objects" in repo
            else ""
        )
        + ("; through Squid" if results["squid"] else "; nginx direct")
        + (
            f"; destinations on {results['destinations']['fs']}"
            if "destinations" in results
            else ""
        ),
        "load average (1 min) at start {:.1f}, at end {:.1f} on {} CPUs".format(
            results["host"]["load_avg_at_start"][0],
            results["host"].get("load_avg_at_end", [0.0])[0],
            results["host"]["cpus"],
        ),
        dentries_line(results["host"]),
        *(f"note: {note}" for note in results.get("notes", [])),
        "",
        "| case | -j | --workers | wall s | files/s | MB/s logical | MB/s transferred "
        "| peak RSS MB (all processes) | peak RSS MB per process | CPU s (user+sys) "
        "| requests | bytes received | vs curl | vs inflate+hash |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for outcome in results["exports"]:
        full = outcome["full"]
        jobs, workers = outcome["jobs"], outcome["workers"]
        lines.append(
            f"| full export | {jobs} | {workers} | {_fmt(full['wall'], '.2f')} "
            f"| {_fmt(full.get('files_per_s'), ',.0f')} | {_fmt(full.get('mb_per_s_logical'))} "
            f"| {_fmt(full.get('mb_per_s_transferred'))} "
            f"| {_fmt(full.get('peak_rss_sum_mb'), '.0f')} | {_process_peaks(full)} "
            f"| {full['cpu_user']:.1f}+{full['cpu_sys']:.1f} | {_fmt(full.get('requests'))} "
            f"| {_fmt(full.get('bytes_received'), ',')} | {_fmt(full.get('ratio_to_curl'))} "
            f"| {_fmt(full.get('ratio_to_inflate_hash'))} |"
        )
        for key, name in (("no_change", "no-change refresh"), ("change_1pct", "1 % change")):
            run = outcome.get(key)
            if run is None:
                continue
            ratios = ""
            if run.get("ratio_to_curl_changed") is not None:
                ratios = (
                    f"{run['ratio_to_curl_changed']}x curl(changed objects); "
                    f"{run['ratio_to_curl_client']}x curl(client fetch); "
                    f"{run['ratio_to_curl_client_and_start']}x curl(client fetch)+start"
                )
            lines.append(
                f"| {name} | {jobs} | {workers} | {_fmt(run['wall'], '.2f')} | | | "
                f"| {_fmt(run.get('peak_rss_sum_mb'), '.0f')} | {_process_peaks(run)} "
                f"| {run['cpu_user']:.1f}+{run['cpu_sys']:.1f} "
                f"| {_fmt(run.get('requests'))} | {_fmt(run.get('bytes_received'), ',')} "
                f"| {ratios} | |"
            )
    for outcome in results["exports"]:
        where = f"-j {outcome['jobs']} --workers {outcome['workers']}"
        walls = outcome["full"].get("walls", [])
        if len(walls) > 1:
            lines.append(f"{where} full export walls (s): {walls}")
        paired = outcome["full"].get("ratios_to_round_curl")
        if paired:
            lines.append(
                f"{where} full export against the curl pass of its round: median "
                f"{outcome['full']['ratio_to_round_curl_median']} ({min(paired)}-{max(paired)})"
            )
        if "followed_deletion" in outcome["full"]:
            lines.append(f"note: {where} full export followed a deletion of destinations")
        for key in ("full", "no_change", "change_1pct"):
            run = outcome.get(key)
            if run and ("error" in run or run.get("failures")):
                lines.append(
                    f"note: {where} {key}: exit {run['exit']}, "
                    f"{run.get('failures')} failures: {run.get('error', '')}"
                )
    ceilings = results.get("ceilings") or {}
    if ceilings:
        lines += [
            "",
            f"ceilings (best of runs): curl --parallel-max {CURL_PARALLEL} all objects "
            f"{ceilings['curl_seconds']:.2f} s; Python sha1 "
            f"{ceilings['sha1_seconds']:.2f} s + inflate ({ceilings['inflate_backend']}) "
            f"{ceilings['inflate_seconds']:.2f} s = {ceilings['inflate_hash_seconds']:.2f} s "
            f"(zlib.decompress {ceilings['zlib_inflate_seconds']:.2f} s)",
            f"1 % change references: curl of the changed objects "
            f"{ceilings['curl_changed_seconds']:.3f} s; curl of everything a client fetches "
            f"for it ({ceilings['change_client_files']} files: {', '.join(ROOT_FILES)}, "
            f"{ceilings['change_catalogs']} catalogs, the objects) "
            f"{ceilings['curl_change_client_seconds']:.3f} s; "
            f"`python3 -c 'import shrinkwrap_async.cli'` {ceilings['python_start_seconds']:.3f} s",
        ]
    if "real_cvmfs_shrinkwrap" in results:
        real = results["real_cvmfs_shrinkwrap"]
        lines += [
            "real cvmfs_shrinkwrap 2.11.5 (same repository shape): -j 16 "
            f"{real['export_seconds'][16]} s = {real['best_files_per_second']:,} files/s, "
            f"{real['best_mb_per_second']} MB/s, RSS {real['max_rss_mb']} MB; -j 4 "
            f"{real['export_seconds'][4]} s; -j 64 {real['export_seconds'][64]} s; unchanged "
            f"re-run {real['unchanged_rerun_seconds']} s; curl {real['curl_parallel_64_seconds']}"
            f" s; zlib {real['python_zlib_decompress_seconds']} s; sha1 {real['sha1_seconds']} s",
        ]
    return "\n".join(lines)


def parse_counts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"want numbers like 16,64,256, not {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("want positive numbers like 16,64,256")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="End-to-end export benchmark on 127.0.0.1 (see docs/performance.md).",
    )
    parser.add_argument("--scale", choices=SCALES, default="reference")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "-j", "--jobs", type=parse_counts, default=[16, 64], help="export -j sweep, e.g. 16,64"
    )
    parser.add_argument(
        "--workers",
        type=parse_counts,
        default=None,
        help="export --workers sweep, e.g. 1,2 (default: the option is not passed, so the "
        "export's own default applies)",
    )
    parser.add_argument("--squid", action="store_true", help="fetch through a local Squid")
    parser.add_argument("--no-refresh", action="store_true", help="full exports only")
    parser.add_argument("--no-ceilings", action="store_true", help="skip curl and inflate")
    parser.add_argument(
        "--repeat", type=int, default=1, help="full exports per -j, best reported (default 1)"
    )
    parser.add_argument("--ceiling-runs", type=int, default=3, help="best of N (default 3)")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="seconds to wait when destinations had to be deleted mid-run (default 60)",
    )
    parser.add_argument(
        "--profile",
        choices=["pyinstrument", "py-spy"],
        help="also profile one full export (first -j); report written to the results dir",
    )
    parser.add_argument(
        "--dest-base",
        type=Path,
        help="where the exports are written (default: beside the cache; e.g. /dev/shm "
        "to measure the exporter without the disk)",
    )
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="free the kernel's unused dentries and inodes (and the cached pages of the "
        "other repositories in the cache, which keep theirs) before the run, then read the "
        "repository back (root; see docs/performance.md: what earlier runs leave there "
        "slows path look-ups and inode creation)",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = parser.parse_args(argv)
    if args.scale == "large":
        print("large scale: 1M files; generation takes a long time and tens of GB", flush=True)
    elif args.scale.startswith("large-small"):
        print("large-small scale: 1M small files; generation takes minutes, a few GB", flush=True)
    config = BenchConfig(
        scale=args.scale,
        seed=args.seed,
        jobs=args.jobs,
        workers=list(args.workers) if args.workers else [None],
        squid=args.squid,
        refresh=not args.no_refresh,
        ceilings=not args.no_ceilings,
        ceiling_runs=args.ceiling_runs,
        repeat=args.repeat,
        cache=args.cache.absolute(),
        results=args.results.absolute(),
        profile=args.profile,
        settle=args.settle,
        dest_base=args.dest_base.absolute() if args.dest_base else None,
        drop_caches=args.drop_caches,
    )
    results = run_benchmark(config, log=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_table(results))
    if "profile_report" in results:
        print(f"\nprofile: {results['profile_report']}")
    print(f"JSON: {results['json_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
