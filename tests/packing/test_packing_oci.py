"""``pack --format oci``: an OCI image layout whose one layer holds ``/cvmfs/<fqrn>``.

The real fixtures are exported and packed, and the layout is checked as a reader would:
every blob's name is the SHA-256 of its bytes and its size the descriptor's, the layer's
uncompressed digest is the config's ``diff_id``, and the layer holds the members of the
tarball ``pack`` writes, moved below ``cvmfs/``. Where umoci is installed (``.ci/run``
installs it) the image is unpacked by it and compared with the export.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from shrinkwrap_async.packing.entries import MARKER_NAME
from shrinkwrap_async.packing.oci import MEDIA_LAYERS, MEDIA_MANIFEST
from shrinkwrap_async.testing.command_line import run_cli
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, SourceNode
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import fixtures_dir, write_client_config

SPECS = fixtures_dir() / "specs"
HAVE_UMOCI = shutil.which("umoci") is not None


def _blob(layout: Path, descriptor: dict) -> bytes:
    algorithm, _, hex_digest = descriptor["digest"].partition(":")
    assert algorithm == "sha256"
    data = (layout / "blobs" / "sha256" / hex_digest).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hex_digest
    assert len(data) == descriptor["size"]
    return data


def read_layout(layout: Path, ref: str = "latest") -> tuple[dict, dict, dict, bytes]:
    """(index entry, manifest, config, uncompressed layer) of a layout, each digest checked."""
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == ref
    assert entry["platform"]["os"] == "linux" and entry["platform"]["architecture"]
    manifest = json.loads(_blob(layout, entry))
    assert manifest["mediaType"] == entry["mediaType"] == MEDIA_MANIFEST
    config = json.loads(_blob(layout, manifest["config"]))
    [layer] = manifest["layers"]
    stored = _blob(layout, layer)
    if layer["mediaType"] == MEDIA_LAYERS["gzip"]:
        content = gzip.decompress(stored)
    elif layer["mediaType"] == MEDIA_LAYERS["zstd"]:
        import zstandard

        content = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    else:
        assert layer["mediaType"] == MEDIA_LAYERS["none"]
        content = stored
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": [f"sha256:{hashlib.sha256(content).hexdigest()}"],
    }
    assert config["os"] == "linux" and config["architecture"] == entry["platform"]["architecture"]
    blobs = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    wanted = [manifest["config"]["digest"], layer["digest"], entry["digest"]]
    assert blobs == sorted(d.partition(":")[2] for d in wanted), "stray or missing blobs"
    return entry, manifest, config, content


def members(archive: bytes, strip: str = "") -> dict[str, tuple]:
    """Each member's attributes and content hash, names with ``strip`` removed."""
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            name = "" if member.name == strip.rstrip("/") else member.name[len(strip) :]
            assert name == "" or member.name.startswith(strip), member.name
            content = tar.extractfile(member).read() if member.isreg() else b""
            link = member.linkname[len(strip) :] if member.islnk() else member.linkname
            found[name] = (
                member.type, member.mode, member.uid, member.gid, member.mtime, member.size,
                link, member.devmajor, member.devminor, hashlib.sha256(content).hexdigest(),
            )  # fmt: skip
    return found


async def _export(tmp_path: Path, server: StaticServer, fqrn: str, spec: str) -> tuple[Path, Path]:
    config = write_client_config(tmp_path, server.url, fixtures_dir() / "keys")
    base = tmp_path / "export"
    assert await run_cli("export", "-q", "--no-progress", "-r", fqrn, "-f", str(config),
                         "-t", str(SPECS / fqrn / spec), "-x", str(base)) == 0  # fmt: skip
    return base, config


@pytest.mark.parametrize(
    ("fqrn", "compression"),
    [("fix1.test.local", "gzip"), ("fix3.test.local", "zstd"), ("fix2.test.local", "none")],
)
async def test_layout_holds_the_tarball_below_cvmfs(
    fixture_server: StaticServer, tmp_path: Path, fqrn: str, compression: str
) -> None:
    base, _ = await _export(tmp_path, fixture_server, fqrn, "all.spec")
    tarball, layout = tmp_path / "plain.tar", tmp_path / "image"
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "-o", str(tarball)) == 0
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci",
                         "--compress", compression, "-o", str(layout)) == 0  # fmt: skip

    _, manifest, config, layer = read_layout(layout)
    assert manifest["layers"][0]["mediaType"] == MEDIA_LAYERS[compression]
    packed = members(layer, strip="cvmfs/")
    top = packed.pop("")
    assert top[:5] == (tarfile.DIRTYPE, 0o755, 0, 0, top[4])
    assert packed == members(tarball.read_bytes())
    record = json.loads((base / ".provenance" / fqrn / "export.json").read_text())
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.version"] == str(record["revision"])
    assert annotations["org.opencontainers.image.revision"] == record["root_hash"]
    assert annotations["org.opencontainers.image.title"] == f"/cvmfs/{fqrn}"
    assert {k: v for k, v in annotations.items() if k != "org.opencontainers.image.created"} == (
        config["config"]["Labels"]
    )


