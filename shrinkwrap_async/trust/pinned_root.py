"""A root catalog the configuration pins instead of the manifest's newest one.

As the client (``MountPoint::DetermineRootHash``), in this order:

- ``CVMFS_ROOT_HASH``: that root catalog;
- ``CVMFS_REPOSITORY_TAG``: the root catalog of that tag of the repository's history
  database (the manifest's ``H`` object; every publication is tagged ``generic-<time>`` by
  default, ``trunk`` is the newest and ``trunk-previous`` the one before);
- ``CVMFS_REPOSITORY_DATE`` (``YYYY-MM-DDThh:mm:ssZ``): the newest revision of the default
  branch tagged at or before that time.

The history database is an object named in the signed manifest and checked against its
hash, so a pinned root is as trusted as the newest one; a ``CVMFS_ROOT_HASH`` is trusted
because the configuration names it, and its revision and publish time are the catalog's own
properties (``revision``, ``last_modified``), as the client reads them once it is mounted.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.config.settings import ClientSettings, parse_repository_date
from shrinkwrap_async.exitcodes import ConfigError, TrustError
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.trust.manifest import Manifest

HISTORY_MAX_SIZE = 256 * 1024 * 1024  # stored or inflated; years of tags take a few MiB
_COLUMNS = "name, hash, revision, timestamp"


@dataclass(frozen=True)
class PinnedRoot:
    root_catalog: Digest
    revision: int
    publish_time: int | None
    reason: str  # for messages: "tag 'v1'", ...


def wants_pinned_root(settings: ClientSettings) -> bool:
    return bool(settings.root_hash or settings.repository_tag or settings.repository_date)


async def resolve_pinned_root(
    settings: ClientSettings,
    manifest: Manifest,
    fetch_history: Callable[[Digest], Awaitable[bytes]],
    catalog_revision: Callable[[Digest], Awaitable[tuple[int, int | None]]],
) -> PinnedRoot | None:
    """The root the configuration pins, or None when it pins none. ``fetch_history``: the
    stored bytes of the history object, checked against its hash; ``catalog_revision``: a
    root catalog's revision and publish time (its properties, as the client reads them)."""
    if not wants_pinned_root(settings):
        return None
    fqrn = settings.fqrn
    if settings.root_hash:
        digest = settings.root_hash
        revision, publish_time = await catalog_revision(digest)
        return PinnedRoot(digest, revision, publish_time, f"root hash {digest.hex}")
    if manifest.history is None:
        raise ConfigError(
            f"{fqrn} publishes no history (tag) database, so CVMFS_REPOSITORY_TAG and "
            "CVMFS_REPOSITORY_DATE cannot be used with it (CVMFS_ROOT_HASH can)"
        )
    stored = await fetch_history(manifest.history)
    with _history_database(stored, fqrn) as db:
        return _pinned(db, settings)


@contextlib.contextmanager
def _history_database(stored: bytes, fqrn: str) -> Iterator[sqlite3.Connection]:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stored, HISTORY_MAX_SIZE + 1)
    except zlib.error as error:
        raise TrustError(f"the history database of {fqrn} is not zlib data: {error}") from None
    if len(raw) > HISTORY_MAX_SIZE or not inflater.eof:
        raise TrustError(f"the history database of {fqrn} is truncated or too large")
    with tempfile.TemporaryDirectory(prefix="shrinkwrap-async-history.") as scratch:
        path = Path(scratch) / "history.db"
        path.write_bytes(raw)
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            yield db
        except sqlite3.Error as error:
            raise TrustError(f"the history database of {fqrn} is unreadable: {error}") from None
        finally:
            db.close()


def _pinned(db: sqlite3.Connection, settings: ClientSettings) -> PinnedRoot:
    """The tag the settings name, as the client's history queries find it."""
    fqrn = settings.fqrn
    latest_first = " ORDER BY revision DESC LIMIT 1"
    if settings.repository_tag:
        tag = settings.repository_tag
        condition, parameters = "name = ?", (tag,)
        reason = f"tag {tag!r}"
        missing = f"CVMFS_REPOSITORY_TAG={tag!r}: {fqrn} has no such tag"
    else:
        date = settings.repository_date or ""
        stamp = parse_repository_date(date, "CVMFS_REPOSITORY_DATE")
        condition, parameters = "branch = '' AND timestamp <= ?" + latest_first, (stamp,)
        reason = f"date {date}"
        missing = f"CVMFS_REPOSITORY_DATE={date}: {fqrn} has no revision as early as that"
    row = db.execute(f"SELECT {_COLUMNS} FROM tags WHERE {condition}", parameters).fetchone()
    if row is None:
        raise ConfigError(missing)
    return _from_row(row, reason, fqrn)


def _from_row(row: tuple[object, ...], reason: str, fqrn: str) -> PinnedRoot:
    name, hash_text, revision, timestamp = row
    try:
        digest = Digest.from_hex(str(hash_text))
    except ValueError:
        raise TrustError(
            f"the history database of {fqrn}: tag {name!r} has no valid hash"
        ) from None
    if type(revision) is not int:
        raise TrustError(f"the history database of {fqrn}: tag {name!r} has no revision")
    publish_time = timestamp if type(timestamp) is int else None
    if reason.startswith("date "):
        reason += f" (tag {name!r})"
    return PinnedRoot(digest, revision, publish_time, reason)
