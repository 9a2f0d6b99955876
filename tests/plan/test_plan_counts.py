"""The plan (``export --dry-run``, ``spec check``) against what a following export writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.pipeline.plan import Plan, make_plan
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.testing.command_line import run_cli
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import data_requests, write_client_config

FIXTURE_SPECS = [
    ("fix1.test.local", "/*\n"),
    ("fix1.test.local", "/sw/*\n/README.txt\n^/links/*\n!/sw/v1/include\n"),
    ("fix2.test.local", "/*\n"),
    ("fix2.test.local", "/big/*\n/bin/tool\n^/hard/*\n!/big/zeros.bin\n"),
    ("fix3.test.local", "/*\n"),
    ("fix3.test.local", "/data/*\n/modes/m0000\n^/weird/*\n!/data/set3\n/nothing/here\n"),
]


def assert_plan_matches(plan: Plan, stats: ExportStats) -> None:
    assert (plan.files, plan.dirs, plan.symlinks, plan.specials, plan.bytes) == (
        stats.files,
        stats.dirs,
        stats.symlinks,
        stats.specials,
        stats.bytes,
    )
    assert plan.objects_needed == stats.data_files
    assert plan.needed_bytes == stats.data_bytes


@pytest.mark.parametrize(("fqrn", "spec_text"), FIXTURE_SPECS)
async def test_plan_equals_export(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path, fqrn: str, spec_text: str
) -> None:
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    settings = ClientSettings.load([config], fqrn)
    dest = tmp_path / "dest"
    quick = await make_plan(settings, Spec.parse(spec_text), dest_base=dest)
    exact = await make_plan(settings, Spec.parse(spec_text), dest_base=dest, exact=True)
    assert not (dest).exists()
    assert not exact.estimated and exact.objects == exact.objects_needed
    for counted in ("files", "dirs", "symlinks", "specials", "bytes"):
        assert getattr(quick, counted) == getattr(exact, counted), counted
    if spec_text == "/*\n":
        assert quick.estimated and quick.catalogs == 1 and quick.counted_subtrees == ["/"]
    if "/nothing/here" in spec_text:
        assert any("matched nothing" in w for w in exact.warnings)

    before = data_requests(fixture_server)
    stats = await export_repository(
        settings, Spec.parse(spec_text), ExportOptions(dest_base=dest, progress=False)
    )
    assert not stats.failures
    assert_plan_matches(exact, stats)
    assert data_requests(fixture_server) - before >= exact.objects_needed  # chunks: several
    if not quick.estimated:
        assert_plan_matches(quick, stats)

    # After the export every object is present: nothing left to download.
    again = await make_plan(settings, Spec.parse(spec_text), dest_base=dest, exact=True)
    assert again.objects_needed == 0 and again.objects_present == exact.objects


async def test_spec_check_and_dry_run_cli(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = write_client_config(tmp_path, fixture_server.url, fixtures_dir / "keys")
    spec = tmp_path / "s.spec"
    spec.write_text("/sw/*\n/README.txt\n/links\n")
    dest = tmp_path / "dest"
    args = ["-r", "fix1.test.local", "-f", str(config)]
    assert await run_cli("spec", "check", str(spec), *args, "-x", str(dest), "--json") == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["files"] > 0 and checked["estimated"]
    assert any("names a directory" in w for w in checked["warnings"])
    assert await run_cli("spec", "check", str(spec), *args) == 0
    text = capsys.readouterr().out
    assert "regular files" in text and "names a directory" in text
    export = ["export", *args, "-t", str(spec), "-x", str(dest), "--no-progress"]
    assert await run_cli(*export, "--dry-run", "--json", "--exact") == 0
    planned = json.loads(capsys.readouterr().out)
    assert not planned["estimated"] and planned["files"] == checked["files"]
    assert not dest.exists()
    assert await run_cli(*export, "--json", "-q") == 0
    done = json.loads(capsys.readouterr().out)
    assert done["data_files"] == planned["objects_needed"]


async def test_plan_equals_export_of_published_repository(tmp_path: Path) -> None:
    from shrinkwrap_async.testing.publish import Publisher, PublishOptions
    from shrinkwrap_async.testing.synthetic import Profile, build_tree

    fqrn = "plan.bench.local"
    out = tmp_path / "published"
    profile = Profile(300, 2, 3, 2, 2048, 8192, big_files=1, extras=True)
    Publisher(out, fqrn, PublishOptions(workers=1)).publish(build_tree(profile, 5))
    async with StaticServer(out) as server:
        config = write_client_config(tmp_path, server.url, out / "keys")
        settings = ClientSettings.load([config], fqrn)
        dest = tmp_path / "dest"
        for spec_text in ("/*\n", "^/*\n"):
            quick = await make_plan(settings, Spec.parse(spec_text), dest_base=dest)
            exact = await make_plan(settings, Spec.parse(spec_text), dest_base=dest, exact=True)
            stats = await export_repository(
                settings, Spec.parse(spec_text), ExportOptions(dest_base=dest, progress=False)
            )
            assert not stats.failures and stats.dirs > 0
            assert_plan_matches(exact, stats)
            for counted in ("files", "dirs", "symlinks", "specials", "bytes"):
                assert getattr(quick, counted) == getattr(stats, counted), counted
            dest = tmp_path / "dest2"  # the second spec into a fresh destination
