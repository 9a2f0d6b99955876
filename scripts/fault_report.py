#!/usr/bin/env python3
"""Run every wire-fault scenario of the reliability suite and print a Markdown table.

    python3 scripts/fault_report.py [--keep DIR]

Columns: fault, what was injected, exit code, tree byte-identical to the source, retries
(``--json`` summary), objects in ``.data`` that do not verify against the repository, result.
Everything runs on 127.0.0.1 (a private nginx and the fault-injecting proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability import scenarios

from shrinkwrap_async.testing.nginx import NginxServer


async def run_all(base: Path) -> list[scenarios.FaultOutcome]:
    repo = scenarios.make_repo(base / "repo")
    docroot = base / "docroot"
    (docroot / "cvmfs").mkdir(parents=True)
    (docroot / "cvmfs" / repo.fqrn).symlink_to(repo.repository_dir)
    outcomes: list[scenarios.FaultOutcome] = []
    with NginxServer(docroot) as nginx:
        for name in scenarios.WIRE_FAULTS:
            outcomes.append(await scenarios.wire_fault(name, repo, base / name, nginx.url))
        outcomes.append(await scenarios.mirror_down(repo, base / "mirror", nginx.url))
        outcomes.append(await scenarios.proxy_group_down(repo, base / "proxy", nginx.url))
        outcomes += await scenarios.missing_object(repo, base / "missing", nginx.url)
    return outcomes


def table(outcomes: list[scenarios.FaultOutcome]) -> str:
    lines = [
        "| fault | injected | exit | tree byte-identical | retries | unverified in .data "
        "| result |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        result = o.result + (f" ({'; '.join(o.notes[:2])})" if o.notes else "")
        identical = "yes" if o.identical else "no"
        lines.append(
            f"| {o.fault} | {o.injected} | {o.exit_code} (want {o.expected_exit}) | "
            f"{identical} | {o.retries} | {o.unverified} | {result} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        outcomes = asyncio.run(run_all(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="fault-report-") as scratch:
            outcomes = asyncio.run(run_all(Path(scratch)))
    print(table(outcomes))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
