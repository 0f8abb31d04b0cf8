"""Deciding what to do with one MQTT message: accept its reading or reject it with a reason.

Pure: no I/O, so every rule is unit-tested and the gateway stays a thin shell around it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from schemas import RejectReason
from schemas.base import describe_validation_error
from schemas.telemetry import AnyReading, parse_telemetry
from schemas.topics import parse_telemetry_topic


@dataclass(frozen=True, slots=True)
class Accepted:
    reading: AnyReading

    @property
    def key(self) -> bytes:
        """Kafka key: the container number (co-partitioned with declarations), else the device."""
        return (self.reading.container_no or self.reading.device_id).encode()


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: RejectReason
    detail: str
    device_id: str | None = None

    @property
    def key(self) -> bytes:
        return (self.device_id or "unknown").encode()


def classify(topic: str, payload: bytes, max_payload_bytes: int) -> Accepted | Rejected:
    """Validate one message: size, encoding, JSON, schema, and that its topic matches it."""
    named = parse_telemetry_topic(topic)
    device_id = named.device_id if named else None
    if len(payload) > max_payload_bytes:
        return Rejected(RejectReason.OVERSIZED,
                        f"payload is {len(payload)} bytes, the limit is {max_payload_bytes}",
                        device_id)
    if named is None:
        return Rejected(RejectReason.BAD_TOPIC,
                        f"topic {topic!r} is not port/<locode>/<kind>/<device_id>/telemetry")
    try:
        reading = parse_telemetry(payload)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            return Rejected(RejectReason.SCHEMA, describe_validation_error(exc), device_id)
        return _unparseable(payload, device_id)
    mismatches = [
        f"{field} {got!r} in payload but {want!r} in topic"
        for field, got, want in (
            ("port", reading.port, named.port),
            ("kind", reading.kind, named.kind),
            ("device_id", reading.device_id, named.device_id),
        )
        if got != want
    ]
    if mismatches:
        return Rejected(RejectReason.SPOOFED_TOPIC, "; ".join(mismatches), device_id)
    return Accepted(reading)


def _unparseable(payload: bytes, device_id: str | None) -> Rejected:
    """The precise reason bytes are not JSON (only computed on the reject path)."""
    try:
        json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejected(RejectReason.NOT_UTF8, f"payload is not UTF-8: {exc}", device_id)
    except ValueError as exc:
        return Rejected(RejectReason.NOT_JSON, f"payload is not JSON: {exc}", device_id)
    # json accepts what pydantic's stricter parser refuses (NaN, lone surrogates...).
    return Rejected(RejectReason.NOT_JSON, "payload is not strict JSON (NaN, Infinity or "
                    "invalid escapes are not allowed)", device_id)
