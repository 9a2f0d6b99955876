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
from shrinkwrap_async.packing.oci import MEDIA_LAYERS, MEDIA_MANIFEST, host_architecture
from shrinkwrap_async.testing.command_line import run_cli, run_cli_process
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


def _uncompressed(layout: Path, layer: dict) -> bytes:
    stored = _blob(layout, layer)
    if layer["mediaType"] == MEDIA_LAYERS["gzip"]:
        return gzip.decompress(stored)
    if layer["mediaType"] == MEDIA_LAYERS["zstd"]:
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(stored)
    assert layer["mediaType"] == MEDIA_LAYERS["none"]
    return stored


def read_layout(layout: Path, ref: str = "latest") -> tuple[dict, dict, dict, bytes]:
    """(index entry, manifest, config, uncompressed top layer) of a layout, each digest
    checked, every layer's uncompressed digest against the config's ``diff_ids``."""
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == ref
    assert entry["platform"]["os"] == "linux" and entry["platform"]["architecture"]
    manifest = json.loads(_blob(layout, entry))
    assert manifest["mediaType"] == entry["mediaType"] == MEDIA_MANIFEST
    config = json.loads(_blob(layout, manifest["config"]))
    contents = [_uncompressed(layout, layer) for layer in manifest["layers"]]
    assert config["rootfs"] == {
        "type": "layers",
        "diff_ids": [f"sha256:{hashlib.sha256(content).hexdigest()}" for content in contents],
    }
    assert config["os"] == "linux" and config["architecture"] == entry["platform"]["architecture"]
    blobs = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    layers = [layer["digest"] for layer in manifest["layers"]]
    wanted = [manifest["config"]["digest"], *layers, entry["digest"]]
    assert blobs == sorted(d.partition(":")[2] for d in wanted), "stray or missing blobs"
    return entry, manifest, config, contents[-1]


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


def _published_source(tmp_path: Path, server: StaticServer, key: Path) -> tuple[Path, Path]:
    """A client config for a repository of the test publisher, and the spec ``/*``."""
    config, spec = tmp_path / "client.conf", tmp_path / "spec"
    url, cache = server.repository_url("@fqrn@"), tmp_path / "cache"
    config.write_text(f"CVMFS_SERVER_URL={url}\nCVMFS_PUBLIC_KEY={key}\nCVMFS_CACHE_BASE={cache}\n")
    spec.write_text("/*\n")
    return config, spec


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


def _images(layout: Path) -> dict[str, str]:
    """Reference name -> manifest digest of every image of a layout, each image's blobs
    checked; no blob is there that no image reaches."""
    index = json.loads((layout / "index.json").read_text())
    images, reached = {}, set()
    for entry in index["manifests"]:
        manifest = json.loads(_blob(layout, entry))
        config = json.loads(_blob(layout, manifest["config"]))
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
        for layer in manifest["layers"]:
            _blob(layout, layer)
        reached |= {d["digest"][7:] for d in (entry, manifest["config"], *manifest["layers"])}
        images[entry["annotations"]["org.opencontainers.image.ref.name"]] = entry["digest"]
    assert sorted(p.name for p in (layout / "blobs" / "sha256").iterdir()) == sorted(reached)
    return images


