"""Validated identifier types shared by every message: container, IMO, UN/LOCODE, device id."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, StringConstraints

from schemas import iso6346

_IMO = re.compile(r"^[0-9]{7}$")


def _container_number(value: str) -> str:
    reason = iso6346.problem(value)
    if reason:
        raise ValueError(reason)
    return value


def imo_problem(number: str) -> str | None:
    """Why ``number`` is not a valid IMO ship number, or None when it is valid."""
    if not _IMO.fullmatch(number):
        return f"IMO number {number!r} must be exactly 7 digits, e.g. '9074729'"
    return _imo_check_digit_problem(number)


# A port sees few ships and every crane lift checks one again (5 µs); seven digits each.
@functools.lru_cache(maxsize=1 << 12)
def _imo_check_digit_problem(number: str) -> str | None:
    want = sum(int(d) * weight for d, weight in zip(number[:6], range(7, 1, -1), strict=True)) % 10
    if int(number[6]) != want:
        return f"IMO number {number!r} has check digit {number[6]}, want {want}"
    return None


def _imo_number(value: str) -> str:
    reason = imo_problem(value)
    if reason:
        raise ValueError(reason)
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30+01:00 is before year 1 in UTC
        raise ValueError(f"{value.isoformat()} is outside the range of UTC timestamps") from None


ContainerNumber = Annotated[str, AfterValidator(_container_number)]
ImoNumber = Annotated[str, AfterValidator(_imo_number)]
# UN/LOCODE: ISO 3166 country code + three letters or digits 2-9, e.g. CNSHK (Shekou).
UnLocode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[A-Z2-9]{3}$")]
# Device ids become one MQTT topic level, so they cannot hold '/', '+', '#' or spaces.
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
# Timestamps must carry a zone (naive ones are rejected) and are stored as UTC.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
YardBlock = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,8}$")]
SealNumber = Annotated[str, StringConstraints(min_length=1, max_length=32)]
