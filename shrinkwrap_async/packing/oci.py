"""An OCI image layout (image-spec 1.1) holding one layer: the selection under ``/cvmfs/<fqrn>``.

The image carries data only, to be copied into other images (``docker buildx build
--build-context cvmfs=oci-layout://DIR`` and ``COPY --from=cvmfs /cvmfs /cvmfs``) or read by
any tool that takes OCI image layouts (skopeo, umoci, apptainer, podman). Its bytes follow
from the entries, the creation time and the platform alone: packing one revision twice gives
the same digests, so a registry stores it once.

The layout is written into a temporary directory beside the output and renamed into place;
an existing OCI layout at the output is replaced, anything else there is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from shrinkwrap_async.exitcodes import StorageError, UsageError
from shrinkwrap_async.packing.compression import CompressedSink
from shrinkwrap_async.packing.entries import PackEntry
from shrinkwrap_async.packing.tar import TarWriter

LAYOUT_FILE = "oci-layout"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYERS: Mapping[str, str] = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
WHITEOUT_PREFIX = ".wh."
# Go's names for the machine (GOARCH), which the image config must use.
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def host_architecture() -> str:
    machine = platform.machine().lower()
    return _ARCHITECTURES.get(machine, machine)


@dataclass(frozen=True)
class OciOptions:
    fqrn: str
    created: int  # seconds since the epoch: the image's and the history's creation time
    compression: str = "gzip"
    level: int | None = None
    ref_name: str = "latest"
    architecture: str = field(default_factory=host_architecture)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OciResult:
    manifest_digest: str
    layer_digest: str
    diff_id: str
    layer_size: int
    members: int
    content_bytes: int


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


def check_oci_output(output: Path) -> None:
    """Refuse (exit 5) an output that is neither absent nor an OCI layout to replace."""
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise StorageError(f"cannot write the OCI layout {output}: a file is in the way")
    if output.is_dir() and any(output.iterdir()) and not (output / LAYOUT_FILE).is_file():
        raise StorageError(
            f"cannot write the OCI layout {output}: the directory is not empty and not an "
            "OCI layout (only an earlier layout is replaced)"
        )
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {output}: directory {output.parent} is not writable")


def write_oci_layout(entries: Iterable[PackEntry], output: Path, options: OciOptions) -> OciResult:
    if options.compression not in MEDIA_LAYERS:
        raise UsageError(f"unknown compression {options.compression!r} for an OCI layer")
    check_oci_output(output)
    staging = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    blobs = staging / "blobs" / "sha256"
    try:
        blobs.mkdir(parents=True)
        result = _write_blobs(entries, blobs, options)
        (staging / "index.json").write_bytes(
            _canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": MEDIA_INDEX,
                    "manifests": [
                        {
                            "mediaType": MEDIA_MANIFEST,
                            "digest": result.manifest_digest,
                            "size": (blobs / result.manifest_digest[7:]).stat().st_size,
                            "platform": {"architecture": options.architecture, "os": "linux"},
                            "annotations": {"org.opencontainers.image.ref.name": options.ref_name},
                        }
                    ],
                }
            )
        )
        (staging / LAYOUT_FILE).write_bytes(_canonical({"imageLayoutVersion": "1.0.0"}))
        _install(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _write_blobs(entries: Iterable[PackEntry], blobs: Path, options: OciOptions) -> OciResult:
    partial = blobs / ".layer.partial"
    with open(partial, "wb", buffering=1 << 20) as raw:
        compressed = _DigestingSink(raw)
        sink = CompressedSink(compressed, options.compression, options.level)  # type: ignore[arg-type]
        uncompressed = _DigestingSink(sink)
        writer = TarWriter(uncompressed, f"cvmfs/{options.fqrn}")
        writer.write_parent_directories(options.created)
        writer.write_all(_refuse_whiteouts(entries))
        writer.close()
        sink.close()
    layer_digest = compressed.digest
    os.replace(partial, blobs / layer_digest[7:])
    created = datetime.fromtimestamp(options.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = _canonical(
        {
            "architecture": options.architecture,
            "os": "linux",
            "created": created,
            "config": {"Labels": dict(options.annotations)},
            "rootfs": {"type": "layers", "diff_ids": [uncompressed.digest]},
            "history": [
                {"created": created, "created_by": f"shrinkwrap-async pack /cvmfs/{options.fqrn}"}
            ],
        }
    )
    config_digest = _put_blob(blobs, config)
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": MEDIA_LAYERS[options.compression],
                    "digest": layer_digest,
                    "size": compressed.size,
                }
            ],
            "annotations": {"org.opencontainers.image.created": created, **options.annotations},
        }
    )
    return OciResult(
        manifest_digest=_put_blob(blobs, manifest),
        layer_digest=layer_digest,
        diff_id=uncompressed.digest,
        layer_size=compressed.size,
        members=writer.members,
        content_bytes=writer.content_bytes,
    )


def _put_blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"


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
