"""Numbers in text from outside: ASCII digits only, a bounded number of them."""

from __future__ import annotations

import pytest

from shrinkwrap_async.decimal_text import decimal_or_none, is_decimal


@pytest.mark.parametrize("text", ["0", "7", "0042", "9" * 19])
def test_plain_digits_are_numbers(text: str) -> None:
    assert is_decimal(text) and decimal_or_none(text) == int(text)


@pytest.mark.parametrize(
    "text", ["", "-1", "+1", " 1", "1 ", "1_000", "0x10", "\u00b2", "\u0663", "1.0", "9" * 20]
)
def test_anything_else_is_not(text: str) -> None:
    """Superscript and Arabic-Indic digits pass ``str.isdigit``; ``int`` then refuses the
    first and takes the second; more than 19 digits is no count, size or id here."""
    assert not is_decimal(text) and decimal_or_none(text) is None


def test_the_bound_is_the_callers() -> None:
    assert is_decimal("200", 3) and not is_decimal("2000", 3)
