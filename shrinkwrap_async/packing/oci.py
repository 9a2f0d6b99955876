"""An OCI image layout (image-spec 1.1) of the selection under ``/cvmfs/<fqrn>``: one layer, or
one per directory at a split depth (see :func:`layer_directory`).

The image carries data only, to be copied into other images (``docker buildx build
--build-context cvmfs=oci-layout://DIR`` and ``COPY --from=cvmfs /cvmfs /cvmfs``) or read by
any tool that takes OCI image layouts (skopeo, umoci, apptainer, podman). Its bytes follow
from the entries, the creation time and the platform alone: packing one revision twice gives
the same digests, so a registry stores it once.

With a base image (another OCI layout, e.g. ``skopeo copy docker://almalinux:9
oci:base:9``), the layer goes on top of the base's layers and the image keeps the base's
settings (environment, entry point), so it runs: a container built without a daemon or root.
The base's blobs are checked against their digests when it is read, before anything is fetched,
then hard-linked (or copied) into the new layout.

The layout is written into a temporary directory beside the output and renamed into place;
an OCI layout there from before keeps its other images (their blobs hard-linked), an image
of the same reference name is replaced; anything else at the output is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from shrinkwrap_async.exitcodes import StorageError, UsageError
from shrinkwrap_async.packing.compression import CompressedSink
from shrinkwrap_async.packing.entries import EntryKind, PackEntry
from shrinkwrap_async.packing.tar import TarWriter

LAYOUT_FILE = "oci-layout"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
MEDIA_LAYERS: Mapping[str, str] = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
# Docker's media types as skopeo or buildah may leave them in a layout: the same bytes.
_DOCKER_TO_OCI = {
    "application/vnd.docker.distribution.manifest.list.v2+json": MEDIA_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json": MEDIA_MANIFEST,
    "application/vnd.docker.container.image.v1+json": MEDIA_CONFIG,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": MEDIA_LAYERS["gzip"],
}
WHITEOUT_PREFIX = ".wh."
_SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Go's names for the machine (GOARCH), which the image config must use.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def layer_directory(path: str, is_directory: bool, split_depth: int) -> str:
    """The directory whose layer holds the entry ``path`` (repository-relative) when the
    image is split ``split_depth`` levels down: the directory at that depth above or at it,
    or "" for the first layer (the root, and every entry above the split)."""
    if split_depth <= 0:
        return ""
    parts = path.split("/") if path else []
    if len(parts) > split_depth or (len(parts) == split_depth and is_directory):
        return "/".join(parts[:split_depth])
    return ""


def host_architecture() -> str:
    machine = platform.machine().lower()
    return _ARCHITECTURES.get(machine, machine)


@dataclass(frozen=True)
class BaseImage:
    """The image a layer is put on: its config (a JSON object), its layers' descriptors, the
    platform, and where its blobs are."""

    blobs: Path
    config: dict[str, Any]
    layers: tuple[dict[str, Any], ...]
    platform: dict[str, str]


@dataclass(frozen=True)
class OciOptions:
    fqrn: str
    created: int  # seconds since the epoch: the image's and the history's creation time
    compression: str = "gzip"
    level: int | None = None
    threads: int | None = None  # compressor threads (default: the usable cores)
    ref_name: str = "latest"
    architecture: str = field(default_factory=host_architecture)
    annotations: Mapping[str, str] = field(default_factory=dict)
    base: BaseImage | None = None
    # > 0: one layer per directory this many levels below the repository root, and one for
    # everything above them, so that images of successive revisions share the layers of
    # the directories that did not change.
    split_depth: int = 0


@dataclass(frozen=True)
class OciResult:
    manifest_digest: str
    layers: tuple[dict[str, Any], ...]  # the new layers' descriptors, in the image's order
    members: int
    content_bytes: int
    platform: dict[str, str]

    @property
    def layer_bytes(self) -> int:
        return sum(int(layer["size"]) for layer in self.layers)


class _DigestingSink:
    """Passes bytes on to ``target`` and keeps their SHA-256 and count."""

    def __init__(self, target: BinaryIO | CompressedSink) -> None:
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._target.write(data)
        return len(data)

    def flush(self) -> None:
        flush = getattr(self._target, "flush", None)
        if flush is not None:
            flush()

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def _canonical(document: Mapping[str, object]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _refuse_whiteouts(entries: Iterable[PackEntry]) -> Iterable[PackEntry]:
    for entry in entries:
        if entry.path.rpartition("/")[2].startswith(WHITEOUT_PREFIX):
            raise UsageError(
                f"/{entry.path} cannot go into an OCI layer: container tools read names "
                f"starting with {WHITEOUT_PREFIX} as deletions; exclude it with a '!' spec "
                "rule or pack a tarball"
            )
        yield entry


def _oci_media_type(descriptor: Mapping[str, Any]) -> str:
    media_type = str(descriptor.get("mediaType", ""))
    return _DOCKER_TO_OCI.get(media_type, media_type)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        loaded = json.loads(data)
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict):
        raise UsageError(f"the base image's {what} is not a JSON object")
    return loaded


def _hex_digest(descriptor: Mapping[str, Any], what: str) -> str:
    """The hex part of a descriptor's ``sha256:<64 hex>`` digest (nothing else names a blob)."""
    digest = str(descriptor.get("digest", ""))
    if not _SHA256_DIGEST.fullmatch(digest):
        raise UsageError(f"the base image's {what} has an unsupported digest {digest!r}")
    return digest[7:]