async def test_a_layout_collects_images_and_drops_what_a_replaced_one_alone_used(
    fixture_server: StaticServer, tmp_path: Path
) -> None:
    """As with skopeo and umoci, packing into an earlier layout adds the image, or replaces
    the one of the same name; blobs only a replaced image used go with it, shared ones stay
    (hard links, not copies)."""
    fqrn = "fix1.test.local"
    base, _ = await _export(tmp_path, fixture_server, fqrn, "partial.spec")
    layout = tmp_path / "images"
    common = ["pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci", "-o", str(layout)]
    assert await run_cli(*common, "--oci-ref", "plain") == 0
    first = _images(layout)
    assert await run_cli(*common, "--oci-ref", "other", "--compress", "zstd") == 0
    both = _images(layout)
    assert both["plain"] == first["plain"] and both["other"] != both["plain"]
    plain_blobs = {p.name: p.stat().st_ino for p in (layout / "blobs" / "sha256").iterdir()}
    assert await run_cli(*common, "--oci-ref", "other", "--compress", "none") == 0
    replaced = _images(layout)  # the zstd layer is gone with the image it belonged to
    assert replaced["plain"] == first["plain"] and replaced["other"] != both["other"]
    kept = {p.name: p.stat().st_ino for p in (layout / "blobs" / "sha256").iterdir()}
    assert all(kept[name] == plain_blobs[name] for name in kept if name in plain_blobs)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    if HAVE_UMOCI:
        for ref in ("plain", "other"):
            bundle = tmp_path / f"bundle-{ref}"
            subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:{ref}",
                            str(bundle)], check=True, capture_output=True)  # fmt: skip
            assert (bundle / "rootfs" / "cvmfs" / fqrn / "README.txt").is_file()
    # A layout whose index cannot be read is not added to (nor replaced): exit 5.
    (layout / "index.json").write_text("{")
    assert await run_cli(*common, "--oci-ref", "third") == 5
    assert (layout / "index.json").read_text() == "{"


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
        config, spec = _published_source(tmp_path, server, key)
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


