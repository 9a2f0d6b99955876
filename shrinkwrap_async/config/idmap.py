"""uid/gid map files (``CVMFS_UID_MAP``, ``CVMFS_GID_MAP``), as the client reads them.

One rule per line, ``<from> <to>`` separated by blanks; ``*`` as ``<from>`` sets the default
for every id without a rule. Blank lines and lines starting with ``#`` are ignored. Any other
malformed line makes the whole map invalid. Ids without a rule and no default are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.exitcodes import ConfigError
from shrinkwrap_async.text_files import text_lines

_MAX_ID = 2**32 - 1


def _parse_id(text: str) -> int | None:
    number = decimal_or_none(text)
    return number if number is not None and number <= _MAX_ID else None


@dataclass(frozen=True)
class IdMap:
    rules: Mapping[int, int] = field(default_factory=dict)
    default: int | None = None
    source: str = "<empty>"

    @classmethod
    def parse(cls, text: str, source: str = "<map>") -> IdMap:
        rules: dict[int, int] = {}
        default: int | None = None
        for number, raw in enumerate(text_lines(text), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            target = _parse_id(parts[1]) if len(parts) == 2 else None
            origin = None if len(parts) != 2 or parts[0] == "*" else _parse_id(parts[0])
            if target is None or (parts[0] != "*" and origin is None):
                raise ConfigError(
                    f"{source}:{number}: bad id map line {line!r}; "
                    "write '<from-id> <to-id>' or '* <default-id>'"
                )
            if origin is None:
                default = target
            else:
                rules[origin] = target
        return cls(rules, default, source)

    @classmethod
    def load(cls, path: Path | str) -> IdMap:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ConfigError(
                f"{path}: cannot read id map ({reason}); "
                "point CVMFS_UID_MAP/CVMFS_GID_MAP at a readable file"
            ) from None
        return cls.parse(text, str(path))

    def map(self, id_: int) -> int:
        rule = self.rules.get(id_)
        if rule is not None:
            return rule
        return id_ if self.default is None else self.default

    def __bool__(self) -> bool:
        return bool(self.rules) or self.default is not None
