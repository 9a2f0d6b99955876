"""The export and demo commands end to end (command line, exit codes, JSON summary)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shrinkwrap_async import cli
from shrinkwrap_async.testing.command_line import run_cli, run_cli_process, source_arguments
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import listing_tool, write_client_config

FQRN = "fix1.test.local"


async def test_dry_run_plans_and_writes_nothing(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FQRN, "/sw/*\n")
    dest = tmp_path / "dest"
    argv = ["export", *source, "-x", str(dest)]
    assert await run_cli(*argv, "--dry-run", "--json", "--no-progress") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] > 0 and summary["objects_needed"] > 0
    assert not (dest / FQRN).exists()
    # nested catalogs outside the spec (/data, /new, /empty_catalog) are never fetched:
    # revision B (served) has only the root and /sw along /sw/* (/sw/v1 merged into /sw)
    requested = [p for p in fixture_server.requests if p.endswith("C")]
    assert len(requested) == 2


async def test_export_cli_and_exit_codes(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys = fixtures_dir / "keys"
    source = source_arguments(tmp_path, fixture_server.url, keys, FQRN, "/README.txt\n^/links/*\n")
    dest = tmp_path / "dest"
    argv = ["export", *source, "-x", str(dest)]
    assert await run_cli(*argv, "--json", "-q") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 1 and summary["symlinks"] > 0
    assert (dest / FQRN / "README.txt").is_file()
    assert (dest / ".provenance" / FQRN / "export.json").is_file()
    assert await run_cli(*argv[:-2], "-x", str(dest), "-t", str(tmp_path / "missing")) == 2
    capsys.readouterr()
    assert await run_cli(*argv[:-2], "-x", str(dest), "-t", str(tmp_path)) == 2
    assert f"spec file {tmp_path} is not a regular file" in capsys.readouterr().err
    (tmp_path / "excluding.spec").write_text("!/README.txt\n")
    assert await run_cli(*argv[:-2], "-x", str(dest), "-t", str(tmp_path / "excluding.spec")) == 2
    assert "selects nothing" in capsys.readouterr().err
    not_a_directory = tmp_path / "excluding.spec"  # a destination that is a file
    assert await run_cli(*argv[:-2], "-x", str(not_a_directory)) == 2
    assert f"destination {not_a_directory} is not a directory" in capsys.readouterr().err


def test_demo_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", str(tmp_path / "demo"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] > 100 and summary["failures"] == []
    tree = tmp_path / "demo" / "export" / "demo.shrinkwrap.local"
    assert (tree / "README.txt").is_file()


async def test_unchanged_rerun_reports_up_to_date_without_spec_warnings(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An up-to-date run walks nothing, so it must not claim that the spec matched nothing."""
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FQRN, "/sw/*\n")
    argv = ["export", *source, "-x", str(tmp_path / "dest"), "--no-progress"]
    assert await run_cli(*argv) == 0
    capsys.readouterr()
    caplog.clear()
    assert await run_cli(*argv) == 0
    assert "is up to date" in capsys.readouterr().out
    assert not [r.getMessage() for r in caplog.records if "matched nothing" in r.getMessage()]


