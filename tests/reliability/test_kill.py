"""SIGKILL the exporter at random moments; the rerun completes and equals an uninterrupted run."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from shrinkwrap_async.link.tree_writer import is_temp_name
from shrinkwrap_async.testing.nginx import NginxServer
from shrinkwrap_async.testing.shared import listing_tool

from . import harness as h
from .scenarios import Repo

listing = listing_tool()


def _command(repo: Repo, ws: h.Workspace, server: NginxServer) -> list[str]:
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[server.repository_url("@fqrn@")],
        keys_dir=repo.keys_dir,
        cache=ws.cache,
    )
    return h.export_command(repo.fqrn, config, ws.dest, jobs=32)


def kill_and_resume(repo: Repo, server: NginxServer, tmp_path: Path, kills: int, seed: int) -> None:
    reference = h.Workspace(tmp_path / "reference", repo.keys_dir)
    first = h.run_export(_command(repo, reference, server))
    assert first.returncode == 0, first.describe()
    index = h.RepositoryIndex(repo.repository_dir)
    rng = random.Random(seed)
    ws = h.Workspace(tmp_path / "killed", repo.keys_dir)
    command = _command(repo, ws, server)
    killed = 0
    for attempt in range(kills):
        # Within an export's own time (a fast machine exports this tree in half a second;
        # fixed moments would come after its end). The first run is the slowest (cold).
        moment = rng.uniform(0.1, 0.6) * first.seconds
        run = h.run_export(command, kill_after=moment)
        killed += run.killed
        bad = h.unverified_objects(ws.dest / ".data", index)
        assert bad == [], (
            f"after kill {attempt} at {moment:.2f} s: objects failing their hash {bad[:5]}"
        )
        tree = ws.dest / repo.fqrn
        if tree.is_dir():  # whatever is linked under a final name is complete
            # (a temp name, e.g. of the marker file, may be left by the kill: the next run
            # removes it, as the check of leftover temporaries after the last run shows)
            wrong = [
                p
                for p in h.compare_with_source(repo.source, tree)
                if "missing" not in p and not is_temp_name(Path(p.partition(": ")[2]).name)
            ]
            assert wrong == [], f"after kill {attempt} at {moment:.2f} s: {wrong[:5]}"
        if not run.killed and run.returncode == 0:  # it ended first: start over from nothing
            shutil.rmtree(ws.dest)
    assert killed > 0, f"no run was still going when its kill came (first: {first.seconds:.2f} s)"
    final = h.run_export(command)
    assert final.returncode == 0, final.describe()
    assert h.compare_with_source(repo.source, ws.dest / repo.fqrn) == []
    assert h.unverified_objects(ws.dest / ".data", index) == []
    assert h.leftover_temporaries(ws.dest) == []
    expected = listing.dump(str(reference.dest), repo.fqrn)
    actual = listing.dump(str(ws.dest), repo.fqrn)
    problems = listing.diff(expected, actual, ignore=("mtime",))
    assert problems == [], problems[:5]
    assert shared_inode_mtime_problems(expected, actual, repo.source) == []


def shared_inode_mtime_problems(expected: dict, actual: dict, source: Path) -> list[str]:
    """mtimes that differ from the uninterrupted run's, except where they cannot agree: an
    object made before a kill keeps the mtime of whichever of its paths made it, so a file
    sharing its inode with paths of other mtimes may show any of theirs."""
    members: dict[int, list[str]] = {}
    for rel, entry in expected["entries"].items():
        if "group" in entry:
            members.setdefault(entry["group"], []).append(rel)
    problems = []
    for rel, entry in expected["entries"].items():
        got = actual["entries"][rel]["mtime"]
        if got == entry["mtime"] or rel in ("", listing.MARKER):
            continue
        group = members.get(entry.get("group", -1), [])
        if got in {int((source / member).stat().st_mtime) for member in group}:
            continue
        problems.append(f"mtime differs at {rel!r}: expected {entry['mtime']}, got {got}")
    return problems


def test_three_kills_then_resume(large_repo: Repo, nginx: NginxServer, tmp_path: Path) -> None:
    kill_and_resume(large_repo, nginx, tmp_path, kills=3, seed=3)


@pytest.mark.slow
def test_twenty_kills_then_resume(large_repo: Repo, nginx: NginxServer, tmp_path: Path) -> None:
    kill_and_resume(large_repo, nginx, tmp_path, kills=20, seed=20)
