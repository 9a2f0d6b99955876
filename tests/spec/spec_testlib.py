"""Helpers shared by the spec tests: small trees and the export's walk over them."""

from __future__ import annotations

import itertools

from shrinkwrap_async.spec.tree import Spec


def tree_from(paths: dict[str, bool]) -> dict[str, bool]:
    """Add the missing ancestors (as directories) and the root to ``{path: is_dir}``."""
    tree = {"": True}
    for path, is_dir in paths.items():
        parts = path.strip("/").split("/")
        for depth in range(1, len(parts)):
            tree["/" + "/".join(parts[:depth])] = True
        tree["/" + "/".join(parts)] = is_dir
    return tree


def full_tree(names: str = "abc", depth: int = 3) -> dict[str, bool]:
    """Every path over ``names`` up to ``depth``; the deepest level are files."""
    tree = {"": True}
    for level in range(1, depth + 1):
        for combo in itertools.product(names, repeat=level):
            tree["/" + "/".join(combo)] = level < depth
    return tree


def walk(spec: Spec, tree: dict[str, bool]) -> set[str]:
    """What an export creates: list only the directories select() descends into."""
    return walk_listing(spec, tree)[0]


def walk_listing(spec: Spec, tree: dict[str, bool]) -> tuple[set[str], set[str]]:
    """The export's walk: what it creates, and the directories it lists."""
    children: dict[str, list[str]] = {}
    for path in tree:
        if path:
            children.setdefault(path.rpartition("/")[0], []).append(path)
    root = spec.select("", is_directory=True)
    if not root.include:
        return set(), set()
    selected = {""}
    listed = {""} if root.descend else set()
    pending = sorted(listed)
    while pending:
        directory = pending.pop()
        for path in sorted(children.get(directory, [])):
            choice = spec.select(path, is_directory=tree[path])
            assert not choice.descend or (choice.include and tree[path])
            if choice.include:
                selected.add(path)
            if choice.descend:
                listed.add(path)
                pending.append(path)
    return selected, listed


def selected_by(text: str, tree: dict[str, bool]) -> set[str]:
    return walk(Spec.parse(text), tree)
