"""The base of every message model: strict, closed, immutable, versioned."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

SCHEMA_VERSION: Literal[1] = 1
_MAX_ERRORS_IN_DETAIL = 5


class Message(BaseModel):
    """A wire message. Unknown fields and type coercion ("5" for 5) are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION

    @field_validator("schema_version", mode="before")
    @classmethod
    def _an_integer(cls, value: object) -> object:
        # pydantic takes JSON `true` and `1.0` for Literal[1] even when strict (True == 1.0
        # == 1 in Python), where every int field refuses them.
        if type(value) is not int:
            raise ValueError(f"schema_version is the integer 1, not a {type(value).__name__}")
        return value


def describe_validation_error(error: ValidationError) -> str:
    """'field: message' for each problem, short enough for a log line and a DLQ record."""
    parts = []
    for item in error.errors()[:_MAX_ERRORS_IN_DETAIL]:
        location = ".".join(str(part) for part in item["loc"]) or "payload"
        parts.append(f"{location}: {item['msg']}")
    more = error.error_count() - _MAX_ERRORS_IN_DETAIL
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
