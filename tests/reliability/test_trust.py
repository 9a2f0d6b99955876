"""Trust: tampered manifest or whitelist → exit 3, nothing in the tree; bad objects never land."""

from __future__ import annotations

import hashlib
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shrinkwrap_async.testing.nginx import NginxServer

from . import harness as h
from .scenarios import Repo


def _copy(repo: Repo, tmp_path: Path, nginx: NginxServer, fqrn_dir: str) -> Path:
    """A private served copy of ``repo`` (nginx docroot/cvmfs/<fqrn> points at it)."""
    copy = tmp_path / "served"
    shutil.copytree(repo.repository_dir, copy)
    link = nginx.docroot / "cvmfs" / fqrn_dir
    link.unlink()
    link.symlink_to(copy)
    return copy


def _export(repo: Repo, ws: h.Workspace, nginx: NginxServer) -> h.RunResult:
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[nginx.repository_url("@fqrn@")],
        keys_dir=repo.keys_dir,
        cache=ws.cache,
    )
    return h.run_export(h.export_command(repo.fqrn, config, ws.dest, jobs=8))


@pytest.fixture
def served_copy(fault_repo: Repo, tmp_path: Path, nginx: NginxServer) -> Iterator[Path]:
    copy = _copy(fault_repo, tmp_path, nginx, fault_repo.fqrn)
    yield copy
    link = nginx.docroot / "cvmfs" / fault_repo.fqrn
    link.unlink()
    link.symlink_to(fault_repo.repository_dir)


def _no_files(tree: Path) -> bool:
    return not tree.exists() or all(p.name == h.MARKER for p in tree.rglob("*") if not p.is_dir())


@pytest.mark.parametrize("target", [".cvmfspublished", ".cvmfswhitelist"])
def test_tampered_signed_file_exit_3(
    target: str, fault_repo: Repo, served_copy: Path, nginx: NginxServer, tmp_path: Path
) -> None:
    path = served_copy / target
    data = bytearray(path.read_bytes())
    data[3] ^= 0x01  # inside the signed body
    path.write_bytes(bytes(data))
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    run = _export(fault_repo, ws, nginx)
    assert run.returncode == 3, run.describe()
    assert _no_files(ws.dest / fault_repo.fqrn)
    assert ws.sentinel_untouched()


def test_object_with_wrong_content_never_reaches_tree(
    fault_repo: Repo, served_copy: Path, nginx: NginxServer, tmp_path: Path
) -> None:
    index = h.RepositoryIndex(served_copy)
    content_hex, name = next(
        (k, v) for k, v in sorted(index.paths.items()) if k not in index.chunked and "file" in v
    )
    (served_copy / "data" / content_hex[:2] / content_hex[2:]).write_bytes(
        zlib.compress(b"evil replacement\n")
    )
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    run = _export(fault_repo, ws, nginx)
    assert run.returncode == 1, run.describe()
    assert content_hex in run.stderr or name in run.stderr
    affected = [p.relative_to(fault_repo.source) for p in fault_repo.source.rglob(name)]
    for rel in affected:
        assert not (ws.dest / fault_repo.fqrn / rel).exists()
    good = h.RepositoryIndex(fault_repo.repository_dir)
    assert h.unverified_objects(ws.dest / ".data", good) == []


def test_nested_catalog_with_wrong_hash_exit_3(
    fault_repo: Repo, served_copy: Path, nginx: NginxServer, tmp_path: Path
) -> None:
    """Replace a nested catalog's bytes by another valid catalog: the table says exit 3."""
    hashes = h.RepositoryIndex(served_copy).catalogs
    path = lambda x: served_copy / "data" / x[:2] / (x[2:] + "C")  # noqa: E731
    path(hashes[1]).write_bytes(path(hashes[0]).read_bytes())
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    run = _export(fault_repo, ws, nginx)
    assert "Traceback" not in run.stderr, run.describe()
    assert run.returncode == 3, run.describe()


@pytest.mark.parametrize("listed", ["revision", "certificate"])
def test_blacklist_refuses_the_export_exit_3(
    listed: str, fault_repo: Repo, nginx: NginxServer, tmp_path: Path
) -> None:
    """``CVMFS_BLACKLIST`` naming the repository's revision floor or its certificate: the
    export is refused in one line, nothing is written into the tree."""
    ws = h.Workspace(tmp_path / "ws", fault_repo.keys_dir)
    blacklist = tmp_path / "blacklist"
    if listed == "revision":
        blacklist.write_text(f"<{fault_repo.fqrn} 1000\n")
    else:
        stored = next((fault_repo.repository_dir / "data").rglob("*X")).read_bytes()
        pem = x509.load_pem_x509_certificate(zlib.decompress(stored))
        der = pem.public_bytes(serialization.Encoding.DER)
        blacklist.write_text(":".join(f"{b:02X}" for b in hashlib.sha1(der).digest()) + "\n")
    config = h.write_config(
        ws.root / "client.conf",
        server_urls=[nginx.repository_url("@fqrn@")],
        keys_dir=fault_repo.keys_dir,
        cache=ws.cache,
        extra={"CVMFS_BLACKLIST": str(blacklist)},
    )
    run = h.run_export(h.export_command(fault_repo.fqrn, config, ws.dest, jobs=8))
    assert run.returncode == 3, run.describe()
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "blacklisted" in errors[0], run.describe()
    assert _no_files(ws.dest / fault_repo.fqrn)