def _read_blob(blobs: Path, descriptor: Mapping[str, Any], what: str) -> bytes:
    hex_digest = _hex_digest(descriptor, what)
    digest = f"sha256:{hex_digest}"
    try:
        data = (blobs / hex_digest).read_bytes()
    except OSError as error:
        raise UsageError(f"the base image's {what} {digest} cannot be read: {error}") from None
    if hashlib.sha256(data).hexdigest() != hex_digest:
        raise UsageError(f"the base image's {what} {digest} does not match its digest")
    return data


def _split_base(reference: str) -> tuple[Path, str | None]:
    """``DIR`` or ``DIR:REF`` (as skopeo writes ``oci:DIR:REF``)."""
    if Path(reference, LAYOUT_FILE).is_file():
        return Path(reference), None
    directory, colon, ref = reference.rpartition(":")
    if colon and Path(directory, LAYOUT_FILE).is_file():
        return Path(directory), ref
    raise UsageError(f"--oci-base {reference}: not an OCI image layout (no {LAYOUT_FILE} file)")


def load_base_image(reference: str, architecture: str) -> BaseImage:
    """The image ``reference`` (``DIR[:REF]``) names, for ``architecture`` where the layout
    holds several platforms."""
    try:
        return _load_base_image(reference, architecture)
    except (AttributeError, KeyError, TypeError) as error:  # a JSON value of the wrong shape
        raise UsageError(
            f"--oci-base {reference}: not a valid OCI layout ({type(error).__name__}: {error})"
        ) from None


