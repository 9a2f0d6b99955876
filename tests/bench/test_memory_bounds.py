"""Structures that must not grow with the repository: the dry run's record of the objects
it would fetch keeps 8 bytes per distinct object and still counts each one exactly once."""

from __future__ import annotations

import random

from shrinkwrap_async.pipeline import object_fetch
from shrinkwrap_async.pipeline.object_fetch import DistinctNames


def test_distinct_names_counts_each_name_once_across_merges(monkeypatch) -> None:
    monkeypatch.setattr(object_fetch, "DISTINCT_PENDING", 64)  # many merges
    rng = random.Random(9)
    names = [f"{rng.getrandbits(160):040x}.{rng.choice('abc')}" for _ in range(3000)]
    seen = DistinctNames()
    first = [seen.add(name) for name in names]
    assert all(first) and len(seen) == len(names)
    again = [seen.add(name) for name in rng.sample(names, 500)]
    assert not any(again) and len(seen) == len(names)
    assert seen.add("0" * 40 + ".new") and not seen.add("0" * 40 + ".new")
    keys = list(seen._sorted)
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_distinct_names_memory_is_a_few_bytes_per_name(monkeypatch) -> None:
    monkeypatch.setattr(object_fetch, "DISTINCT_PENDING", 1024)
    seen = DistinctNames()
    for number in range(20_000):
        seen.add(f"{number:040x}.meta")
    kept = seen._sorted.itemsize * len(seen._sorted)
    assert len(seen) == 20_000 and kept <= 8 * 20_000 and len(seen._pending) < 1024
