"""ISO 6346 container numbers: owner code, category, serial number and check digit.

A container number is ``AAAU1234566``: three owner-code letters, a category identifier
(``U`` freight container, ``J`` detachable equipment, ``Z`` trailer/chassis), six serial
digits and one check digit computed over the first ten characters.
"""

from __future__ import annotations

import functools
import re

CATEGORY_IDENTIFIERS = "UJZ"
_SHAPE = re.compile(r"^[A-Z]{3}[UJZ][0-9]{6}[0-9]$")
_FIRST10 = re.compile(r"^[A-Z]{3}[UJZ][0-9]{6}$")


def _letter_values() -> dict[str, int]:
    # Letters count from 10 upwards, skipping multiples of 11 (11, 22, 33).
    values: dict[str, int] = {}
    value = 10
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if value % 11 == 0:
            value += 1
        values[letter] = value
        value += 1
    return values


_VALUES = {**_letter_values(), **{str(d): d for d in range(10)}}


def check_digit(first10: str) -> int:
    """Check digit of the first ten characters (owner code, category, serial number).

    Raises ValueError when ``first10`` is not of the form ``AAAU123456``.
    """
    if not _FIRST10.fullmatch(first10):
        raise ValueError(
            f"{first10!r} is not an ISO 6346 owner code + category + serial number "
            "(want 3 letters, U/J/Z, 6 digits, e.g. 'CSQU305438')"
        )
    total = sum(_VALUES[ch] << position for position, ch in enumerate(first10))
    # A remainder of 10 is written as 0 (ISO 6346 advises against issuing such serials).
    return total % 11 % 10


def problem(number: str) -> str | None:
    """Why ``number`` is not a valid container number, or None when it is valid."""
    if not _SHAPE.fullmatch(number):
        return (
            f"container number {number!r} is not ISO 6346 shaped "
            "(want 3 letters, U/J/Z, 6 digits and a check digit, e.g. 'CSQU3054383')"
        )
    return _check_digit_problem(number)


# Every reading of a box checks the same number again. Only well-shaped numbers are
# remembered: eleven characters each, whatever a device sends.
@functools.lru_cache(maxsize=1 << 16)
def _check_digit_problem(number: str) -> str | None:
    want = check_digit(number[:10])
    if int(number[10]) != want:
        return f"container number {number!r} has check digit {number[10]}, want {want}"
    return None


def is_valid(number: str) -> bool:
    """True when ``number`` is an ISO 6346 container number with a correct check digit."""
    return problem(number) is None


def with_check_digit(first10: str) -> str:
    """The full container number for ``first10`` (used by the simulator and tests)."""
    return f"{first10}{check_digit(first10)}"
