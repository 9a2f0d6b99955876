"""``<dest-base>/.provenance/<fqrn>/``: what cvmfs_shrinkwrap writes, plus what it omits.

``src.info``, ``src.config`` and ``dest.info`` have cvmfs_shrinkwrap's format (``key : value``
lines, no trailing newline). ``export.json`` adds the root hash, revision and time exported,
the spec and the servers used.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shrinkwrap_async import __version__
from shrinkwrap_async.exitcodes import UsageError

PROVENANCE_DIR = ".provenance"
EXPORT_RECORD = "export.json"


def utc_stamp(seconds: float | None = None) -> str:
    """``seconds`` since the epoch (default: now) as ISO 8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _info(fields: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{key} : {value}" for key, value in fields)


def _write(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_provenance(
    dest_base: Path,
    fqrn: str,
    *,
    config_files: Sequence[Path],
    config_argument: str,
    src_cache: str,
    dest_cache: Path,
    root_hash: str,
    revision: int,
    spec_text: str,
    servers: Sequence[str],
    summary: dict[str, object] | None = None,
    publish_time: int | None = None,
    pinned_by: str | None = None,
) -> Path:
    directory = dest_base / PROVENANCE_DIR / fqrn
    directory.mkdir(parents=True, exist_ok=True)
    src_info = [
        ("repo", fqrn),
        ("version", f"shrinkwrap-async {__version__}"),
        ("base", ""),
        ("cache", src_cache),
        ("config", config_argument),
    ]
    dest_info = [
        ("repo", fqrn),
        ("version", "1.0"),
        ("base", f"{dest_base}/"),
        ("cache", str(dest_cache)),
        ("config", ""),
    ]
    _write(directory / "src.info", _info(src_info).encode())
    _write(directory / "dest.info", _info(dest_info).encode())
    _write(directory / "src.config", b"".join(Path(p).read_bytes() for p in config_files))
    record = {
        "fqrn": fqrn,
        "root_hash": root_hash,
        "revision": revision,
        "publish_time": publish_time,
        "pinned_by": pinned_by,  # CVMFS_REPOSITORY_TAG, _DATE or CVMFS_ROOT_HASH, if any
        "exported_at": utc_stamp(),
        "spec": spec_text,
        "servers": list(servers),
        "tool": f"shrinkwrap-async {__version__}",
        "summary": summary or {},
    }
    _write(directory / EXPORT_RECORD, (json.dumps(record, indent=1) + "\n").encode())
    return directory


def read_export_record(dest_base: Path, fqrn: str) -> dict[str, Any]:
    """``export.json`` of the export of ``fqrn`` in ``dest_base``; a usage error (exit 2)
    when it is missing or unreadable."""
    path = dest_base / PROVENANCE_DIR / fqrn / EXPORT_RECORD
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(
            f"{fqrn} was never exported into {dest_base} ({path} is missing)"
        ) from None
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {path}: {error}") from error
    if not isinstance(record, dict):
        raise UsageError(f"cannot read {path}: not a JSON object")
    return record
