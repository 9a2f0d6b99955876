"""``export --changes FILE``: the paths a run added, replaced and removed, checked against
listings of the tree before and after (one process and two shards)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from shrinkwrap_async.link.change_log import quote_path
from shrinkwrap_async.link.tree_writer import MARKER_NAME
from shrinkwrap_async.testing.command_line import run_cli_process
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.source_trees import CHANGED_MTIME, modify_for_next_revision, touch

from .test_refresh_incremental import FQRN, Repo, listing, modify_more, tree_problems
from .test_refresh_signals import write_config

ODD_NAME = "odd\nname\twith\\escapes"
Change = tuple[str, str]  # (kind, repository path; a removed directory ends in "/")


def unquote(text: str) -> str:
    escapes = {"\\\\": "\\", "\\n": "\n", "\\t": "\t", "\\r": "\r"}
    return re.sub(
        r"\\(\\|n|t|r|x[0-9a-f]{2})",
        lambda m: escapes.get(m[0]) or chr(int(m[0][2:], 16)),
        text,
    )


def read_changes(path: Path) -> list[Change]:
    return read_changes_of(path.read_text(errors="surrogateescape").splitlines())


def read_changes_of(lines: list[str]) -> list[Change]:
    changes = []
    for line in lines:
        kind, _, quoted = line.partition(" ")
        assert kind in ("A", "M", "D"), line
        changes.append((kind, unquote(quoted)))
    return changes


def expected_changes(before: dict, after: dict) -> set[Change]:  # type: ignore[type-arg]
    """What a refresh from tree ``before`` to tree ``after`` (listing dumps) changes."""
    old, new = before["entries"], after["entries"]
    added = {("A", "/" + rel) for rel in new.keys() - old.keys()}
    gone = old.keys() - new.keys()
    retyped = {rel for rel in old.keys() & new.keys() if old[rel]["type"] != new[rel]["type"]}
    replaced = set(retyped)
    for rel in old.keys() & new.keys() - retyped:
        was, now = old[rel], new[rel]
        keys = {"f": ("data",), "l": ("target", "mtime"), "p": ("mode", "mtime")}
        if any(was.get(key) != now.get(key) for key in keys.get(now["type"], ())):
            replaced.add(rel)
    removed = {
        ("D", "/" + rel + ("/" if old[rel]["type"] == "d" else ""))
        for rel in gone
        if rel.rpartition("/")[0] not in gone and rel.rpartition("/")[0] not in retyped
    }
    return added | removed | {("M", "/" + rel) for rel in replaced}


async def export(repo: Repo, config: Path, dest: Path, changes: Path, *more: str) -> None:
    spec = repo.base / "all.spec"
    result = await run_cli_process(
        "export", "-r", FQRN, "-f", str(config), "-t", str(spec), "-x", str(dest), "-q",
        "--changes", str(changes), *more,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_changes_list_what_each_run_did(tmp_path: Path, workers: str) -> None:
    repo = Repo(tmp_path)
    (repo.source / "weird" / ODD_NAME).write_text("a name that needs quoting\n")
    (repo.source / "typechange" / "file_becomes_dir").write_text("a file in A\n")
    repo.publish()
    dest = tmp_path / "dest"
    changes = tmp_path / "changes.txt"
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        await export(repo, config, dest, changes, "--workers", workers)
        first = read_changes(changes)
        tree = listing.dump(str(dest), FQRN)
        assert len(first) == len(set(first))
        in_tree = {("A", "/" + rel) for rel in tree["entries"] if rel not in ("", MARKER_NAME)}
        assert set(first) == in_tree
        assert ("A", f"/weird/{ODD_NAME}") in first
        assert f"A /weird/{quote_path(ODD_NAME)}\n" in changes.read_text()

        await export(repo, config, dest, changes, "--workers", workers)
        assert changes.read_text() == ""  # up to date: nothing changed, the list emptied

        modify_for_next_revision(repo.source)
        modify_more(repo.source)
        shutil.rmtree(repo.source / "typechange" / "dir_becomes_file")
        (repo.source / "typechange" / "dir_becomes_file").write_text("a file in B\n")
        (repo.source / "typechange" / "file_becomes_dir").unlink()
        (repo.source / "typechange" / "file_becomes_dir").mkdir()
        (repo.source / "typechange" / "file_becomes_dir" / "inside").write_text("B\n")
        touch(repo.source / "typechange", CHANGED_MTIME)
        repo.publish()
        await export(repo, config, dest, changes, "--workers", workers)
        second = read_changes(changes)
        after = listing.dump(str(dest), FQRN)
        assert len(second) == len(set(second))
        assert set(second) == expected_changes(tree, after)
        assert {("M", "/README.txt"), ("D", "/sw/v2/"), ("A", "/new")} <= set(second)
        assert ("M", "/typechange/dir_becomes_file") in second
        assert ("A", "/typechange/file_becomes_dir/inside") in second

        await repo.export(server, "fresh", "fresh-cache")
    assert tree_problems(tmp_path / "fresh", dest) == []


async def test_a_shard_job_appends_and_a_busy_destination_keeps_the_list(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    dest = tmp_path / "dest"
    changes = tmp_path / "changes.txt"
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        changes.write_text("kept\n")
        await export(repo, config, dest, changes, "--shard", "0/2")
        await export(repo, config, dest, changes, "--shard", "1/2")
        lines = changes.read_text().splitlines()
        assert lines[0] == "kept" and len(lines) > 100
        jobs = set(read_changes_of(lines[1:]))
        await export(repo, config, dest, changes)  # the final pass of the two jobs
        final = set(read_changes(changes))  # emptied first: no "kept"
        tree = listing.dump(str(dest), FQRN)
        in_tree = {("A", "/" + rel) for rel in tree["entries"] if rel not in ("", MARKER_NAME)}
        assert jobs | final == in_tree and not jobs & final

        from shrinkwrap_async.state.lock import RunLock

        changes.write_text("a list another run is writing\n")
        async with RunLock.for_destination(dest):
            spec = repo.base / "all.spec"
            result = await run_cli_process(
                "export", "-r", FQRN, "-f", str(config), "-t", str(spec), "-x", str(dest),
                "--changes", str(changes),
            )  # fmt: skip
        assert result.exit_code == 75, result.stderr
        assert changes.read_text() == "a list another run is writing\n"


async def test_an_unwritable_changes_file_is_a_usage_error(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        result = await run_cli_process(
            "export", "-r", FQRN, "-f", str(config), "-t", str(repo.base / "all.spec"),
            "-x", str(tmp_path / "dest"), "--changes", str(tmp_path / "no" / "such" / "file"),
        )  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "--changes" in result.stderr and "No such file or directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
