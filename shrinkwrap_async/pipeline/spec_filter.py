"""Spec-filter stage: which entries of a directory listing are created, and which are walked.

Kept inline in the walker (a dictionary lookup per entry is cheaper than a queue hop), but
isolated here so the rules live in one place: hidden entries and bind mountpoints are never
exported, and names that could escape the destination are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from shrinkwrap_async.catalogs.entry import DirEntry
from shrinkwrap_async.link.tree_writer import validate_name
from shrinkwrap_async.spec.tree import Selection, Spec


def select_children(
    spec: Spec, entries: Iterable[DirEntry]
) -> Iterator[tuple[DirEntry, Selection]]:
    """Entries to create, with their selection (``descend`` only for walkable directories)."""
    for entry in entries:
        validate_name(entry.name)
        if entry.is_hidden:
            continue
        selection = spec.select(entry.path, is_directory=entry.is_directory)
        if not (selection.include or selection.descend):
            continue
        if entry.is_bind_mountpoint:
            selection = Selection(True, False)
        yield entry, selection
