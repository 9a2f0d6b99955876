"""Shards write one tree at once: a directory made by another shard between our lstat and
mkdir is accepted, and a shard's prune leaves other processes' temp names alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shrinkwrap_async.exitcodes import StorageError
from shrinkwrap_async.link import tree_writer
from shrinkwrap_async.link.tree_writer import TreeWriter, is_temp_name


def test_directory_made_meanwhile_is_accepted(tmp_path: Path, monkeypatch) -> None:
    with TreeWriter(tmp_path / "tree", chown=False) as writer:
        real_lstat = TreeWriter._lstat

        def racing_lstat(parent: int, name: str) -> os.stat_result | None:
            found = real_lstat(parent, name)
            if name in ("d", "f"):  # another shard makes it right after our look
                if name == "d":
                    os.mkdir(name, dir_fd=parent)
                else:
                    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, dir_fd=parent))
            return found

        monkeypatch.setattr(TreeWriter, "_lstat", staticmethod(racing_lstat))
        writer.make_directory(("d",))
        assert (tmp_path / "tree" / "d").is_dir()
        with pytest.raises(StorageError, match="File exists"):
            writer.make_directory(("f",))  # a file in the way is not a race to accept


def test_shard_prune_keeps_temp_names(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    with TreeWriter(tree, chown=False) as writer:
        writer.make_directory(("d",))
        temp = tree_writer._temp_name()
        assert is_temp_name(temp)
        for name in (temp, "stale"):
            (tree / "d" / name).write_text("x")
        assert writer.prune(("d",), [], keep_temps=True) == ["stale"]
        assert os.listdir(tree / "d") == [temp]
        assert writer.prune(("d",), []) == [temp]