def _load_base_image(reference: str, architecture: str) -> BaseImage:
    directory, ref = _split_base(reference)
    blobs = directory / "blobs" / "sha256"
    try:
        index = _json_object((directory / "index.json").read_bytes(), "index.json")
    except OSError as error:
        raise UsageError(f"--oci-base {reference}: cannot read index.json: {error}") from None
    manifests = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    names = sorted({str(m.get("annotations", {}).get(REF_NAME)) for m in manifests} - {"None"})
    if ref is not None:
        manifests = [m for m in manifests if m.get("annotations", {}).get(REF_NAME) == ref]
    if len(manifests) != 1:
        found = "no image" if not manifests else "several images"
        raise UsageError(
            f"--oci-base {reference}: {found} in the layout; name one as DIR:REF "
            f"(references there: {', '.join(names) or 'none'})"
        )
    descriptor = manifests[0]
    for _ in range(4):  # an index of platforms, perhaps nested once or twice
        if _oci_media_type(descriptor) != MEDIA_INDEX:
            break
        platforms = _json_object(_read_blob(blobs, descriptor, "index"), "index")["manifests"]
        matching = [
            m for m in platforms
            if m.get("platform", {}).get("os") == "linux"
            and m.get("platform", {}).get("architecture") == architecture
        ]  # fmt: skip
        if not matching:
            raise UsageError(f"--oci-base {reference}: no image for linux/{architecture}")
        descriptor = matching[0]
    manifest = _json_object(_read_blob(blobs, descriptor, "manifest"), "manifest")
    config = _json_object(_read_blob(blobs, manifest.get("config", {}), "config"), "config")
    layers = tuple(manifest.get("layers", []))
    for layer in layers:  # before anything is fetched: a damaged base fails at once
        _check_base_layer(blobs, layer)
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
        raise UsageError(f"--oci-base {reference}: the config names {len(diff_ids)} layers, "
                         f"the manifest {len(layers)}")  # fmt: skip
    platform_of = {"architecture": str(config.get("architecture", architecture)),
                   "os": str(config.get("os", "linux"))}  # fmt: skip
    if config.get("variant"):
        platform_of["variant"] = str(config["variant"])
    return BaseImage(blobs=blobs, config=config, layers=layers, platform=platform_of)


def _check_base_layer(blobs: Path, descriptor: Mapping[str, Any]) -> None:
    """A base layer's bytes against its digest (read in pieces: layers are large)."""
    hex_digest = _hex_digest(descriptor, "layer")
    try:
        with open(blobs / hex_digest, "rb") as stream:
            found = hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError as error:
        raise UsageError(f"the base image's layer {hex_digest} cannot be read: {error}") from None
    if found != hex_digest:
        raise UsageError(f"the base image's layer {hex_digest} does not match its digest")


def _copy_base_blob(base: BaseImage, descriptor: Mapping[str, Any], blobs: Path) -> None:
    """Hard-link (else copy) one of the base's blobs, checked when the base was loaded."""
    hex_digest = _hex_digest(descriptor, "layer")
    source, target = base.blobs / hex_digest, blobs / hex_digest
    if target.exists():
        return
    try:
        _link_or_copy(source, target)
    except OSError as error:
        raise StorageError(f"cannot copy the base image's layer {hex_digest}: {error}") from None


