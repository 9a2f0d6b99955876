"""Faults on the wire: the export completes byte-identical, counts retries, verifies objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.testing.nginx import NginxServer

from . import scenarios
from .scenarios import Repo


def _explain(outcome: scenarios.FaultOutcome) -> str:
    run = outcome.run.describe() if outcome.run else ""
    return f"{outcome}\nnotes: {outcome.notes}\n{run}"


@pytest.mark.parametrize("fault", ["reset", "5xx", "truncated", "stalled"])
async def test_wire_fault_export_completes(
    fault: str, fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    outcome = await scenarios.wire_fault(fault, fault_repo, tmp_path, nginx.url)
    assert outcome.exit_code == 0, _explain(outcome)
    assert outcome.identical, _explain(outcome)
    assert outcome.unverified == 0, _explain(outcome)
    assert outcome.retries > 0, _explain(outcome)


async def test_flipped_bytes_never_reach_the_tree(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    outcome = await scenarios.wire_fault("flipped", fault_repo, tmp_path, nginx.url)
    assert outcome.exit_code == 0, _explain(outcome)
    assert outcome.identical, _explain(outcome)
    assert outcome.unverified == 0, _explain(outcome)


async def test_flipped_bytes_retries_counted(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    outcome = await scenarios.wire_fault("flipped", fault_repo, tmp_path, nginx.url)
    assert outcome.retries > 0, _explain(outcome)


async def test_one_mirror_down(fault_repo: Repo, nginx: NginxServer, tmp_path: Path) -> None:
    outcome = await scenarios.mirror_down(fault_repo, tmp_path, nginx.url)
    assert outcome.passed, _explain(outcome)


async def test_one_proxy_group_down(fault_repo: Repo, nginx: NginxServer, tmp_path: Path) -> None:
    outcome = await scenarios.proxy_group_down(fault_repo, tmp_path, nginx.url)
    assert outcome.passed, _explain(outcome)


async def test_object_never_fetchable_then_restored(
    fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    broken, restored = await scenarios.missing_object(fault_repo, tmp_path, nginx.url)
    assert broken.exit_code == 1, _explain(broken)
    assert broken.passed, _explain(broken)
    assert restored.exit_code == 0, _explain(restored)
    assert restored.passed, _explain(restored)
