"""Paths of equal content and metadata share one inode, so one mtime: that of the first of
them in cvmfs_shrinkwrap's walk, whichever order this export fetched and linked them in."""

from __future__ import annotations

import os
import random
from pathlib import Path

from shrinkwrap_async.link.shared_mtimes import walk_order_key
from shrinkwrap_async.testing.exporting import publish_and_export

FQRN = "mtimes.test.local"
BASE = 1_700_000_000

# Groups of paths with one content; each path's mtime is BASE + its index in the group.
# The last item is the index of the path the real tool's walk reaches first.
GROUPS: list[tuple[list[str], int]] = [
    (["a/f", "b/f"], 1),  # sibling directories: reverse byte order
    (["a/g", "b/sub/g"], 1),  # depth does not matter, only the order of siblings
    (["b/h", "b/sub/h"], 0),  # a directory's own files before its subdirectories
    (["a/k", "k"], 1),  # the root's files before everything
    (["ab/m", "a/m"], 0),  # "ab" after "a" in byte order, so walked before it
    (["c/x1", "c/x0", "c/deep/er/x2"], 1),  # files of one directory in byte order
]


def write_groups(root: Path) -> Path:
    for number, (paths, _) in enumerate(GROUPS):
        for index, rel in enumerate(paths):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"content of group {number}\n")
            os.utime(path, (BASE + index, BASE + index))
    return root


async def export_in_order(tmp_path: Path, specs: list[str], jobs: int = 4) -> Path:
    """Export ``specs`` one after the other into one destination; returns the tree."""
    source = write_groups(tmp_path / "source")
    for stats in await publish_and_export(tmp_path, FQRN, source, specs, max_in_flight=jobs):
        assert stats.failures == []
    return tmp_path / "dest" / FQRN


def group_mtimes(tree: Path) -> list[int]:
    """The one mtime of each group's shared inode (checked to be one inode)."""
    result = []
    for paths, _ in GROUPS:
        stats = [os.stat(tree / rel) for rel in paths]
        assert len({(st.st_dev, st.st_ino) for st in stats}) == 1
        result.append(int(stats[0].st_mtime))
    return result


async def test_shared_inode_has_the_mtime_of_the_first_path_in_the_walk(tmp_path: Path) -> None:
    tree = await export_in_order(tmp_path, ["/*\n"])
    assert group_mtimes(tree) == [BASE + first for _, first in GROUPS]


async def test_the_walk_order_holds_at_one_fetch_at_a_time(tmp_path: Path) -> None:
    tree = await export_in_order(tmp_path, ["/*\n"], jobs=1)
    assert group_mtimes(tree) == [BASE + first for _, first in GROUPS]


async def test_an_object_made_by_an_earlier_run_keeps_its_mtime(tmp_path: Path) -> None:
    """As with cvmfs_shrinkwrap's incremental runs: the paths added later link the object
    without touching it."""
    tree = await export_in_order(tmp_path, ["/a/*\n", "/*\n"])

    def creator(paths: list[str], first: int) -> int:
        """The path exported by the first run if the group has one, else the walk's first."""
        return next((i for i, rel in enumerate(paths) if rel.startswith("a/")), first)

    from_a = [BASE + creator(paths, first) for paths, first in GROUPS]
    assert group_mtimes(tree) == from_a


def stack_walk(tree: dict[str, object]) -> list[tuple[str, ...]]:
    """The file paths of ``tree`` in cvmfs_shrinkwrap's order: a stack of directories; a
    directory's entries in byte order, files at once, subdirectories pushed."""
    order: list[tuple[str, ...]] = []
    stack: list[tuple[tuple[str, ...], dict[str, object]]] = [((), tree)]
    while stack:
        rel, directory = stack.pop()
        for name in sorted(directory, key=lambda n: n.encode()):
            child = directory[name]
            if isinstance(child, dict):
                stack.append(((*rel, name), child))
            else:
                order.append((*rel, name))
    return order


def random_tree(rng: random.Random, depth: int) -> dict[str, object]:
    alphabet = ["a", "b", "ab", "ba", "a.b", "A", "é", "x-1", "x_1", "aa", "b0"]
    tree: dict[str, object] = {}
    for name in rng.sample(alphabet, rng.randint(1, 6)):
        tree[name] = random_tree(rng, depth - 1) if depth and rng.random() < 0.5 else None
    return tree


def test_walk_order_key_sorts_paths_as_the_stack_walk_visits_them() -> None:
    rng = random.Random(7)
    for _ in range(200):
        order = stack_walk(random_tree(rng, depth=4))
        assert sorted(order, key=walk_order_key) == order