def _link_or_copy(source: Path, target: Path) -> None:
    """A blob of another layout into this one: a hard link, else (another file system) a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def check_oci_output(output: Path, ref_name: str = "latest") -> None:
    """Refuse (exit 5) an output that is neither absent nor an OCI layout to add to (one
    whose index can be read), before anything is fetched."""
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise StorageError(f"cannot write the OCI layout {output}: a file is in the way")
    if output.is_dir() and any(output.iterdir()) and not (output / LAYOUT_FILE).is_file():
        raise StorageError(
            f"cannot write the OCI layout {output}: the directory is not empty and not an "
            "OCI layout (images are added to a layout, nothing else is replaced)"
        )
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {output}: directory {output.parent} is not writable")
    _kept_images(output, ref_name)


def write_oci_layout(entries: Iterable[PackEntry], output: Path, options: OciOptions) -> OciResult:
    if options.compression not in MEDIA_LAYERS:
        raise UsageError(f"unknown compression {options.compression!r} for an OCI layer")
    check_oci_output(output)
    kept = _kept_images(output, options.ref_name)
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    blobs = staging / "blobs" / "sha256"
    try:
        blobs.mkdir(parents=True)
        _link_kept_blobs(output / "blobs" / "sha256", kept, blobs)
        result = _write_blobs(entries, blobs, options)
        ours = {
            "mediaType": MEDIA_MANIFEST,
            "digest": result.manifest_digest,
            "size": (blobs / result.manifest_digest[7:]).stat().st_size,
            "platform": result.platform,
            "annotations": {REF_NAME: options.ref_name},
        }
        (staging / "index.json").write_bytes(
            _canonical({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [*kept, ours]})
        )
        (staging / LAYOUT_FILE).write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        _install(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _write_blobs(entries: Iterable[PackEntry], blobs: Path, options: OciOptions) -> OciResult:
    """The base's blobs (first: a damaged one fails before the selection is read), the new
    layers, the image config and the manifest."""
    base = options.base
    base_layers: list[dict[str, Any]] = []
    platform_of = {"architecture": options.architecture, "os": "linux"}
    if base is not None:
        platform_of = dict(base.platform)
        for descriptor in base.layers:
            _copy_base_blob(base, descriptor, blobs)
            base_layers.append({**descriptor, "mediaType": _oci_media_type(descriptor)})
    layers = _LayerSplitter(blobs, options).write(entries)
    created = datetime.fromtimestamp(options.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = _canonical(_image_config(options, layers, created))
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {
                "mediaType": MEDIA_CONFIG,
                "digest": _put_blob(blobs, config),
                "size": len(config),
            },
            "layers": [*base_layers, *(layer.descriptor for layer in layers)],
            "annotations": {"org.opencontainers.image.created": created, **options.annotations},
        }
    )
    return OciResult(
        manifest_digest=_put_blob(blobs, manifest),
        layers=tuple(layer.descriptor for layer in layers),
        members=sum(layer.writer.members for layer in layers),
        content_bytes=sum(layer.writer.content_bytes for layer in layers),
        platform=platform_of,
    )


class _LayerFile:
    """One layer being written: a tar below ``cvmfs/<fqrn>`` into a compressed blob."""

    def __init__(self, blobs: Path, options: OciOptions, index: int, directory: str) -> None:
        self.blobs = blobs
        self.directory = directory  # "" for the layer of the root and what lies above splits
        self.partial = blobs / f".layer-{index}.partial"
        self._raw = open(self.partial, "wb", buffering=1 << 20)  # noqa: SIM115 (closed in finish)
        self._compressed = _DigestingSink(self._raw)
        self._sink = CompressedSink(
            self._compressed,  # type: ignore[arg-type]
            options.compression,
            options.level,
            options.threads,
        )
        self._uncompressed = _DigestingSink(self._sink)
        self.writer = TarWriter(self._uncompressed, f"cvmfs/{options.fqrn}")
        self.media_type = MEDIA_LAYERS[options.compression]
        self.descriptor: dict[str, Any] = {}
        self.diff_id = ""

    def finish(self) -> None:
        self.writer.close()
        self._sink.close()
        self._raw.close()
        os.replace(self.partial, self.blobs / self._compressed.digest[7:])
        self.descriptor = {
            "mediaType": self.media_type,
            "digest": self._compressed.digest,
            "size": self._compressed.size,
        }
        self.diff_id = self._uncompressed.digest

    def discard(self) -> None:
        self._raw.close()
        self.partial.unlink(missing_ok=True)


class _LayerSplitter:
    """Routes the entries (in archive order, depth first) to their layers: with a split
    depth N, each directory N levels down and everything below it go to a layer of their
    own; the root, ``cvmfs/`` and all other entries to the first layer. A file that shares
    an inode with one in another layer is written again there (a hard link cannot cross
    layers)."""

    def __init__(self, blobs: Path, options: OciOptions) -> None:
        self.blobs = blobs
        self.options = options
        self.layers: list[_LayerFile] = []

    def _new_layer(self, directory: str) -> _LayerFile:
        layer = _LayerFile(self.blobs, self.options, len(self.layers), directory)
        self.layers.append(layer)
        return layer

    def write(self, entries: Iterable[PackEntry]) -> list[_LayerFile]:
        depth = self.options.split_depth
        try:
            top = self._new_layer("")
            top.writer.write_parent_directories(self.options.created)
            current: _LayerFile | None = None
            for entry in _refuse_whiteouts(entries):
                is_directory = entry.kind is EntryKind.DIRECTORY
                directory = layer_directory(entry.path, is_directory, depth)
                if not directory:
                    top.writer.write_entry(entry)
                    continue
                if current is None or current.directory != directory:
                    if current is not None:
                        current.finish()
                    current = self._new_layer(directory)
                current.writer.write_entry(entry)
            if current is not None:
                current.finish()
            top.finish()
        except BaseException:
            for layer in self.layers:
                if not layer.descriptor:
                    layer.discard()
            raise
        return self.layers


def _image_config(
    options: OciOptions, layers: Sequence[_LayerFile], created: str
) -> dict[str, Any]:
    """The base's config (environment, command...) with the layers, a history entry for
    each and the labels added; without a base, only the platform."""
    base = options.base
    settings: dict[str, Any] = (
        dict(base.config) if base else {"architecture": options.architecture, "os": "linux"}
    )
    diff_ids = list(base.config["rootfs"]["diff_ids"]) if base else []
    histories = list(base.config.get("history", [])) if base else []
    image_settings = dict(settings.get("config") or {})
    image_settings["Labels"] = {**(image_settings.get("Labels") or {}), **options.annotations}
    for layer in layers:
        path = "/".join(filter(None, ("/cvmfs", options.fqrn, layer.directory)))
        histories.append({"created": created, "created_by": f"shrinkwrap-async pack {path}"})
    return {
        **settings,
        "created": created,
        "config": image_settings,
        "rootfs": {"type": "layers", "diff_ids": [*diff_ids, *(layer.diff_id for layer in layers)]},
        "history": histories,
    }


def _put_blob(blobs: Path, data: bytes) -> str:
    """Store ``data`` under its digest: through a new file, never into one that may be a
    hard link to an earlier layout's blob."""
    digest = hashlib.sha256(data).hexdigest()
    target = blobs / digest
    if target.is_file() and target.read_bytes() == data:  # a kept image's, linked
        return f"sha256:{digest}"
    partial = blobs / f".{digest}.partial"
    partial.write_bytes(data)
    os.replace(partial, target)
    return f"sha256:{digest}"


