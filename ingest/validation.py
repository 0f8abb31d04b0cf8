"""Deciding what to do with one MQTT message: accept its reading or reject it with a reason.

Pure: no I/O, so every rule is unit-tested and the gateway stays a thin shell around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from schemas import RejectReason
from schemas.base import describe_validation_error
from schemas.canonical import duplicate_key
from schemas.telemetry import AnyReading, parse_telemetry
from schemas.topics import parse_telemetry_topic
from smartport.settings import Settings

# Python's json parser recurses per nesting level; a reading nests two levels deep.
_NESTING_TOO_DEEP = "payload is nested too deeply to be a reading"


@dataclass(frozen=True, slots=True)
class Limits:
    """What a reading may be: its size, and the window its timestamp must fall in relative to
    the gateway's clock (old readings are fine: trackers upload what they buffered at sea)."""

    max_payload_bytes: int = Settings.model_fields["max_payload_bytes"].default
    not_before: datetime = Settings.model_fields["ts_not_before"].default
    max_ahead_s: float = Settings.model_fields["ts_max_ahead_s"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.max_payload_bytes, settings.ts_not_before, settings.ts_max_ahead_s)


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


def classify(topic: str, payload: bytes, limits: Limits, now: datetime | None = None
             ) -> Accepted | Rejected:
    """Validate one message: size, encoding, JSON (no duplicate keys), schema, a plausible
    timestamp (``now`` is the gateway's clock), and that its topic matches it."""
    named = parse_telemetry_topic(topic)
    device_id = named.device_id if named else None
    if len(payload) > limits.max_payload_bytes:
        return Rejected(RejectReason.OVERSIZED, f"payload is {len(payload)} bytes, the limit is "
                        f"{limits.max_payload_bytes}", device_id)
    if named is None:
        return Rejected(RejectReason.BAD_TOPIC,
                        f"topic {topic!r} is not port/<locode>/<kind>/<device_id>/telemetry")
    try:
        reading = parse_telemetry(payload)
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "json_invalid":
            return Rejected(RejectReason.SCHEMA, describe_validation_error(exc), device_id)
        return _unparseable(payload, exc, device_id)
    duplicate = duplicate_key(payload, len(reading.model_fields_set))
    if duplicate is not None:
        # pydantic keeps the last of duplicate keys; a raw reader may keep the first.
        return Rejected(RejectReason.SCHEMA, f"duplicate key {duplicate!r}: each field may "
                        "appear once", device_id)
    late = _implausible_ts(reading.ts, limits, now or datetime.now(UTC))
    if late is not None:
        return Rejected(RejectReason.SCHEMA, late, device_id)
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


def _implausible_ts(ts: datetime, limits: Limits, now: datetime) -> str | None:
    if ts < limits.not_before:
        return f"ts: {ts.isoformat()} is before {limits.not_before.isoformat()}"
    if ts - now > timedelta(seconds=limits.max_ahead_s):
        return (f"ts: {ts.isoformat()} is more than {limits.max_ahead_s:.0f} s ahead of the "
                f"gateway's clock ({now.isoformat(timespec='seconds')})")
    return None


def _unparseable(payload: bytes, error: ValidationError, device_id: str | None) -> Rejected:
    """The precise reason bytes are not JSON (only on the reject path), from pydantic's own
    parser, which bounds nesting itself. Not the stdlib's json: it recurses as deep as the
    interpreter's recursion limit, which web3 (py_ecc) raises to 100,000 on import, deep enough
    for a 64 KiB payload of ``[`` to overflow the C stack."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(RejectReason.NOT_UTF8, f"payload is not UTF-8: {exc}", device_id)
    message = str(error.errors()[0]["msg"]).removeprefix("Invalid JSON: ")
    if message.startswith("recursion limit exceeded"):
        return Rejected(RejectReason.NOT_JSON, _NESTING_TOO_DEEP, device_id)
    return Rejected(RejectReason.NOT_JSON, f"payload is not JSON: {message}", device_id)
