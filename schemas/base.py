"""The base of every message model: strict, closed, immutable, versioned."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION: Literal[1] = 1


class Message(BaseModel):
    """A wire message. Unknown fields and type coercion ("5" for 5) are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    schema_version: Literal[1] = SCHEMA_VERSION
