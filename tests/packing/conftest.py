"""Fixtures of the packing tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from _packtree import build_export


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """A hand-made export base (``build_export``) holding the tree of ``_packtree.FQRN``."""
    base = tmp_path / "export"
    build_export(base)
    return base