def _put(layout: Path, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_base_layout(layout: Path, *, docker_types: bool = False, platforms: bool = False) -> str:
    """A small base image written here with tarfile and json (as skopeo would leave one): one
    layer with /etc/os-release and /bin/tool, an environment and a command. Returns the ref.
    ``platforms`` puts it in an index of two platforms (the other one's blobs absent)."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in (("etc/os-release", b"ID=test\n", 0o644),
                                 ("bin/tool", b"#!/bin/sh\necho tool\n", 0o755)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    layer_tar = raw.getvalue()
    layer = _put(layout, gzip.compress(layer_tar, mtime=0))
    config = _put(layout, json.dumps({
        "architecture": host_architecture(), "os": "linux",
        "config": {"Env": ["PATH=/bin", "SITE=base"], "Cmd": ["/bin/tool"],
                   "Labels": {"base.label": "kept"}},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
        "history": [{"created_by": "base layer"}],
    }).encode())  # fmt: skip
    types = {
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
    } if docker_types else {
        "manifest": MEDIA_MANIFEST,
        "config": "application/vnd.oci.image.config.v1+json",
        "layer": MEDIA_LAYERS["gzip"],
    }  # fmt: skip
    manifest = _put(layout, json.dumps({
        "schemaVersion": 2, "mediaType": types["manifest"],
        "config": {"mediaType": types["config"], **config},
        "layers": [{"mediaType": types["layer"], **layer}],
    }).encode())  # fmt: skip
    entry = {"mediaType": types["manifest"], **manifest}
    if platforms:
        other = {"mediaType": MEDIA_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1,
                 "platform": {"architecture": "s390x-not-this", "os": "linux"}}  # fmt: skip
        mine = {**entry, "platform": {"architecture": host_architecture(), "os": "linux"}}
        entry = {"mediaType": "application/vnd.oci.image.index.v1+json", **_put(layout, json.dumps(
            {"schemaVersion": 2, "manifests": [other, mine]}).encode())}  # fmt: skip
    index = {"schemaVersion": 2, "manifests": [
        {**entry, "annotations": {"org.opencontainers.image.ref.name": "9"}},
        {**entry, "annotations": {"org.opencontainers.image.ref.name": "9.1"}},
    ]}  # fmt: skip
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return "9"


@pytest.mark.parametrize("kind", ["oci", "docker-types", "platforms"])
async def test_on_a_base_image_the_layer_goes_on_top_and_the_settings_stay(
    fixture_server: StaticServer, tmp_path: Path, kind: str
) -> None:
    fqrn = "fix1.test.local"
    base, _ = await _export(tmp_path, fixture_server, fqrn, "partial.spec")
    base_layout = tmp_path / "base-image"
    ref = write_base_layout(
        base_layout, docker_types=kind == "docker-types", platforms=kind == "platforms"
    )
    layout = tmp_path / "image"
    common = ["pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci", "-o", str(layout)]
    assert await run_cli(*common, "--oci-base", f"{base_layout}:{ref}") == 0
    _, manifest, config, top = read_layout(layout)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [MEDIA_LAYERS["gzip"]] * 2
    assert config["config"]["Env"] == ["PATH=/bin", "SITE=base"]
    assert config["config"]["Cmd"] == ["/bin/tool"]
    assert config["config"]["Labels"]["base.label"] == "kept"
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == f"/cvmfs/{fqrn}"
    assert [h["created_by"] for h in config["history"]] == [
        "base layer",
        f"shrinkwrap-async pack /cvmfs/{fqrn}",
    ]
    assert f"{fqrn}/README.txt" in members(top, strip="cvmfs/")
    if HAVE_UMOCI:
        bundle = tmp_path / "bundle"
        subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest",
                        str(bundle)], check=True, capture_output=True)  # fmt: skip
        rootfs = bundle / "rootfs"
        assert (rootfs / "etc" / "os-release").read_bytes() == b"ID=test\n"
        assert (rootfs / "bin" / "tool").stat().st_mode & 0o777 == 0o755
        assert (rootfs / "cvmfs" / fqrn / "README.txt").read_bytes() == (
            base / fqrn / "README.txt"
        ).read_bytes()
        runtime = json.loads((bundle / "config.json").read_text())
        assert "SITE=base" in runtime["process"]["env"]
        assert runtime["process"]["args"] == ["/bin/tool"]


async def test_a_wrong_base_image_fails_before_anything_is_written(
    fixture_server: StaticServer, tmp_path: Path
) -> None:
    fqrn = "fix1.test.local"
    base, config = await _export(tmp_path, fixture_server, fqrn, "partial.spec")
    base_layout = tmp_path / "base-image"
    write_base_layout(base_layout)
    layout = tmp_path / "image"
    common = ["pack", "-x", str(base), "-r", fqrn, "--format", "oci", "-o", str(layout)]
    # Two references and none named; a reference the layout lacks; not a layout at all.
    for wrong in (str(base_layout), f"{base_layout}:8", str(tmp_path)):
        result = await run_cli_process(*common, "--oci-base", wrong)
        assert result.exit_code == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (
        "references there: 9, 9.1"
        in (await run_cli_process(*common, "--oci-base", str(base_layout))).stderr
    )
    # Malformed layouts: a layer descriptor that is not an object, a digest that is a path.
    for layers in (["oops"], [{"digest": "sha256:../../../etc/passwd", "size": 1}]):
        bad = tmp_path / f"bad-{len(str(layers))}"
        (bad / "blobs" / "sha256").mkdir(parents=True)
        rootfs = {"rootfs": {"diff_ids": ["sha256:" + "1" * 64]}}
        bad_config = _put(bad, json.dumps(rootfs).encode())
        manifest = _put(bad, json.dumps({"config": bad_config, "layers": layers}).encode())
        (bad / "index.json").write_text(json.dumps({"manifests": [manifest]}))
        (bad / "oci-layout").write_text("{}")
        result = await run_cli_process(*common, "--oci-base", str(bad))
        assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result
    # A layer of the base that does not match its digest.
    _, manifest, _ = _base_parts(base_layout)
    layer_file = base_layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    damaged = bytearray(layer_file.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    layer_file.write_bytes(bytes(damaged))
    result = await run_cli_process(*common, "--oci-base", f"{base_layout}:9")
    assert result.exit_code == 2 and "does not match its digest" in result.stderr
    assert not layout.exists()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # Streamed from the repository: the damaged layer is found before any file is fetched.
    before = fixture_server.requests.copy()
    spec = str(SPECS / fqrn / "partial.spec")
    streamed = await run_cli_process("pack", "-r", fqrn, "-f", str(config), "-t", spec,
                                     "--format", "oci", "--oci-base", f"{base_layout}:9",
                                     "-o", str(layout))  # fmt: skip
    assert streamed.exit_code == 2 and "does not match its digest" in streamed.stderr
    fetched = [path for path in fixture_server.requests - before if "/data/" in path]
    assert not [path for path in fetched if path[-1] in "0123456789abcdef"], fetched
    assert not layout.exists()
    tarball = ["pack", "-x", str(base), "-r", fqrn, "-o", str(tmp_path / "t.tar")]
    assert (await run_cli_process(*tarball, "--oci-base", f"{base_layout}:9")).exit_code == 2


def _base_parts(layout: Path) -> tuple[dict, dict, dict]:
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads(_blob(layout, entry))
    return entry, manifest, json.loads(_blob(layout, manifest["config"]))


@pytest.mark.skipif(not HAVE_UMOCI, reason="umoci not installed")
async def test_a_base_made_by_umoci(fixture_server: StaticServer, tmp_path: Path) -> None:
    """A base layout written by another tool (umoci: init, new, insert, config) is read,
    and its layers, files and settings are those of the image unpacked from ours."""
    fqrn = "fix1.test.local"
    base, _ = await _export(tmp_path, fixture_server, fqrn, "partial.spec")
    umoci_layout, image = tmp_path / "umoci-base", f"{tmp_path / 'umoci-base'}:9"
    release = tmp_path / "os-release"
    release.write_text("ID=umoci\n")
    for command in (
        ["init", "--layout", str(umoci_layout)],
        ["new", "--image", image],
        ["insert", "--rootless", "--image", image, str(release), "/etc/os-release"],
        ["config", "--image", image, "--config.env", "SITE=umoci", "--config.cmd", "/bin/sh"],
    ):
        subprocess.run(["umoci", *command], check=True, capture_output=True)
    layout = tmp_path / "image"
    assert await run_cli("pack", "-q", "-x", str(base), "-r", fqrn, "--format", "oci",
                         "--oci-base", image, "-o", str(layout)) == 0  # fmt: skip
    _, manifest, config, _ = read_layout(layout)
    assert len(manifest["layers"]) == 2 and "SITE=umoci" in config["config"]["Env"]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest", str(bundle)],
                   check=True, capture_output=True)  # fmt: skip
    assert (bundle / "rootfs" / "etc" / "os-release").read_text() == "ID=umoci\n"
    assert (bundle / "rootfs" / "cvmfs" / fqrn / "README.txt").is_file()
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == ["/bin/sh"]


async def test_split_layers_are_shared_by_revisions_that_leave_their_directories_alone(
    tmp_path: Path,
) -> None:
    """--oci-split-depth 1: a layer per top directory and one for the rest. Between two
    revisions that change one file of b/, the layers of a/ and c/ keep their digests; the
    unpacked image equals the tree, and a/same and c/same (one inode in the export, a hard
    link in a single layer) are each written in full in their own layer."""
    fqrn = "split.test.local"
    contents = tmp_path / "contents"
    contents.mkdir()

    def node(name: str, data: bytes | None = None, children: list | None = None) -> SourceNode:
        if children is not None:
            return SourceNode(name, "dir", 0o40755, 1_700_000_000, children=children)
        stored = contents / f"{len(list(contents.iterdir()))}"
        stored.write_bytes(data or b"")
        return SourceNode(name, "file", 0o100644, 1_700_000_100, size=len(data or b""),
                          content=str(stored))  # fmt: skip

    def tree(b_text: bytes) -> SourceNode:
        return node("", children=[
            node("a", children=[node("one.txt", b"a1\n"), node("same", b"shared\n" * 999)]),
            node("b", children=[node("two.txt", b_text)]),
            node("c", children=[node("same", b"shared\n" * 999), node("deep", children=[
                node("three.txt", b"c3\n")])]),
            node("top.txt", b"at the root\n"),
        ])  # fmt: skip

    publisher = Publisher(tmp_path / "server", fqrn, PublishOptions(workers=1))
    layers_of: list[dict[str, str]] = []
    for revision, b_text in enumerate((b"first\n", b"second\n")):
        key = publisher.publish(tree(b_text)).public_key
        async with StaticServer(tmp_path / "server") as server:
            config, spec = _published_source(tmp_path, server, key)
            layout = tmp_path / f"image-{revision}"
            assert await run_cli("pack", "-q", "-r", fqrn, "-f", str(config), "-t", str(spec),
                                 "--format", "oci", "--oci-split-depth", "1",
                                 "-o", str(layout)) == 0  # fmt: skip
        _, manifest, config_json, _ = read_layout(layout)
        history = [h["created_by"] for h in config_json["history"]]
        assert history == [f"shrinkwrap-async pack /cvmfs/{fqrn}"] + [
            f"shrinkwrap-async pack /cvmfs/{fqrn}/{name}" for name in ("a", "b", "c")
        ]
        named = zip(history, manifest["layers"], strict=True)
        layers_of.append({h.rsplit("/", 1)[-1]: layer["digest"] for h, layer in named})
        per_layer = [members(_uncompressed(layout, layer), strip="cvmfs/")
                     for layer in manifest["layers"]]  # fmt: skip
        assert sorted(per_layer[0]) == ["", fqrn, f"{fqrn}/{MARKER_NAME}", f"{fqrn}/top.txt"]
        assert sorted(per_layer[3]) == [f"{fqrn}/c", f"{fqrn}/c/deep", f"{fqrn}/c/deep/three.txt",
                                        f"{fqrn}/c/same"]  # fmt: skip
        same_in_c = per_layer[3][f"{fqrn}/c/same"]
        assert same_in_c[0] == tarfile.REGTYPE and same_in_c[5] == len(b"shared\n" * 999)
        if HAVE_UMOCI:
            bundle = tmp_path / f"bundle-{revision}"
            subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{layout}:latest",
                            str(bundle)], check=True, capture_output=True)  # fmt: skip
            root = bundle / "rootfs" / "cvmfs" / fqrn
            assert (root / "b" / "two.txt").read_bytes() == b_text
            assert (root / "c" / "same").read_bytes() == b"shared\n" * 999
            assert (root / "c" / "deep" / "three.txt").read_bytes() == b"c3\n"
    first, second = layers_of
    assert first["a"] == second["a"] and first["c"] == second["c"]
    assert first["b"] != second["b"]


async def test_more_layers_than_runtimes_take_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fqrn = "many.test.local"
    source = tmp_path / "source"
    for index in range(130):
        (source / f"d{index:03d}").mkdir(parents=True)
        (source / f"d{index:03d}" / "f").write_bytes(b"%d\n" % index)
    key = Publisher(tmp_path / "server", fqrn, PublishOptions(workers=1)).publish(source).public_key
    async with StaticServer(tmp_path / "server") as server:
        config, spec = _published_source(tmp_path, server, key)
        layout = tmp_path / "image"
        for depth, warned in (("1", True), ("0", False)):
            caplog.clear()
            assert await run_cli("pack", "-r", fqrn, "-f", str(config), "-t", str(spec),
                                 "--format", "oci", "--oci-split-depth", depth,
                                 "-o", str(layout)) == 0  # fmt: skip
            _, manifest, _, _ = read_layout(layout)
            assert len(manifest["layers"]) == (131 if warned else 1)
            assert ("131 layers" in caplog.text) == warned, caplog.text
