"""The export benchmark harness runs end to end on a tiny generated repository.

Asserts only that the results are well formed (no timings): every case ran, the export
found every file, the no-change refresh costs two requests, the ceilings are measured.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from shrinkwrap_async.testing.nginx import NGINX, skip_if_missing
from shrinkwrap_async.testing.synthetic import Profile

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_export.py"


def load_bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_export", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_export"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_harness_produces_well_formed_results(tmp_path: Path) -> None:
    skip_if_missing(NGINX)
    if not Path("/usr/bin/curl").exists():
        pytest.skip("curl is not installed")
    bench = load_bench()
    tiny = Profile(files=120, releases=2, packages=2, subdirs=2, median=2048, mean=4096)
    config = bench.BenchConfig(  # type: ignore[attr-defined]
        scale=tiny,
        name="tiny",
        workers=[4],
        ceiling_runs=1,
        cache=tmp_path / "cache",
        results=tmp_path / "results",
    )
    results = bench.run_benchmark(config, log=lambda text: None)  # type: ignore[attr-defined]

    written = json.loads(Path(results["json_path"]).read_text())
    assert written["scale"] == "tiny" and written["repository"]["content_objects"] > 0
    assert written["repository"]["changed_objects"] >= 1
    (outcome,) = written["exports"]
    full, unchanged, changed = outcome["full"], outcome["no_change"], outcome["change_1pct"]
    for run in (full, unchanged, changed):
        assert run["exit"] == 0, run
        assert run["failures"] == 0 and run["wall"] > 0 and run["max_rss_mb"] > 0
    assert full["files"] == 120 + 2  # the files and one .cvmfscatalog marker per release
    assert full["requests"] >= written["repository"]["content_objects"]
    assert unchanged["requests"] == 2
    assert 0 < changed["requests"] < full["requests"]
    assert written["ceilings"]["curl_seconds"] > 0
    assert written["ceilings"]["inflate_hash_seconds"] >= 0
    assert full["ratio_to_curl"] > 0
    table = bench.format_table(results)  # type: ignore[attr-defined]
    assert "| full export | 4 |" in table and "no-change refresh" in table

    # Cached: a second run does not regenerate the repository.
    marker = tmp_path / "cache" / "tiny-seed1" / "base.done"
    before = marker.stat().st_mtime_ns
    config.refresh, config.ceilings = False, False
    again = bench.run_benchmark(config, log=lambda text: None)  # type: ignore[attr-defined]
    assert marker.stat().st_mtime_ns == before
    assert "no_change" not in again["exports"][0]
