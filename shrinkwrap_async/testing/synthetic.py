"""Generated benchmark repositories (seeded, deterministic), built without a tree on disk.

``reference`` is the repository of the benchmark issue: 20,000 files in 10 release
directories, each a nested catalog (``release-NN/pkgNN/subN/fileNNNNNN.dat``); log-normal
sizes with median 8 KiB and mean 32 KiB (mu = ln 8192, sigma = sqrt(2 ln 4)) capped at
64 MiB; half the files base64 of random bytes, half a mix of short words; 10 % repeat an
earlier file's content. ``small``, ``medium`` and ``large`` (10k, 100k, 1M files) use the
same shape with a mean near 64 KiB, plus symlinks, a hard-link group and a few chunked
files of tens of MiB. ``large-small`` is ``large``'s tree (1M files, same directories,
extras and chunked files) with small files (median 1 KiB, mean 2 KiB), so that the 1M-file
case fits in a few GB of disk: the memory and per-file costs at 1M files, not the bytes.
``large-small-deep`` is ``large-small`` with the releases in one nested catalog, ``/sw``, as
the releases of sft.cern.ch lie below ``/lcg/releases``: every change lies below one
catalog right under the root.

Content is produced on demand by picklable :class:`GeneratedContent` objects, so the
publisher's worker processes generate and compress it in parallel.
"""

from __future__ import annotations

import base64
import math
import random
from dataclasses import dataclass

from shrinkwrap_async.testing.publish import SourceNode

MTIME = 1_700_000_000
_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "lib",
    "include",
    "share",
    "bin",
    "data",
    "event",
    "track",
    "hit",
    "jet",
    "muon",
    "run",
    "config",
    "value",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "build",
    "test",
    "release",
    "module",
    "cern",
    "vm",
    "fs",
    "file",
    "system",
    "python",
    "root",
    "geant",
    "det",
    "sim",
    "reco",
    "calib",
    "cond",
    "db",
]
_WORD_POOL_SIZE = 1 << 20


@dataclass(frozen=True)
class Profile:
    files: int
    releases: int
    packages: int
    subdirs: int
    median: int
    mean: int
    cap: int = 64 << 20
    duplicate_fraction: float = 0.10
    big_files: int = 0  # extra files of tens of MiB (chunked)
    extras: bool = False  # symlinks and a hard-link group per release
    under: str = ""  # a directory, a nested catalog, holding the releases ("": the root)


PROFILES: dict[str, Profile] = {
    "reference": Profile(20_000, 10, 10, 4, 8192, 32768),
    "small": Profile(10_000, 10, 10, 4, 16384, 65536, big_files=2, extras=True),
    "medium": Profile(100_000, 20, 20, 5, 16384, 65536, big_files=4, extras=True),
    "large": Profile(1_000_000, 50, 40, 10, 16384, 65536, big_files=8, extras=True),
    "large-small": Profile(1_000_000, 50, 40, 10, 1024, 2048, big_files=8, extras=True),
    "large-small-deep": Profile(
        1_000_000, 50, 40, 10, 1024, 2048, big_files=8, extras=True, under="sw"
    ),
}


_word_pool_cache: dict[int, bytes] = {}