@pytest.mark.parametrize("command", ["export", "plan", "pack"])
async def test_unusable_catalog_cache_is_one_line_before_any_request(
    command: str, fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    """A CVMFS_CACHE_BASE that cannot be used (here: below a regular file) is exit 5 with a
    line naming the directory and the setting, and nothing is fetched."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = write_client_config(
        tmp_path, fixture_server.url, fixtures_dir / "keys", extra=f"CVMFS_CACHE_BASE={blocker}\n"
    )
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    source = ["-r", FQRN, "-f", str(config), "-t", str(spec)]
    argv = {
        "export": ["export", *source, "-x", str(tmp_path / "dest"), "--no-progress"],
        "plan": ["export", *source, "-x", str(tmp_path / "dest"), "--dry-run"],
        "pack": ["pack", *source, "-o", str(tmp_path / "out.tar")],
    }[command]
    result = await run_cli_process(*argv)
    assert result.exit_code == 5
    last = result.stderr.strip().splitlines()[-1]
    assert f"cannot use the catalog cache {blocker}/shrinkwrap-async" in last
    assert "CVMFS_CACHE_BASE" in last and "Traceback" not in result.stderr
    assert sum(fixture_server.requests.values()) == 0  # a fresh server: nothing was asked
    assert not (tmp_path / "out.tar").exists()


async def test_an_older_revision_is_kept_unless_allowed(
    fixture_server: StaticServer,
    fixture_docroot: Path,
    fixtures_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A mirror or proxy serving an older revision than the one exported (fix1's revision 2
    manifest after revision 3): the export is kept, with a warning and the offered revision
    in the summary, in one process, with shards and in a shard run alone;
    ``--allow-older-revision`` applies it, to the tree a fresh export of revision 2 makes."""
    listing = listing_tool()
    source = source_arguments(tmp_path, fixture_server.url, fixtures_dir / "keys", FQRN, "/*\n")
    dest = tmp_path / "dest"
    argv = ["export", *source, "-x", str(dest), "--json", "--no-progress"]
    assert await run_cli(*argv) == 0
    assert json.loads(capsys.readouterr().out)["revision"] == 3
    newer = listing.dump(str(dest), FQRN)
    manifest = fixture_docroot / "cvmfs" / FQRN / ".cvmfspublished"
    older = fixtures_dir / "revisions" / FQRN / "2" / ".cvmfspublished"
    manifest.write_bytes(older.read_bytes())
    for how in (["--workers", "1"], ["--workers", "2"], ["--shard", "1/2"]):
        caplog.clear()
        assert await run_cli(*argv, *how) == 0  # a shard of a batch array decides alike
        summary = json.loads(capsys.readouterr().out)
        assert summary["up_to_date"] and summary["revision"] == 3
        assert summary["offered_revision"] == 2
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert any(f"kept {FQRN} revision 3: the server offers revision 2" in m for m in warned)
        assert listing.diff(newer, listing.dump(str(dest), FQRN)) == []
    assert await run_cli(*argv[:-2], "--no-progress") == 0  # the line without --json
    assert (
        "revision 3 is up to date (2 requests; kept, the server offers the older revision 2)"
        in (capsys.readouterr().out)
    )
    assert await run_cli(*argv, "--allow-older-revision") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["revision"] == 2 and summary["offered_revision"] is None
    fresh = tmp_path / "fresh"
    assert await run_cli("export", *source, "-x", str(fresh), "--no-progress", "-q") == 0
    assert listing.diff(listing.dump(str(fresh), FQRN), listing.dump(str(dest), FQRN)) == []


async def test_a_cvmfs_shrinkwrap_command_line_with_its_defaults_runs(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cvmfs_shrinkwrap's defaults: -f cvmfs.conf:cvmfs.local and -t <repo>.spec in the
    working directory; its one-valued options -s cvmfs, -b, -d posix are accepted."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    common = ["export", "-r", FQRN, "-x", str(tmp_path / "dest"), "--no-progress"]
    missing = await run_cli_process(*common)
    assert missing.exit_code == 2 and "cvmfs.conf:cvmfs.local" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    config = write_client_config(tmp_path / "config", fixture_server.url, fixtures_dir / "keys")
    (work / "cvmfs.conf").write_text(config.read_text())
    no_spec = await run_cli_process(*common)
    assert no_spec.exit_code == 2 and f"{FQRN}.spec" in no_spec.stderr
    (work / f"{FQRN}.spec").write_text("/sw/*\n")
    done = await run_cli_process(*common, "-s", "cvmfs", "-b", "/cvmfs/", "-d", "posix", "-q")
    assert done.exit_code == 0, done.stderr
    exported = tmp_path / "dest" / FQRN
    assert (exported / "sw").is_dir() and not (exported / "data").exists()
    (work / "cvmfs.local").write_text(
        "CVMFS_SERVER_URL=http://127.0.0.1:9/cvmfs/@fqrn@\nCVMFS_MAX_RETRIES=0\n"
    )
    overridden = await run_cli_process(*common, "-q")  # cvmfs.local is read after cvmfs.conf
    assert overridden.exit_code == 4, overridden.stderr
    for wrong in (["-s", "posix"], ["-d", "cvmfs"], ["-z", "dest.conf"]):
        refused = await run_cli_process(*common, *wrong)
        assert refused.exit_code == 2, (wrong, refused.stderr)
