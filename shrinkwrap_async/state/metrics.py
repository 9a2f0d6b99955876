"""Prometheus textfile for node_exporter's textfile collector (``--metrics-file PATH``).

One file can serve several repositories: samples are labelled ``repository="<fqrn>"`` and
an update replaces only the samples of the repository it is about. The file is written to
a temporary name in the same directory (not ending in ``.prom``, so the collector ignores
it) and renamed over the old one, so the collector never reads half a file.

``shrinkwrap_last_success_timestamp_seconds`` survives failed runs: a failed run keeps the
previous value (from the file, or given by the caller from the state database).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from shrinkwrap_async.exitcodes import StorageError

LAST_SUCCESS = "shrinkwrap_last_success_timestamp_seconds"

# name -> help text, in output order. All are gauges.
METRICS: dict[str, str] = {
    LAST_SUCCESS: "Unix time of the last export that completed without failures.",
    "shrinkwrap_revision": "Repository revision exported by the last run.",
    "shrinkwrap_files": "Regular files in the exported tree after the last run.",
    "shrinkwrap_bytes": "Bytes of regular files in the exported tree after the last run.",
    "shrinkwrap_duration_seconds": "Wall-clock duration of the last run.",
    "shrinkwrap_failures": "Objects that failed in the last run.",
    "shrinkwrap_exit_code": "Exit code of the last run (0 = success).",
}

_SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{repository="(?P<repo>(?:[^"\\]|\\.)*)"\}\s+'
    r"(?P<value>\S+)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class RunMetrics:
    """The outcome of one run of one repository."""

    repository: str
    exit_code: int
    revision: int | None = None
    files: int | None = None
    bytes: int | None = None
    duration_seconds: float | None = None
    failures: int = 0
    finished_at: float | None = None  # default: now

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape_label(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def read_samples(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """repository -> metric name -> value text, for our metrics in an existing file."""
    samples: dict[str, dict[str, str]] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return samples
    except OSError as error:
        raise StorageError(f"cannot read metrics file {path}: {error.strerror}") from error
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] in METRICS:
            repo = _unescape_label(match["repo"])
            samples.setdefault(repo, {})[match["name"]] = match["value"]
    return samples


def render(samples: dict[str, dict[str, str]]) -> str:
    """The textfile for ``samples`` (repository -> name -> value text)."""
    lines: list[str] = []
    for name, help_text in METRICS.items():
        rows = [(repo, values[name]) for repo, values in sorted(samples.items()) if name in values]
        if not rows:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines += [f'{name}{{repository="{escape_label(repo)}"}} {value}' for repo, value in rows]
    return "\n".join(lines) + "\n"


def update_metrics_file(
    path: str | os.PathLike[str],
    runs: RunMetrics | Iterable[RunMetrics],
    *,
    last_success: float | None = None,
) -> None:
    """Replace the samples of each run's repository in ``path``, atomically.

    ``last_success``: the previous success time to report when a run failed and the file
    has none (for example ``StateDB.last_export(fqrn).finished_at``).
    """
    path = Path(path)
    samples = read_samples(path)
    for run in [runs] if isinstance(runs, RunMetrics) else runs:
        previous = samples.get(run.repository, {})
        values: dict[str, str] = {}
        finished = run.finished_at if run.finished_at is not None else time.time()
        if run.succeeded:
            values[LAST_SUCCESS] = format_value(finished)
        elif LAST_SUCCESS in previous:
            values[LAST_SUCCESS] = previous[LAST_SUCCESS]
        elif last_success is not None:
            values[LAST_SUCCESS] = format_value(last_success)
        optional = {
            "shrinkwrap_revision": run.revision,
            "shrinkwrap_files": run.files,
            "shrinkwrap_bytes": run.bytes,
            "shrinkwrap_duration_seconds": run.duration_seconds,
        }
        for name, value in optional.items():
            if value is not None:
                values[name] = format_value(value)
            elif name in previous:
                values[name] = previous[name]
        values["shrinkwrap_failures"] = format_value(run.failures)
        values["shrinkwrap_exit_code"] = format_value(run.exit_code)
        samples[run.repository] = values
    write_atomically(path, render(samples))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, fsync, rename over ``path``."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise StorageError(f"cannot write metrics file {path}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # node_exporter usually runs as another user
        os.replace(temp, path)
    except OSError as error:
        Path(temp).unlink(missing_ok=True)
        raise StorageError(f"cannot write metrics file {path}: {error.strerror}") from error


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-file",
        metavar="PATH",
        default=None,
        help="write Prometheus metrics of the run to PATH (a .prom file in node_exporter's "
        "textfile collector directory), atomically",
    )
