"""NHS numbers: the Modulus 11 check digit, and finding them in free text."""

from __future__ import annotations

import re

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_CANDIDATE = re.compile(r"(?<!\d)(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?!\d)")


def check_digit(first_nine: str) -> int | None:
    """The Modulus 11 check digit for nine digits, or None when no valid number can have them (remainder 10)."""
    total = sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS, strict=True))
    digit = 11 - total % 11
    if digit == 11:
        return 0
    return None if digit == 10 else digit


def is_valid_nhs_number(value: str) -> bool:
    """True for a ten-digit string (spaces or hyphens allowed in 3-3-4 groups) whose check digit is right."""
    match = _CANDIDATE.fullmatch(value.strip())
    if match is None:
        return False
    digits = "".join(match.groups())
    return check_digit(digits[:9]) == int(digits[9])


def find_nhs_numbers(text: str) -> list[str]:
    """Every valid NHS number in ``text`` (ten digits, optionally grouped 3-3-4)."""
    return [m.group(0) for m in _CANDIDATE.finditer(text) if is_valid_nhs_number(m.group(0))]
