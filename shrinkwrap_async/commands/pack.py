"""``shrinkwrap-async pack``: an existing export as a tarball or a SquashFS image."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import BinaryIO

from shrinkwrap_async.exitcodes import ExitCode, UsageError
from shrinkwrap_async.packing.compression import (
    COMPRESSIONS,
    CompressedSink,
    compression_for_filename,
)
from shrinkwrap_async.packing.entries import MARKER_NAME, entries_from_tree, export_timestamp
from shrinkwrap_async.packing.squashfs import (
    METHODS,
    SquashfsOptions,
    build_squashfs_from_entries,
    build_squashfs_from_tree,
    choose_method,
)
from shrinkwrap_async.packing.tar import TarWriter

log = logging.getLogger(__name__)

XATTR_CHOICES = {"user": ("user.",), "all": ("",), "none": ()}
SQUASHFS_SUFFIXES = (".sqfs", ".squashfs", ".sfs", ".img")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from shrinkwrap_async.cli import add_verbosity_options

    parser = subparsers.add_parser(
        "pack",
        help="pack an export into a tarball or a SquashFS image",
        description=(
            "Pack the export <dest-base>/<fqrn> into a reproducible tar archive (members "
            "under <fqrn>/, to be extracted in /cvmfs) or a SquashFS image whose root "
            "stands for /cvmfs."
        ),
    )
    parser.add_argument("-x", "--dest-base", required=True, type=Path, help="export base")
    parser.add_argument("-r", "--repo", required=True, metavar="FQRN", help="repository")
    parser.add_argument(
        "-o", "--output", required=True, help="output file; '-' is stdout (tar only)"
    )
    parser.add_argument(
        "--format",
        choices=("tar", "squashfs"),
        help="default: squashfs for .sqfs/.squashfs/.sfs/.img outputs, else tar",
    )
    parser.add_argument(
        "--compress",
        choices=COMPRESSIONS,
        help="tar compression; default from the output name (.tar.zst, .tar.gz/.tgz) or none",
    )
    parser.add_argument("--compress-level", type=int, help="zstd (1-22) or gzip (1-9) level")
    parser.add_argument(
        "--mtime",
        type=int,
        metavar="EPOCH",
        help=(
            "time for the tree root, the marker file and the SquashFS superblock; default "
            "$SOURCE_DATE_EPOCH, else the revision time recorded in .provenance, else the "
            "newest mtime in the tree"
        ),
    )
    parser.add_argument(
        "--xattrs",
        choices=tuple(XATTR_CHOICES),
        default="user",
        help="extended attributes to pack (default: user.*)",
    )
    squashfs = parser.add_argument_group("SquashFS")
    squashfs.add_argument(
        "--squashfs-method",
        choices=METHODS,
        default="auto",
        help="stream our tar into mksquashfs -tar/tar2sqfs, or let mksquashfs read the tree",
    )
    squashfs.add_argument("--all-root", action="store_true", help="make every file root-owned")
    squashfs.add_argument("--processors", type=int, help="compressor threads (default: cores)")
    squashfs.add_argument("--squashfs-comp", metavar="ALG", help="e.g. gzip, xz, zstd")
    add_verbosity_options(parser)
    parser.set_defaults(run=run)


def _reference_time(args: argparse.Namespace) -> int | None:
    if args.mtime is not None:
        return int(args.mtime)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        if not epoch.isdigit():
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds")
        return int(epoch)
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
    if args.output == "-" and fmt != "tar":
        raise UsageError("only tar can be written to stdout ('-o -'); give a file for SquashFS")
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
        return _pack_tar(args, entries)
    if args.compress not in (None, "none"):
        raise UsageError("--compress applies to tar; use --squashfs-comp for SquashFS")
    options = SquashfsOptions(
        mtime=mtime,
        all_root=args.all_root,
        processors=args.processors,
        compressor=args.squashfs_comp,
    )
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
        with open(temporary, "wb", buffering=1 << 20) as raw:
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
    sink = CompressedSink(raw, compression, args.compress_level)
    writer = TarWriter(sink, args.repo)
    writer.write_all(entries)  # type: ignore[arg-type]
    writer.close()
    sink.close()
    return writer
