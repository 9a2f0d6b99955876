"""A directory holding many nested catalogs does not keep them all open at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.pipeline import catalog_fetch
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.testing.exporting import publish_and_export

FQRN = "catalogs.test.local"
NESTED = 12


def many_catalogs(root: Path) -> Path:
    for index in range(NESTED):
        sub = root / f"release-{index:02d}"
        (sub / "lib").mkdir(parents=True)
        (sub / ".cvmfscatalog").write_bytes(b"")
        (sub / "lib" / "file.txt").write_text(f"release {index}\n")
    return root


async def export_counting_open_catalogs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> tuple[int, int]:
    """(files exported, most catalogs open or opening at one time) with ``limit``."""
    monkeypatch.setattr(catalog_fetch, "EAGER_OPEN_LIMIT", limit)
    peak = 0
    real_open = catalog_fetch.CatalogOpener._open

    async def counting_open(self, digest, mountpoint):  # type: ignore[no-untyped-def]
        nonlocal peak
        peak = max(peak, self.open_now + self.opening)
        return await real_open(self, digest, mountpoint)

    monkeypatch.setattr(catalog_fetch.CatalogOpener, "_open", counting_open)
    source = many_catalogs(tmp_path / "source")
    dest = tmp_path / f"dest-{limit}"
    [stats] = await publish_and_export(tmp_path, FQRN, source, ["/*\n"], dest=dest)
    assert stats.failures == [] and stats.catalogs == NESTED + 1
    tree = dest / FQRN
    for index in range(NESTED):
        assert (tree / f"release-{index:02d}/lib/file.txt").read_text() == f"release {index}\n"
    return stats.files, peak


async def test_nested_catalogs_beyond_the_limit_are_opened_by_the_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, peak = await export_counting_open_catalogs(tmp_path, monkeypatch, limit=2)
    walkers = ExportOptions(dest_base=tmp_path).walkers
    assert files == 2 * NESTED  # each release's file and its .cvmfscatalog
    assert peak <= 2 + walkers  # the eager ones plus one being opened per walker
    assert peak < NESTED


async def test_without_the_limit_every_catalog_of_the_directory_opens_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the counting sees the eager behaviour when the limit allows it."""
    _, peak = await export_counting_open_catalogs(tmp_path, monkeypatch, limit=1000)
    assert peak > 2 + ExportOptions(dest_base=tmp_path).walkers
