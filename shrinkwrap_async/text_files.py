"""Text files people write by hand (configurations, spec files, id maps, path lists)."""

from __future__ import annotations

BYTE_ORDER_MARK = "\ufeff"


def text_lines(text: str, *, keepends: bool = False) -> list[str]:
    """The lines of ``text``, without the byte order mark some editors put first (it would
    otherwise be part of the first key, rule or path)."""
    return text.removeprefix(BYTE_ORDER_MARK).splitlines(keepends)
