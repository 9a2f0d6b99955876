"""``shrinkwrap-async demo [DIR]``: publish a small signed repository, serve it, export it.

Everything happens on this machine: the test publisher writes a repository with every kind
of entry, an HTTP server on 127.0.0.1 serves it, and the export pipeline copies it into
``DIR/export``. Nothing outside DIR (default: a new temporary directory, kept) is touched.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from shrinkwrap_async.cli import add_verbosity_options
from shrinkwrap_async.exitcodes import ExitCode
from shrinkwrap_async.runtime import run_async

DEMO_FQRN = "demo.shrinkwrap.local"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "demo", help="publish, serve and export a small repository, all on this machine"
    )
    parser.add_argument("dir", nargs="?", help="working directory (default: a new temp dir)")
    parser.add_argument("--json", action="store_true", help="summary as JSON on stdout")
    add_verbosity_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from shrinkwrap_async.testing.chunking import ChunkSizes
    from shrinkwrap_async.testing.publish import Publisher, PublishOptions
    from shrinkwrap_async.testing.source_trees import build_source_tree

    base = Path(args.dir or tempfile.mkdtemp(prefix="shrinkwrap-async-demo.")).absolute()
    base.mkdir(parents=True, exist_ok=True)
    source = build_source_tree(base / "source", DEMO_FQRN)
    options = PublishOptions(chunk_sizes=ChunkSizes(256 << 10, 512 << 10, 1 << 20), workers=1)
    published = Publisher(base / "server", DEMO_FQRN, options).publish(source)
    print(
        f"published {DEMO_FQRN} revision {published.revision} ({published.files} files)",
        file=sys.stderr if args.json else sys.stdout,
    )
    stats = run_async(_serve_and_export(base, published.public_key))
    if args.json:
        print(stats.to_json())
    else:
        print(stats.table())
    tree = base / "export" / DEMO_FQRN
    print(f"exported tree: {tree}", file=sys.stderr if args.json else sys.stdout)
    return int(ExitCode.PARTIAL if stats.failures else ExitCode.OK)


async def _serve_and_export(base: Path, public_key: Path):  # type: ignore[no-untyped-def]
    from shrinkwrap_async.config.settings import ClientSettings
    from shrinkwrap_async.pipeline.recorded_run import export_repository
    from shrinkwrap_async.pipeline.runner import ExportOptions
    from shrinkwrap_async.spec.tree import Spec
    from shrinkwrap_async.testing.servers import StaticServer

    async with StaticServer(base / "server") as server:
        settings = ClientSettings.for_repository(
            DEMO_FQRN,
            server.repository_url(DEMO_FQRN),
            public_key,
            cache_base=base / "cache",
        )
        options = ExportOptions(dest_base=base / "export", max_in_flight=16)
        return await export_repository(settings, Spec.everything(), options)
