"""Publish a source tree with the test publisher, serve it on 127.0.0.1, export it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.pipeline.recorded_run import export_repository
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.pipeline.summary import ExportStats
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer


async def publish_and_export(
    work: Path,
    fqrn: str,
    source: Path,
    specs: Sequence[str],
    *,
    dest: Path | None = None,
    max_in_flight: int = 8,
) -> list[ExportStats]:
    """Publish ``source`` as ``fqrn`` under ``work/server``, serve it and export each spec in
    turn into ``dest`` (default ``work/dest``; catalog cache ``work/cache``)."""
    publisher = Publisher(work / "server", fqrn, PublishOptions(workers=1))
    publisher.publish(source)
    results = []
    async with StaticServer(work / "server") as server:
        settings = ClientSettings.for_repository(
            fqrn,
            server.repository_url(fqrn),
            publisher.keys_dir / f"{fqrn}.pub",
            cache_base=work / "cache",
        )
        for spec in specs:
            options = ExportOptions(dest_base=dest or work / "dest", max_in_flight=max_in_flight)
            results.append(await export_repository(settings, Spec.parse(spec), options))
    return results
