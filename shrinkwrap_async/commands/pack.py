"""``shrinkwrap-async pack``: an export, or a repository selection, as a tarball or SquashFS.

With ``-x DEST`` the tree ``DEST/<fqrn>`` of an earlier export is packed. With the export's
options instead (``-f CONFIG -t SPEC``, ``-c``, ``-j``), the selection is streamed straight
from the repository (``packing.from_repository``) without writing any tree; the result has
the same bytes as packing an export of that revision and spec.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from shrinkwrap_async.cli import repository_name, requests_in_flight
from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.exitcodes import ExitCode, StorageError, UsageError
from shrinkwrap_async.packing.compression import (
    COMPRESSIONS,
    CompressedSink,
    compression_for_filename,
)
from shrinkwrap_async.packing.entries import (
    MARKER_NAME,
    PackEntry,
    entries_from_tree,
    export_timestamp,
)
from shrinkwrap_async.packing.oci import (
    OciOptions,
    check_oci_output,
    host_architecture,
    load_base_image,
    write_oci_layout,
)
from shrinkwrap_async.packing.squashfs import (
    METHODS,
    SquashfsOptions,
    build_squashfs_from_entries,
    build_squashfs_from_tree,
    choose_method,
)
from shrinkwrap_async.packing.tar import TarWriter
from shrinkwrap_async.state.provenance import read_export_record
from shrinkwrap_async.store.errors import storage_error

if TYPE_CHECKING:
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.packing.from_repository import (
        RepositorySource,
        StreamOptions,
        StreamStats,
    )
    from shrinkwrap_async.spec.tree import Spec

log = logging.getLogger(__name__)

XATTR_CHOICES = {"user": ("user.",), "all": ("",), "none": ()}
SQUASHFS_SUFFIXES = (".sqfs", ".squashfs", ".sfs", ".img")
MAX_RUNTIME_LAYERS = 127  # Docker's overlay2 limit; other runtimes are close to it
OCI_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-:/@+]*")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from shrinkwrap_async.cli import add_verbosity_options

    parser = subparsers.add_parser(
        "pack",
        help="pack an export, or a repository selection, into a tarball or a SquashFS image",
        description=(
            "Pack the export <dest-base>/<fqrn> (-x), or the part of the repository a spec "
            "selects (-f CONFIG -t SPEC, streamed without writing a tree), into a "
            "reproducible tar archive (members under <fqrn>/, to be extracted in /cvmfs), "
            "a SquashFS image whose root stands for /cvmfs, or an OCI image layout (a "
            "directory) with one layer holding /cvmfs/<fqrn>."
        ),
    )
    parser.add_argument(
        "-r", "--repo", required=True, type=repository_name, metavar="FQRN", help="repository"
    )
    parser.add_argument("-x", "--dest-base", type=Path, help="pack this export base")
    source = parser.add_argument_group(
        "streaming from the repository (instead of -x; the export's options)"
    )
    source.add_argument("-f", "--src-config", help="client config files, colon-separated")
    source.add_argument("-t", "--spec-file", help="spec file ('-' = stdin)")
    source.add_argument("-c", "--src-cache", default="", help="catalog cache base directory")
    source.add_argument(
        "-j",
        "--threads",
        type=requests_in_flight,
        default=0,
        help="requests in flight (default 32)",
    )
    source.add_argument(
        "--keep-variant-symlinks",
        action="store_true",
        help="pack variant symlinks ($(VAR)) unresolved",
    )
    source.add_argument(
        "--prefetch-mib",
        type=int,
        default=64,
        metavar="MIB",
        help="file content fetched ahead of the writer, at most (default 64 MiB)",
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file (a directory for oci); '-' is stdout (tar only)",
    )
    parser.add_argument(
        "--format",
        choices=("tar", "squashfs", "oci"),
        help="default: squashfs for .sqfs/.squashfs/.sfs/.img outputs, else tar",
    )
    parser.add_argument(
        "--compress",
        choices=COMPRESSIONS,
        help=(
            "tar compression; default from the output name (.tar.zst, .tar.gz/.tgz) or "
            "none; for an OCI layer gzip"
        ),
    )
    parser.add_argument("--compress-level", type=int, help="zstd (1-22) or gzip (1-9) level")
    parser.add_argument(
        "--processors",
        type=int,
        help=(
            "compressor threads for gzip, zstd and SquashFS (default: the usable cores, for "
            "gzip and zstd at most 16); the output is the same for any number"
        ),
    )
    parser.add_argument(
        "--mtime",
        type=int,
        metavar="EPOCH",
        help=(
            "time for the tree root, the marker file and the SquashFS superblock; default "
            "$SOURCE_DATE_EPOCH, else the revision's publish time (recorded in .provenance "
            "with -x), else the newest mtime in the tree"
        ),
    )
    parser.add_argument(
        "--xattrs",
        choices=tuple(XATTR_CHOICES),
        default="user",
        help="extended attributes to pack (default: user.*)",
    )
    parser.add_argument(
        "--all-root", action="store_true", help="make every member owned by root (uid/gid 0)"
    )
    oci = parser.add_argument_group("OCI image layout")
    oci.add_argument(
        "--oci-ref",
        default="latest",
        metavar="NAME",
        help="the image's reference name in the layout (oci:DIR:NAME; default latest)",
    )
    oci.add_argument(
        "--oci-split-depth",
        type=int,
        default=0,
        metavar="N",
        help=(
            "one layer per directory N levels below the repository root, one more for the "
            "rest: images of successive revisions share the unchanged directories' layers "
            "(default 0: one layer)"
        ),
    )
    oci.add_argument(
        "--oci-base",
        metavar="LAYOUT[:REF]",
        help=(
            "put the layer on top of this image (an OCI layout, e.g. from skopeo copy "
            "docker://almalinux:9 oci:base:9), keeping its settings: a runnable image"
        ),
    )
    squashfs = parser.add_argument_group("SquashFS")
    squashfs.add_argument(
        "--squashfs-method",
        choices=METHODS,
        default="auto",
        help="stream our tar into mksquashfs -tar/tar2sqfs, or let mksquashfs read the tree",
    )
    squashfs.add_argument("--squashfs-comp", metavar="ALG", help="e.g. gzip, xz, zstd")
    add_verbosity_options(parser)
    parser.set_defaults(run=run)


def _given_time(args: argparse.Namespace) -> int | None:
    """--mtime, else $SOURCE_DATE_EPOCH, else None."""
    if args.mtime is not None:
        return int(args.mtime)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        seconds = decimal_or_none(epoch)
        if seconds is None:
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds")
        return seconds
    return None


def _reference_time(args: argparse.Namespace) -> int | None:
    given = _given_time(args)
    if given is not None:
        return given
    return export_timestamp(args.dest_base, args.repo)


def newest_data_mtime(dest_base: Path, fqrn: str) -> int:
    """The newest mtime in the tree, leaving out the root and the marker file (whose times
    are those of the export run): the same for every export of one revision and spec."""
    newest = 0
    for entry in entries_from_tree(dest_base, fqrn, xattr_prefixes=()):
        if entry.path not in ("", MARKER_NAME):
            newest = max(newest, entry.mtime)
    return newest


def _output_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    return "squashfs" if args.output.lower().endswith(SQUASHFS_SUFFIXES) else "tar"


def run(args: argparse.Namespace) -> int:
    fmt = _output_format(args)
    if args.processors is not None and args.processors < 1:
        raise UsageError("--processors needs a number >= 1")
    if args.output == "-" and fmt != "tar":
        raise UsageError(
            "only tar can be written to stdout ('-o -'); give a file (SquashFS) "
            "or a directory (OCI)"
        )
    if fmt == "squashfs" and args.compress not in (None, "none"):
        raise UsageError("--compress applies to tar and OCI; use --squashfs-comp for SquashFS")
    args.base_image = None
    if fmt == "oci":
        _check_oci_arguments(args)
    elif args.oci_base or args.oci_split_depth:
        raise UsageError("--oci-base and --oci-split-depth apply to --format oci")
    elif args.output != "-":
        check_output_file(Path(args.output))
    streaming = args.src_config is not None or args.spec_file is not None
    if args.dest_base is not None and streaming:
        raise UsageError(
            "give either -x DEST (pack an export) or -f CONFIG -t SPEC (stream from the "
            "repository), not both"
        )
    if args.dest_base is None:
        if args.src_config is None or args.spec_file is None:
            raise UsageError(
                "pack needs -x DEST (an export), or -f CONFIG and -t SPEC (the repository)"
            )
        return run_streamed(args, fmt)
    if not (args.dest_base / args.repo).is_dir():
        raise UsageError(f"no export of {args.repo} in {args.dest_base}")
    mtime = _reference_time(args)
    if mtime is None:
        mtime = newest_data_mtime(args.dest_base, args.repo)
        log.info("no revision time known (--mtime, SOURCE_DATE_EPOCH, .provenance): the "
                 "tree root and marker get the newest mtime of the tree, %d", mtime)  # fmt: skip
    prefixes = XATTR_CHOICES[args.xattrs]
    entries = entries_from_tree(
        args.dest_base, args.repo, fixed_mtime=mtime, xattr_prefixes=prefixes
    )
    if fmt == "tar":
        return _pack_tar(args, _owned(args, entries))
    if fmt == "oci":
        return _pack_oci(args, _owned(args, entries), mtime, _export_annotations(args))
    options = _squashfs_options(args, mtime)
    output = Path(args.output)
    method, _ = choose_method(args.squashfs_method)
    if method == "stream":
        # A metadata-only walk first: the newest mtime bounds the times mksquashfs -tar sets.
        newest = max(
            (e.mtime for e in entries_from_tree(args.dest_base, args.repo, fixed_mtime=mtime,
                                               xattr_prefixes=())),
            default=mtime,
        )  # fmt: skip
        argv = build_squashfs_from_entries(entries, args.repo, output, options, newest)
    else:
        argv = build_squashfs_from_tree(args.dest_base, args.repo, output, options, method)
    log.info("wrote %s with: %s", output, " ".join(argv))
    return ExitCode.OK


def _check_oci_arguments(args: argparse.Namespace) -> None:
    """The OCI options and output, and the base image, before anything is read or fetched."""
    if args.oci_split_depth < 0:
        raise UsageError("--oci-split-depth needs a number >= 0")
    if not OCI_REF.fullmatch(args.oci_ref):
        raise UsageError(f"--oci-ref {args.oci_ref!r}: use letters, digits and ._-:/@+")
    args.output = os.path.abspath(args.output)  # a layout is renamed into place: "." too
    check_oci_output(Path(args.output), args.oci_ref)
    if args.oci_base:
        args.base_image = load_base_image(args.oci_base, host_architecture())


def check_output_file(output: Path) -> None:
    """Refuse (exit 5) an ``-o`` that cannot be written, before anything is read or fetched:
    the archive is written next to it under a temporary name, then renamed."""
    parent = output.parent
    if output.is_dir():
        raise StorageError(f"cannot write {output}: it is a directory")
    if not parent.is_dir():
        raise StorageError(f"cannot write {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write {output}: directory {parent} is not writable")


def _squashfs_options(args: argparse.Namespace, mtime: int) -> SquashfsOptions:
    return SquashfsOptions(
        mtime=mtime,
        all_root=args.all_root,
        processors=args.processors,
        compressor=args.squashfs_comp,
    )


# -- streaming from the repository -----------------------------------------------------------


def run_streamed(args: argparse.Namespace, fmt: str) -> int:
    """Pack the selection straight from the repository (no tree is written anywhere)."""
    from shrinkwrap_async.commands._running import load_source_arguments, run_stoppable
    from shrinkwrap_async.runtime import run_async

    if args.threads < 0 or args.prefetch_mib < 1:
        raise UsageError("-j needs a number >= 0 and --prefetch-mib a number >= 1")
    if fmt != "tar":
        method, _ = choose_method(args.squashfs_method)
        if method != "stream":
            raise UsageError(
                "SquashFS straight from the repository needs mksquashfs >= 4.5.1 (reads tar "
                "with -tar) or tar2sqfs (squashfs-tools-ng); or export first and use -x"
            )
    settings, spec = load_source_arguments(args)
    if args.output == "-":
        outcome = "the archive written to stdout is incomplete"
    else:
        outcome = f"{args.output} was not written"
    packed = _pack_streamed(args, fmt, settings, spec)
    return int(run_async(run_stoppable(packed, outcome=outcome, log=log)))


async def _pack_streamed(
    args: argparse.Namespace, fmt: str, settings: ClientSettings, spec: Spec
) -> int:
    from shrinkwrap_async.packing.from_repository import RepositorySource, StreamOptions

    threads = args.threads or 32
    options = StreamOptions(
        keep_variant_symlinks=args.keep_variant_symlinks,
        xattr_prefixes=XATTR_CHOICES[args.xattrs],
        window_objects=4 * threads,
        window_bytes=args.prefetch_mib << 20,
    )
    async with RepositorySource.open(settings, spec, max_in_flight=threads) as source:
        log.info("packing %s revision %d (%s)", args.repo, source.revision,
                 source.trusted.root_catalog.hex)  # fmt: skip
        # Hard-linked members carry the mtime the export gives their inode.
        newest, link_mtimes = await source.walk_metadata(options)
        mtime = _given_time(args)
        if mtime is None:
            mtime = source.publish_time
        if mtime is None:
            mtime = newest
        options = dataclasses.replace(
            options,
            fixed_mtime=mtime,
            link_mtimes=link_mtimes,
            link_scope_depth=args.oci_split_depth if fmt == "oci" else 0,
        )
        if fmt == "tar":
            stats = await _stream_tar(args, source, options)
        elif fmt == "oci":
            labels = _annotations(args.repo, source.revision, source.trusted.root_catalog.hex)
            stats = await _stream_oci(args, source, options, mtime, labels)
        else:
            stats = await _stream_squashfs(args, source, options, mtime, max(mtime, newest))
        requests = getattr(source.fetcher.stats, "requests", None)
    log.info(
        "%d entries (%d files, %d hard links), %d objects fetched (%d bytes, %d spooled), "
        "at most %d bytes ahead, %s requests",
        stats.entries, stats.files, stats.hard_links, stats.pieces, stats.piece_bytes,
        stats.spooled, stats.peak_window_bytes, requests,
    )  # fmt: skip
    for warning in spec.warnings():
        log.warning("spec: %s", warning)
    if stats.skipped:
        log.error("%d files left out of the image (listed above)", len(stats.skipped))
        return ExitCode.PARTIAL
    return ExitCode.OK


async def _stream_tar(
    args: argparse.Namespace, source: RepositorySource, options: StreamOptions
) -> StreamStats:
    async with source.stream(options) as entries:
        await asyncio.to_thread(_pack_tar, args, entries.blocking())
    return entries.stats


async def _stream_oci(
    args: argparse.Namespace,
    source: RepositorySource,
    options: StreamOptions,
    mtime: int,
    annotations: dict[str, str],
) -> StreamStats:
    async with source.stream(options) as entries:
        owned = _owned(args, entries.blocking())
        await asyncio.to_thread(_pack_oci, args, owned, mtime, annotations)
    return entries.stats


async def _stream_squashfs(
    args: argparse.Namespace,
    source: RepositorySource,
    options: StreamOptions,
    mtime: int,
    newest: int,
) -> StreamStats:
    # mksquashfs -tar clamps times to SOURCE_DATE_EPOCH: ``newest`` bounds them (from the
    # walk of the catalogs before the stream); tar2sqfs does not clamp.
    _, tool = choose_method("stream")
    if Path(tool[0]).name == "tar2sqfs":
        newest = mtime
    output = Path(args.output)
    async with source.stream(options) as entries:
        argv = await asyncio.to_thread(
            build_squashfs_from_entries,
            entries.blocking(),
            args.repo,
            output,
            _squashfs_options(args, mtime),
            newest,
        )
    log.info("wrote %s with: %s", output, " ".join(argv))
    return entries.stats


def _pack_tar(args: argparse.Namespace, entries: object) -> int:
    compression = args.compress or compression_for_filename(args.output)
    if args.output == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a tar archive to a terminal; use -o FILE")
        _write_tar(sys.stdout.buffer, args, compression, entries)
        return ExitCode.OK
    output = Path(args.output)
    temporary = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    try:
        with _writing(output), open(temporary, "wb", buffering=1 << 20) as raw:
            writer = _write_tar(raw, args, compression, entries)
        os.replace(temporary, output)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    log.info(
        "wrote %s: %d members, %d bytes of file content, compression %s",
        output, writer.members, writer.content_bytes, compression,
    )  # fmt: skip
    return ExitCode.OK


def _write_tar(
    raw: BinaryIO, args: argparse.Namespace, compression: str, entries: object
) -> TarWriter:
    sink = CompressedSink(raw, compression, args.compress_level, args.processors)
    writer = TarWriter(sink, args.repo)
    writer.write_all(entries)  # type: ignore[arg-type]
    writer.close()
    sink.close()
    return writer


def _owned(args: argparse.Namespace, entries: Iterable[PackEntry]) -> Iterable[PackEntry]:
    """The entries, root-owned with ``--all-root``."""
    if not args.all_root:
        return entries
    return (dataclasses.replace(entry, uid=0, gid=0) for entry in entries)


def _annotations(fqrn: str, revision: object, root_hash: object) -> dict[str, str]:
    annotations = {"org.opencontainers.image.title": f"/cvmfs/{fqrn}"}
    if isinstance(revision, int):
        annotations["org.opencontainers.image.version"] = str(revision)
    if isinstance(root_hash, str) and root_hash:
        annotations["org.opencontainers.image.revision"] = root_hash
    return annotations


def _export_annotations(args: argparse.Namespace) -> dict[str, str]:
    """The revision and root catalog an export records in ``.provenance/<fqrn>/export.json``."""
    try:
        record = read_export_record(args.dest_base, args.repo)
    except UsageError as error:
        log.info("%s: the image names no revision", error)
        record = {}
    return _annotations(args.repo, record.get("revision"), record.get("root_hash"))


def _pack_oci(
    args: argparse.Namespace,
    entries: Iterable[PackEntry],
    mtime: int,
    annotations: dict[str, str],
) -> int:
    compression = args.compress or "gzip"
    options = OciOptions(
        fqrn=args.repo,
        created=mtime,
        compression=compression,
        level=args.compress_level,
        threads=args.processors,
        ref_name=args.oci_ref,
        annotations=annotations,
        base=args.base_image,
        split_depth=args.oci_split_depth,
    )
    with _writing(Path(args.output)):
        result = write_oci_layout(entries, Path(args.output), options)
    layers = len(result.layers) + (len(options.base.layers) if options.base else 0)
    if layers > MAX_RUNTIME_LAYERS:
        log.warning("the image has %d layers; container runtimes using overlayfs commonly "
                    "refuse more than %d: use a smaller --oci-split-depth", layers,
                    MAX_RUNTIME_LAYERS)  # fmt: skip
    log.info(
        "wrote the OCI layout %s (%s): %d layers of %d members, %d bytes of file content, "
        "%d bytes %s, on %d base layers; manifest %s",
        args.output, args.oci_ref, len(result.layers), result.members, result.content_bytes,
        result.layer_bytes, compression, len(options.base.layers) if options.base else 0,
        result.manifest_digest,
    )  # fmt: skip
    return ExitCode.OK


@contextlib.contextmanager
def _writing(output: Path) -> Iterator[None]:
    """A write the output's file system refuses (full, quota, read-only) names the output."""
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS):
            raise storage_error(error, f"cannot write {output}") from error
        raise
