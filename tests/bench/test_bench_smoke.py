"""The export benchmark harness runs end to end on a tiny generated repository.

Asserts only that the results are well formed (no timings): every case ran, the export
found every file, the no-change refresh costs two requests, the ceilings are measured, the
memory of the export's process tree was sampled, and the destinations are gone afterwards.
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
        jobs=[4],
        ceiling_runs=1,
        cache=tmp_path / "cache",
        results=tmp_path / "results",
        settle=0,
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
    # Each round opens with a curl pass, and each export is compared with its round's.
    assert len(written["ceilings"]["curl_round_seconds"]) == 1
    assert full["ratios_to_round_curl"] == [
        round(written["ceilings"]["curl_round_seconds"][0] / full["wall"], 3)
    ]
    assert full["ratio_to_round_curl_median"] == full["ratios_to_round_curl"][0]
    ceilings = written["ceilings"]
    assert ceilings["change_client_files"] >= 2 + ceilings["change_catalogs"] + 1
    assert ceilings["curl_change_client_seconds"] > 0 and ceilings["python_start_seconds"] > 0
    assert changed["ratio_to_curl_client"] > 0 and changed["ratio_to_curl_client_and_start"] > 0
    assert changed["ratio_to_curl_changed"] > 0
    # Memory: the tree of the export was sampled; the sum covers the export process.
    roles = [process["role"] for process in full["rss_tree"]["processes"]]
    assert roles[0] == "export" and full["rss_tree"]["samples"] > 0
    assert full["peak_rss_sum_mb"] >= min(
        p["max_sampled_rss_mb"] for p in full["rss_tree"]["processes"]
    )
    assert full["rss_tree"]["hwm_sum_mb"] >= full["peak_rss_sum_mb"] > 0
    assert full["export_hwm_mb"] > 0
    table = bench.format_table(results)  # type: ignore[attr-defined]
    shown = f"default ({bench.auto_workers()})"  # type: ignore[attr-defined]
    assert f"| full export | 4 | {shown} |" in table and "no-change refresh" in table
    assert "curl(client fetch)+start" in table
    # The kernel's dentry counts the figures were made at (they slow path look-ups).
    host = written["host"]
    assert host["caches_dropped"] is False
    assert host["dentries_at_start"]["dentries"] >= host["dentries_at_start"]["unused"] >= 0
    assert host["dentries_at_start"]["inodes"] > 0
    assert f"kernel dentries at start {host['dentries_at_start']['dentries']:,}" in table
    assert "full export against the curl pass of its round: median" in table
    # What --drop-caches reads back afterwards: every file of the revision's store.
    fqrn = written["repository"]["fqrn"]
    data = tmp_path / "cache" / "tiny-seed1" / "base" / "cvmfs" / fqrn / "data"
    stored = sum(path.stat().st_size for path in data.rglob("*") if path.is_file())
    assert bench.read_objects(data) == stored > written["repository"]["stored_bytes"]  # type: ignore[attr-defined]
    # Destinations are deleted after the run, and the deletion is recorded.
    assert not any((tmp_path / "cache").glob("bench-*"))
    assert (tmp_path / "cache" / bench.DELETION_MARKER).exists()  # type: ignore[attr-defined]

    # Cached: a second run does not regenerate the repository.
    marker = tmp_path / "cache" / "tiny-seed1" / "base.done"
    before = marker.stat().st_mtime_ns
    config.refresh, config.ceilings = False, False
    config.workers = [2]
    again = bench.run_benchmark(config, log=lambda text: None)  # type: ignore[attr-defined]
    assert marker.stat().st_mtime_ns == before
    (outcome,) = again["exports"]
    assert "no_change" not in outcome and outcome["workers"] == 2
    assert outcome["full"]["exit"] == 0 and outcome["full"]["files"] == 122
    assert any("deleted" in note for note in again["notes"])  # right after the first run

    # --dest-base: the exports (and the record of their deletion) go elsewhere.
    config.dest_base = tmp_path / "elsewhere"
    moved = bench.run_benchmark(config, log=lambda text: None)  # type: ignore[attr-defined]
    assert moved["destinations"]["path"] == str(tmp_path / "elsewhere")
    assert moved["destinations"]["fs"] == written["destinations"]["fs"] != "unknown"
    assert (tmp_path / "elsewhere" / bench.DELETION_MARKER).exists()  # type: ignore[attr-defined]
    assert not any((tmp_path / "elsewhere").glob("bench-dest-*"))
    assert "destinations on" in bench.format_table(moved)  # type: ignore[attr-defined]
    assert moved["exports"][0]["full"]["files"] == 122
