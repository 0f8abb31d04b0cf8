"""The one canonical byte encoding: deterministic JSON (sorted keys, no spaces, UTF-8).

Used wherever bytes are hashed, compared or written to Kafka, so that equal messages are
equal bytes.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


def to_jsonable(message: BaseModel | Any) -> Any:
    """Plain JSON value of a model (None fields omitted) or of an already plain value."""
    if isinstance(message, BaseModel):
        return message.model_dump(mode="json", exclude_none=True, by_alias=True)
    return message


def encode(message: BaseModel | Any) -> bytes:
    """Canonical bytes of a pydantic model or a plain JSON value. NaN and infinities are refused."""
    return json.dumps(
        to_jsonable(message),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
