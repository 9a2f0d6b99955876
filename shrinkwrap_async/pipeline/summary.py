"""Counters of an export run, printed as cvmfs_shrinkwrap prints them, or as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class Failure:
    path: str
    object: str
    reason: str


@dataclass
class ExportStats:
    files: int = 0  # regular files selected
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0
    bytes: int = 0  # logical size of the regular files selected
    data_files: int = 0  # objects written to .data
    data_bytes: int = 0
    dedup_files: int = 0  # files served by an object already in .data or in flight
    dedup_bytes: int = 0
    content_copies: int = 0  # objects made locally from one of the same content (no request)
    linked: int = 0  # files linked (or copied) into the tree
    unchanged: int = 0  # files already linked to the right object
    copies: int = 0  # hard links that fell back to a copy
    removed: int = 0  # entries removed from the destination (mirroring)
    catalogs: int = 0
    skipped_devices: int = 0
    requests: int = 0
    retries: int = 0  # requests made again after a failed one (see take_fetch_counters)
    failed_attempts: int = 0  # HTTP attempts that failed, retried or not
    bytes_received: int = 0
    elapsed: float = 0.0
    objects_needed: int = 0  # dry run: distinct objects missing from .data
    revision: int | None = None
    root_hash: str = ""
    failures: list[Failure] = field(default_factory=list)
    up_to_date: bool = False  # same root hash and spec as the last export: nothing walked
    # the older revision the server offered while the destination kept its newer one
    offered_revision: int | None = None
    catalogs_skipped: int = 0  # unchanged nested catalogs whose subtree was left as it was
    catalogs_diffed: int = 0  # changed catalogs compared row by row with the applied version
    # a shard of a refresh split by catalog: the catalogs it completed (mountpoint -> hash)
    catalogs_applied: dict[str, str] = field(default_factory=dict)
    catalogs_gone: list[str] = field(default_factory=list)  # and those its catalogs lost
    exit_code: int | None = None  # the run's outcome, once known (1 when files failed)

    ROWS = (
        ("files", "Number of regular files"),
        ("dirs", "Number of directories"),
        ("symlinks", "Number of symlinks"),
        ("specials", "Number of special files"),
        ("bytes", "Byte count of the exported files"),
        ("data_files", "Number of data files transferred to .data"),
        ("data_bytes", "Bytes written to .data"),
        ("dedup_files", "Number of files not copied due to deduplication"),
        ("dedup_bytes", "Number of bytes not copied due to deduplication"),
        ("content_copies", "Objects copied locally from the same content (not downloaded)"),
        ("removed", "Entries removed from the destination"),
        ("catalogs", "Catalogs walked"),
        ("requests", "HTTP requests"),
        ("retries", "HTTP requests repeated after a failed one"),
        ("failed_attempts", "HTTP attempts that failed"),
        ("bytes_received", "Bytes received over HTTP"),
    )

    def take_fetch_counters(self, fetch: object) -> None:
        """Copy the counters of a ``network.fetcher.FetchStats`` (or None).

        ``retries`` counts every request made again after a failed one, whatever the
        reason: a same-route retry after a transfer error, the no-cache refetch after a hash
        mismatch, or moving on to another proxy or host (a failover that was followed by
        another attempt; the last failover of an object that failed for good was not).
        Requests that aiohttp repeats by itself on a fresh connection (a GET whose
        connection was closed or reset before the answer began, once per request) never
        reach the fetcher and are not counted (docs/reliability.md).
        """
        if fetch is None:
            return

        def count(name: str) -> int:
            return int(getattr(fetch, name, 0) or 0)

        self.requests = count("requests")
        self.bytes_received = count("bytes_received")
        self.failed_attempts = count("failures")
        given_up = count("missing") + count("corrupt") + count("unreachable")
        moved_on = max(0, count("failovers") - given_up)
        self.retries = count("retries") + count("no_cache_retries") + moved_on

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("catalogs_applied", "catalogs_gone"):
            if not data[key]:
                del data[key]  # only a shard of a refresh split by catalog has them
        data["elapsed"] = round(self.elapsed, 3)
        data["files_per_second"] = round(self.files / self.elapsed, 1) if self.elapsed else 0.0
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    def up_to_date_line(self, fqrn: str) -> str:
        """What a run with nothing to do prints (without ``--json``)."""
        kept = ""
        if self.offered_revision is not None:
            kept = f"; kept, the server offers the older revision {self.offered_revision}"
        return f"{fqrn} revision {self.revision} is up to date ({self.requests} requests{kept})"

    def table(self) -> str:
        lines = ["Name|Value|Description"]
        lines += [f"{name}|{getattr(self, name)}|{text}" for name, text in self.ROWS]
        lines.append(f"failures|{len(self.failures)}|Objects that could not be exported")
        lines.append(f"elapsed|{self.elapsed:.2f}|Seconds")
        return "\n".join(lines)
