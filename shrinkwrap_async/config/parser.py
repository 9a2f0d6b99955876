"""CVMFS ``KEY=VALUE`` configuration files, read the way libcvmfs (and cvmfs_shrinkwrap) reads them.

Per line: everything from the first ``#`` is a comment (even inside quotes), the rest is
trimmed, a leading ``export ``/``readonly ``/``eval `` is dropped from the name, the value is
the text after the first ``=``, trimmed, with one pair of matching surrounding quotes removed
(only when the value is longer than two characters). Names containing a space and lines
without ``=`` are skipped, as the client skips them. Later files override earlier ones.

Then, in every value, ``@fqrn@`` becomes the repository name and ``@org@`` its first label.

``$NAME`` and ``${NAME}``: libcvmfs's simple parser leaves them literal, but the FUSE client
runs each file through ``/bin/sh``, so site configurations written for it use them (e.g.
``CVMFS_SERVER_URL="$CVMFS_SERVER_URL;http://extra/cvmfs/@fqrn@"``). We expand them the way
the shell would for these simple forms: a key defined earlier (in any file), else the process
environment, else the empty string. Values that were single-quoted are not expanded, and
``\\$`` keeps a literal dollar sign.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.exitcodes import ConfigError
from shrinkwrap_async.text_files import text_lines

_NAME_PREFIXES = ("readonly ", "export ", "eval ")
_VARIABLE = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class _Entry:
    value: str
    path: Path
    line: int


class ConfigValues(Mapping[str, str]):
    """Parsed configuration: key -> value, and where each value came from."""

    def __init__(self, entries: Mapping[str, _Entry] | None = None) -> None:
        self._entries: dict[str, _Entry] = dict(entries or {})

    def __getitem__(self, key: str) -> str:
        return self._entries[key].value

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def origin(self, key: str) -> tuple[Path, int] | None:
        """(file, line number) that set ``key``, or None if it is not set."""
        entry = self._entries.get(key)
        return None if entry is None else (entry.path, entry.line)

    def where(self, key: str) -> str:
        """``file:line`` of ``key`` for error messages (``<settings>`` when set in code)."""
        origin = self.origin(key)
        return "<settings>" if origin is None else f"{origin[0]}:{origin[1]}"

    def with_values(self, values: Mapping[str, str], source: Path) -> ConfigValues:
        """A copy with ``values`` set (overriding), recorded as coming from ``source``."""
        entries = dict(self._entries)
        for key, value in values.items():
            entries[key] = _Entry(value, source, 0)
        return ConfigValues(entries)

    def __repr__(self) -> str:
        return f"ConfigValues({dict(self)!r})"


def substitute_templates(value: str, fqrn: str) -> str:
    """Replace ``@fqrn@`` and ``@org@`` (first label of the fqrn); other ``@x@`` stay."""
    return value.replace("@fqrn@", fqrn).replace("@org@", fqrn.split(".", 1)[0])


def _expand_variables(value: str, known: Mapping[str, _Entry]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "\\$":
            return "$"
        name = match.group(1) or match.group(2)
        if name in known:
            return known[name].value
        return os.environ.get(name, "")

    return _VARIABLE.sub(replace, value)


def _parse_line(raw: str) -> tuple[str, str, bool] | None:
    """(name, value, was_single_quoted) of an assignment line, or None if it is not one."""
    line = raw.split("#", 1)[0].strip()
    if "=" not in line:
        return None
    name, value = line.split("=", 1)
    name = name.strip()
    for prefix in _NAME_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :].strip()
            break
    if not name or " " in name:
        return None
    value = value.strip()
    single_quoted = False
    if len(value) > 2 and value[0] == value[-1] and value[0] in "\"'":
        single_quoted = value[0] == "'"
        value = value[1:-1]
    return name, value, single_quoted


def parse_config_text(
    text: str, path: Path, fqrn: str, into: dict[str, _Entry] | None = None
) -> dict[str, _Entry]:
    entries = {} if into is None else into
    for number, raw in enumerate(text_lines(text), start=1):
        parsed = _parse_line(raw)
        if parsed is None:
            continue
        name, value, single_quoted = parsed
        if not single_quoted:
            value = _expand_variables(value, entries)
        entries[name] = _Entry(substitute_templates(value, fqrn), path, number)
    return entries


def parse_config_files(paths: Sequence[Path], fqrn: str) -> ConfigValues:
    """Parse ``paths`` in order (later files win). Every file must exist, as in shrinkwrap."""
    entries: dict[str, _Entry] = {}
    for path in paths:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: configuration file not found; "
                "check the -f/--src-config list (colon-separated paths)"
            ) from None
        except OSError as error:
            raise ConfigError(
                f"{path}: cannot read configuration file ({error.strerror}); check its permissions"
            ) from None
        parse_config_text(text, path, fqrn, entries)
    return ConfigValues(entries)
