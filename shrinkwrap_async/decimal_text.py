"""Whole numbers written in text that comes from outside: files, HTTP heads, file names.

``str.isdigit`` accepts more than ASCII digits ("²", "٣"), which ``int`` then refuses with
a ``ValueError``, and ``int`` refuses strings of more than 4,300 digits: a check with
``isdigit`` followed by ``int`` lets both escape as unexpected exceptions. These helpers
take ASCII digits only, and a bounded number of them.
"""

from __future__ import annotations

MAX_DIGITS = 19  # up to 2**63 - 1 and beyond: every count, size, time or id here


def is_decimal(text: str, max_digits: int = MAX_DIGITS) -> bool:
    """Whether ``text`` is 1 to ``max_digits`` ASCII digits."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def decimal_or_none(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The number ``text`` writes in ASCII digits, else None."""
    return int(text) if is_decimal(text, max_digits) else None