def _word_pool(seed: int) -> bytes:
    pool = _word_pool_cache.get(seed)
    if pool is None:
        rng = random.Random(f"words-{seed}")
        words = rng.choices(_WORDS, k=_WORD_POOL_SIZE // 4)
        pool = " ".join(words).encode()[:_WORD_POOL_SIZE]
        _word_pool_cache[seed] = pool
    return pool


@dataclass(frozen=True, slots=True)
class GeneratedContent:
    """Deterministic content: ``kind`` "random" (base64 of random bytes) or "words"."""

    seed: int
    index: int
    size: int
    kind: str

    def __call__(self) -> bytes:
        rng = random.Random(self.seed * 1_000_003 + self.index)
        if self.size == 0:
            return b""
        if self.kind == "random":
            raw = rng.randbytes(self.size * 3 // 4 + 3)
            return base64.b64encode(raw)[: self.size]
        pool = _word_pool(self.seed)
        parts = []
        total = 0
        while total < self.size:
            start = rng.randrange(0, len(pool) - 4096)
            piece = pool[start : start + rng.randrange(64, 4096)]
            parts.append(piece)
            total += len(piece)
        return b"".join(parts)[: self.size]


def _sizes(profile: Profile, rng: random.Random) -> list[int]:
    mu = math.log(profile.median)
    sigma = math.sqrt(2 * math.log(profile.mean / profile.median))
    return [min(profile.cap, int(rng.lognormvariate(mu, sigma))) for _ in range(profile.files)]


def _directory(name: str, children: list[SourceNode] | None = None) -> SourceNode:
    return SourceNode(name=name, kind="dir", mode=0o40755, mtime=MTIME, children=children or [])


def _file(name: str, content: GeneratedContent, mode: int = 0o100644) -> SourceNode:
    return SourceNode(
        name=name, kind="file", mode=mode, mtime=MTIME, size=content.size, content=content
    )


def _catalog_marker(seed: int) -> SourceNode:
    """The empty ``.cvmfscatalog`` that makes its directory a nested catalog."""
    return _file(".cvmfscatalog", GeneratedContent(seed, -1, 0, "words"))


def build_profile(name: str, seed: int = 1) -> SourceNode:
    """The tree of profile ``name`` (``KeyError`` with a message for unknown names)."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
    return build_tree(profile, seed)


def build_tree(profile: Profile, seed: int) -> SourceNode:
    rng = random.Random(seed)
    sizes = _sizes(profile, rng)
    contents: list[GeneratedContent] = []
    for index, size in enumerate(sizes):
        if index > 0 and rng.random() < profile.duplicate_fraction:
            contents.append(contents[rng.randrange(index)])
        else:
            kind = "random" if rng.random() < 0.5 else "words"
            contents.append(GeneratedContent(seed, index, size, kind))
    root = _directory("")
    per_release = math.ceil(profile.files / profile.releases)
    per_package = math.ceil(per_release / profile.packages)
    per_subdir = max(1, math.ceil(per_package / profile.subdirs))
    index = 0
    for release_number in range(profile.releases):
        release = _directory(f"release-{release_number:02d}")
        release.children.append(_catalog_marker(seed))  # type: ignore[union-attr]
        root.children.append(release)  # type: ignore[union-attr]
        for package_number in range(profile.packages):
            package = _directory(f"pkg{package_number:02d}")
            release.children.append(package)  # type: ignore[union-attr]
            for sub_number in range(profile.subdirs):
                if index >= profile.files:
                    break
                sub = _directory(f"sub{sub_number}")
                package.children.append(sub)  # type: ignore[union-attr]
                for _ in range(per_subdir):
                    if index >= profile.files:
                        break
                    sub.children.append(_file(f"file{index:06d}.dat", contents[index]))  # type: ignore[union-attr]
                    index += 1
        if profile.extras:
            _add_extras(release, seed, release_number)
    for number in range(profile.big_files):
        size = rng.randrange(20 << 20, 60 << 20)
        big = _file(f"big{number}.bin", GeneratedContent(seed, 10_000_000 + number, size, "random"))
        root.children[number % profile.releases].children.append(big)  # type: ignore[union-attr]
    if profile.under:
        holder = _directory(profile.under, root.children)
        holder.children.append(_catalog_marker(seed))  # type: ignore[union-attr]
        root = _directory("", [holder])
    return root


def _add_extras(release: SourceNode, seed: int, number: int) -> None:
    assert release.children is not None
    release.children.append(
        SourceNode(name="latest", kind="symlink", mode=0o120777, mtime=MTIME, target="pkg00")
    )
    release.children.append(
        SourceNode(
            name="arch", kind="symlink", mode=0o120777, mtime=MTIME, target="$(CVMFS_ARCH:-x86_64)"
        )
    )
    content = GeneratedContent(seed, 20_000_000 + number, 4096, "words")
    for name in ("linked-a", "linked-b"):
        node = _file(name, content)
        node.inode = (0, 20_000_000 + number)
        node.nlink = 2
        release.children.append(node)
