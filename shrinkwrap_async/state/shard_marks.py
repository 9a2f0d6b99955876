"""Marks left by shards that ended complete, for the ordinary export run after them.

A shard (``export --shard K/N``) that ends with exit code 0 has linked every regular file it
owns. It says so with an empty file ``<dest-base>/.provenance/<fqrn>/shards/<run key>/K-of-N``
(written under a temporary name and renamed). The run key is a digest of everything that
decides which object a path is linked to: the root catalog, the spec, the owner mapping and
the object store. When the marks of all N shards of one key are there, the ordinary export
with the same arguments (the final pass, on one node after a job array) knows every file is
in place and walks only the directories, to set their metadata. After a complete ordinary
export the marks are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.state.provenance import PROVENANCE_DIR

MARKS_DIR = "shards"


def run_key(*parts: object) -> str:
    """A digest of the arguments that decide the exported files (see the module docs)."""
    text = "\0".join(str(part) for part in parts)
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


class ShardMarks:
    """The shard marks of one repository in one destination."""

    def __init__(self, dest_base: Path, fqrn: str) -> None:
        self.directory = Path(dest_base) / PROVENANCE_DIR / fqrn / MARKS_DIR

    def record(self, key: str, index: int, count: int) -> None:
        """Shard ``index`` of ``count`` ended complete for ``key``."""
        folder = self.directory / key
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{index}-of-{count}"
        temp = folder / f".{name}.{os.getpid()}.tmp"
        temp.touch()
        os.replace(temp, folder / name)

    def complete(self, key: str) -> int | None:
        """The number of shards N when every shard 0..N-1 of ``key`` left its mark, else None."""
        try:
            names = os.listdir(self.directory / key)
        except (FileNotFoundError, NotADirectoryError):
            return None
        done: dict[int, set[int]] = {}
        for name in names:
            index_text, sep, count_text = name.partition("-of-")
            index, count = decimal_or_none(index_text), decimal_or_none(count_text)
            if sep and index is not None and count is not None:
                done.setdefault(count, set()).add(index)
        for count, indices in sorted(done.items()):
            if count > 0 and indices.issuperset(range(count)):
                return count
        return None

    def clear(self) -> None:
        """Remove every mark of this repository (after a complete ordinary export)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.directory)