async def test_streamed_layout_is_the_exports_and_packs_reproducibly(
    fixture_server: StaticServer, tmp_path: Path
) -> None:
    """One revision and spec give one manifest digest: from the export, streamed from the
    repository, and again (the reference name lives in the index, not in the image)."""
    fqrn = "fix1.test.local"
    base, config = await _export(tmp_path, fixture_server, fqrn, "partial.spec")
    spec = SPECS / fqrn / "partial.spec"
    layouts = {name: tmp_path / name for name in ("from-export", "streamed", "again")}
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci",
                         "-o", str(layouts["from-export"])) == 0  # fmt: skip
    for name in ("streamed", "again"):
        assert await run_cli("pack", "-q", "-r", fqrn, "-f", str(config), "-t", str(spec),
                             "--format", "oci", "--oci-ref", f"r-{name}",
                             "-o", str(layouts[name])) == 0  # fmt: skip
    digests = {}
    for name, layout in layouts.items():
        entry, *_ = read_layout(layout, "latest" if name == "from-export" else f"r-{name}")
        digests[name] = entry["digest"]
    assert digests["from-export"] == digests["streamed"] == digests["again"]
    # Packing over an earlier layout replaces it (no stray blobs: read_layout checks).
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci",
                         "--all-root", "-o", str(layouts["again"])) == 0  # fmt: skip
    read_layout(layouts["again"])
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.skipif(not HAVE_UMOCI, reason="umoci not installed")
async def test_umoci_unpacks_the_export(fixture_server: StaticServer, tmp_path: Path) -> None:
    fqrn = "fix1.test.local"
    base, _ = await _export(tmp_path, fixture_server, fqrn, "all.spec")
    layout = tmp_path / "image"
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci",
                         "-o", str(layout)) == 0  # fmt: skip
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest", str(bundle)],
                   check=True, capture_output=True)  # fmt: skip
    unpacked = bundle / "rootfs" / "cvmfs" / fqrn
    exported = base / fqrn
    compared = subprocess.run(["diff", "-r", "--no-dereference", str(exported), str(unpacked)],
                              capture_output=True, text=True)  # fmt: skip
    assert compared.returncode == 0, compared.stdout[-2000:]
    for path in exported.rglob("*"):
        twin = unpacked / path.relative_to(exported)
        assert path.lstat().st_mode == twin.lstat().st_mode, path
        if not path.is_symlink() and path.name != MARKER_NAME:  # the marker: the pack's time
            assert int(path.stat().st_mtime) == int(twin.stat().st_mtime), path
    assert (unpacked / "hard" / "a").stat().st_ino == (unpacked / "hard" / "b").stat().st_ino


async def test_refusals_leave_nothing_behind(fixture_server: StaticServer, tmp_path: Path) -> None:
    fqrn = "fix1.test.local"
    base, _ = await _export(tmp_path, fixture_server, fqrn, "partial.spec")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    common = ["pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci"]
    assert await run_cli(*common, "-o", str(occupied)) == 5
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert await run_cli(*common, "-o", "-") == 2
    assert await run_cli(*common, "--oci-ref", "bad ref", "-o", str(tmp_path / "x")) == 2
    assert await run_cli(*common, "--compress", "zstd",
                         "-o", str(tmp_path / "y")) == 0  # fmt: skip
    assert not (tmp_path / "x").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


async def test_a_whiteout_name_is_refused_and_all_root(tmp_path: Path) -> None:
    """A repository file named like a whiteout would delete files of the lower layers; the
    catalog's owners are kept unless --all-root."""
    fqrn = "whiteout.test.local"
    content = tmp_path / "content"
    content.write_bytes(b"fine\n")

    def node(name: str, kind: str = "file", children: list | None = None) -> SourceNode:
        mode = 0o40755 if kind == "dir" else 0o100644
        size = 0 if kind == "dir" else 5
        stored = None if kind == "dir" else str(content)
        return SourceNode(name, kind, mode, 1_700_000_000, uid=4321, gid=4322, size=size,
                          children=children, content=stored)  # fmt: skip

    tree = node("", "dir", [node("ok.txt"), node("lib", "dir", [node(".wh.libc.so")])])
    publisher = Publisher(tmp_path / "server", fqrn, PublishOptions(workers=1))
    key = publisher.publish(tree).public_key
    async with StaticServer(tmp_path / "server") as server:
        config = tmp_path / "client.conf"
        url = server.repository_url("@fqrn@")
        config.write_text(f"CVMFS_SERVER_URL={url}\nCVMFS_PUBLIC_KEY={key}\n"
                          f"CVMFS_CACHE_BASE={tmp_path / 'cache'}\n")  # fmt: skip
        spec = tmp_path / "spec"
        spec.write_text("/*\n")
        source = ["-r", fqrn, "-f", str(config), "-t", str(spec)]
        layout = tmp_path / "image"
        assert await run_cli("pack", "-q", *source, "--format", "oci", "-o", str(layout)) == 2
        assert not layout.exists()
        assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
        spec.write_text("/*\n!/lib/.wh.libc.so\n")
        assert await run_cli("pack", "-q", *source, "--format", "oci", "-o", str(layout)) == 0
        _, _, _, layer = read_layout(layout)
        packed = members(layer, strip="cvmfs/")
        assert packed[f"{fqrn}/ok.txt"][2:4] == (4321, 4322)
        rooted = tmp_path / "rooted"
        assert await run_cli("pack", "-q", *source, "--format", "oci", "--all-root",
                             "-o", str(rooted)) == 0  # fmt: skip
        _, _, _, layer = read_layout(rooted)
        assert {m[2:4] for m in members(layer, strip="cvmfs/").values()} == {(0, 0)}