def _kept_images(output: Path, ref_name: str) -> list[dict[str, Any]]:
    """The images of an earlier layout at ``output`` that stay: all but ``ref_name``'s."""
    if not (output / LAYOUT_FILE).is_file():
        return []
    try:
        index = json.loads((output / "index.json").read_bytes())
        manifests = [m for m in index["manifests"] if isinstance(m, dict)]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StorageError(
            f"cannot add to the OCI layout {output}: its index.json cannot be read ({error}); "
            "move it away or choose another -o"
        ) from None
    return [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) != ref_name]


def _link_kept_blobs(source: Path, kept: list[dict[str, Any]], blobs: Path) -> None:
    """Hard-link (else copy) the blobs the kept images reach; the others (of a replaced
    image) are left behind with the old layout. Blobs a layout lacks (the other platforms of
    an index copied for one) are skipped."""
    pending = list(kept)
    seen: set[str] = set()
    while pending:
        descriptor = pending.pop()
        digest = str(descriptor.get("digest", ""))
        if not _SHA256_DIGEST.fullmatch(digest) or digest in seen:
            continue
        seen.add(digest)
        blob = source / digest[7:]
        if not blob.is_file():
            continue
        if _oci_media_type(descriptor) in (MEDIA_INDEX, MEDIA_MANIFEST):
            try:
                document = json.loads(blob.read_bytes())
            except ValueError:
                document = {}
            if isinstance(document, dict):
                children = [*document.get("manifests", []), *document.get("layers", [])]
                if isinstance(document.get("config"), dict):
                    children.append(document["config"])
                pending.extend(c for c in children if isinstance(c, dict))
        _link_or_copy(blob, blobs / blob.name)


def _install(staging: Path, output: Path) -> None:
    """Rename the finished layout into place; an earlier layout there goes only after."""
    if not output.exists():
        os.rename(staging, output)
        return
    previous = output.with_name(f".{output.name}.old-{os.getpid()}")
    os.rename(output, previous)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(previous, output)
        raise
    shutil.rmtree(previous, ignore_errors=True)
