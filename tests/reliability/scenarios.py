"""Wire-fault scenarios: one export through the fault proxy (or with a dead mirror/proxy).

Used by ``test_wire_faults.py`` (assertions) and ``scripts/fault_report.py`` (the table).
Each scenario returns a :class:`FaultOutcome` with what the table reports.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.testing.daemon import free_loopback_port
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy

from . import harness as h

FQRN = "faults.test.local"


@dataclass
class Repo:
    """A published repository, its source tree and the server root it lives in."""

    source: Path
    out: Path  # publisher output: out/cvmfs/<fqrn>, out/keys
    fqrn: str

    @property
    def repository_dir(self) -> Path:
        return self.out / "cvmfs" / self.fqrn

    @property
    def keys_dir(self) -> Path:
        return self.out / "keys"


def make_repo(base: Path, fqrn: str = FQRN, *, files: int = 150, big_files: int = 2) -> Repo:
    source = h.generate_tree(base / "source", files=files, big_files=big_files)
    h.publish(source, base / "out", fqrn)
    return Repo(source, base / "out", fqrn)


@dataclass
class FaultOutcome:
    fault: str
    injected: str
    exit_code: int
    identical: bool
    retries: int
    unverified: int
    result: str = ""
    expected_exit: int = 0
    notes: list[str] = field(default_factory=list)
    run: h.RunResult | None = None

    @property
    def passed(self) -> bool:
        return self.result == "pass"


def _judge(outcome: FaultOutcome, *, need_retries: bool) -> FaultOutcome:
    ok = outcome.exit_code == outcome.expected_exit and outcome.identical
    ok = ok and outcome.unverified == 0
    if need_retries and outcome.retries == 0:
        outcome.notes.append("no retries counted in --json")
        ok = False
    outcome.result = "pass" if ok else "FAIL"
    return outcome


async def _export(
    repo: Repo, ws: h.Workspace, server_urls: list[str], proxy: str, jobs: int = 16
) -> h.RunResult:
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=server_urls,
        keys_dir=repo.keys_dir,
        cache=ws.cache,
        proxy=proxy,
        extra={"CVMFS_TIMEOUT": "1", "CVMFS_TIMEOUT_DIRECT": "1", "CVMFS_MAX_RETRIES": "6"},
    )
    command = h.export_command(repo.fqrn, config, ws.dest, jobs=jobs)
    return await asyncio.to_thread(h.run_export, command)


def _outcome(
    name: str, injected: str, repo: Repo, ws: h.Workspace, run: h.RunResult, *, skip=()
) -> FaultOutcome:
    problems = h.compare_with_source(repo.source, ws.dest / repo.fqrn, skip=skip)
    index = h.RepositoryIndex(repo.repository_dir)
    unverified = h.unverified_objects(ws.dest / ".data", index)
    retries = int(run.summary.get("retries", 0) or 0)  # type: ignore[call-overload]
    outcome = FaultOutcome(name, injected, run.returncode, not problems, retries, len(unverified))
    outcome.run = run
    outcome.notes += problems[:5] + unverified[:5]
    return outcome


WIRE_FAULTS: dict[str, tuple[Fault, str]] = {
    "reset": (Fault.RESET, "20 % of requests: connection reset without an answer"),
    "5xx": (Fault.ERROR, "20 % of requests: HTTP 503"),
    "truncated": (Fault.TRUNCATE, "20 % of requests: full Content-Length, half the body, close"),
    "stalled": (Fault.STALL, "20 % of requests: silent 3 s, past CVMFS_TIMEOUT=1"),
    "flipped": (Fault.FLIP, "20 % of requests: one body byte flipped"),
}


async def wire_fault(name: str, repo: Repo, workdir: Path, origin_url: str) -> FaultOutcome:
    kind, injected = WIRE_FAULTS[name]
    ws = h.Workspace(workdir, repo.keys_dir)
    # At most 3 faults per object: fewer than its attempts (two per route and pass, three
    # passes), so the outcome does not depend on the order the concurrent requests meet the dice.
    proxy = FaultProxy(
        faults={kind: 0.2}, seed=10, stall_seconds=3.0, max_faults_per_path=3, name=name
    )
    async with proxy:
        run = await _export(repo, ws, [f"{origin_url}/cvmfs/@fqrn@"], proxy.url)
        applied = proxy.applied[kind]
    outcome = _outcome(name, f"{injected} ({applied} injected)", repo, ws, run)
    return _judge(outcome, need_retries=True)


async def mirror_down(repo: Repo, workdir: Path, origin_url: str) -> FaultOutcome:
    ws = h.Workspace(workdir, repo.keys_dir)
    dead = f"http://127.0.0.1:{free_loopback_port()}/cvmfs/@fqrn@"
    run = await _export(repo, ws, [dead, f"{origin_url}/cvmfs/@fqrn@"], "DIRECT")
    outcome = _outcome("mirror down", "2 server URLs, the first a dead port", repo, ws, run)
    return _judge(outcome, need_retries=False)


async def proxy_group_down(repo: Repo, workdir: Path, origin_url: str) -> FaultOutcome:
    ws = h.Workspace(workdir, repo.keys_dir)
    dead = f"http://127.0.0.1:{free_loopback_port()}"
    async with FaultProxy(name="good") as proxy:
        run = await _export(repo, ws, [f"{origin_url}/cvmfs/@fqrn@"], f"{dead}|{proxy.url}")
    outcome = _outcome("proxy group down", "2 proxy groups, the first a dead port", repo, ws, run)
    return _judge(outcome, need_retries=False)


def _first_plain_object(repo: Repo) -> tuple[str, Path, str]:
    """(content hex, served path, repository name) of one unchunked file object."""
    index = h.RepositoryIndex(repo.repository_dir)
    for content_hex, name in sorted(index.paths.items()):
        if content_hex in index.chunked or not name.startswith("file"):
            continue
        served = repo.repository_dir / "data" / content_hex[:2] / content_hex[2:]
        if served.is_file():
            return content_hex, served, name
    raise AssertionError("no plain object found")


async def missing_object(repo: Repo, workdir: Path, origin_url: str) -> list[FaultOutcome]:
    """Delete one object from the served copy: exit 1 naming it; restore: rerun exits 0.

    ``repo`` must be a private copy (this scenario changes the served files).
    """
    content_hex, served, name = _first_plain_object(repo)
    parked = served.with_name(served.name + ".parked")
    shutil.move(served, parked)
    ws = h.Workspace(workdir, repo.keys_dir)
    try:
        first = await _export(repo, ws, [f"{origin_url}/cvmfs/@fqrn@"], "DIRECT")
    finally:
        shutil.move(parked, served)
    affected = sorted(
        str(p.relative_to(repo.source)) for p in repo.source.rglob(name) if p.is_file()
    )
    outcome1 = _outcome(
        "object never fetchable", f"object {content_hex[:12]}… deleted from the server", repo,
        ws, first, skip=affected,
    )  # fmt: skip
    outcome1.expected_exit = 1
    named = content_hex in first.stderr or any(a in first.stderr for a in affected)
    if not named:
        outcome1.notes.append("the missing object is not named in the log")
    for rel in affected:
        if (ws.dest / repo.fqrn / rel).exists():
            outcome1.notes.append(f"{rel} exists although its object is missing")
            named = False
    _judge(outcome1, need_retries=False)
    if not named:
        outcome1.result = "FAIL"
    second = await _export(repo, ws, [f"{origin_url}/cvmfs/@fqrn@"], "DIRECT")
    outcome2 = _outcome("rerun after restoring it", "object served again", repo, ws, second)
    return [outcome1, _judge(outcome2, need_retries=False)]


Scenario = Callable[[Repo, Path, str], Awaitable[FaultOutcome]]
