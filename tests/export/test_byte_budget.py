"""Small objects held between fetch and commit stay within a byte budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shrinkwrap_async.pipeline import object_fetch
from shrinkwrap_async.pipeline.byte_budget import ByteBudget
from shrinkwrap_async.testing.exporting import publish_and_export

FQRN = "budget.test.local"


async def test_acquire_waits_for_a_release() -> None:
    budget = ByteBudget(100)
    await budget.acquire(60)
    second = asyncio.ensure_future(budget.acquire(60))
    await asyncio.sleep(0.01)
    assert not second.done() and budget.used == 60
    budget.release(60)
    await asyncio.wait_for(second, 1)
    assert budget.used == 60 and budget.peak == 60


async def test_an_object_larger_than_the_budget_passes_alone() -> None:
    budget = ByteBudget(100)
    await asyncio.wait_for(budget.acquire(500), 1)  # nothing held: it may pass
    blocked = asyncio.ensure_future(budget.acquire(1))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    budget.release(500)
    await asyncio.wait_for(blocked, 1)
    assert budget.peak == 500


async def test_an_export_under_a_small_budget_completes_within_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 64 * 1024
    budgets: list[ByteBudget] = []

    def small_budget() -> ByteBudget:
        budgets.append(ByteBudget(limit))
        return budgets[-1]

    monkeypatch.setattr(object_fetch, "ByteBudget", small_budget)
    source = tmp_path / "source"
    source.mkdir()
    for index in range(60):  # 60 objects of 8-12 KiB: 600 KiB, far over the budget
        (source / f"file{index:02d}.bin").write_bytes(bytes([index]) * (8192 + 64 * index))
    [stats] = await publish_and_export(tmp_path, FQRN, source, ["/*\n"], max_in_flight=32)
    assert stats.failures == [] and stats.data_files == 60
    for index in range(60):
        data = (tmp_path / "dest" / FQRN / f"file{index:02d}.bin").read_bytes()
        assert data == bytes([index]) * (8192 + 64 * index)
    [budget] = budgets
    assert 0 < budget.peak <= limit and budget.used == 0
