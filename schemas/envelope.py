"""What the gateway writes to Kafka: validated readings in an envelope, rejects to the DLQ."""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from schemas.base import Message
from schemas.identifiers import UtcDatetime
from schemas.telemetry import READING_ID_PATTERN, Telemetry, reading_id

# Kafka takes 1 MiB a record by default and base64 adds a third: 256 KiB of raw bytes keeps any
# DLQ record far below it, and is at least any valid reading (max_payload_bytes caps those).
DLQ_PAYLOAD_MAX_BYTES = 256 * 1024


class GatewayEnvelope(Message):
    """A validated reading as received by one gateway (value of ``telemetry.v1``)."""

    received_at: UtcDatetime
    gateway_id: Annotated[str, Field(min_length=1, max_length=128)]
    mqtt_topic: str
    reading: Telemetry
    reading_id: Annotated[str, Field(pattern=rf"{READING_ID_PATTERN}|^$", description=(
        "identity of the reading (schemas.telemetry.reading_id), set by the gateway; "
        "computed on reading when absent (records written before it existed)"))] = ""

    @model_validator(mode="after")
    def _identified(self) -> GatewayEnvelope:
        if not self.reading_id:
            object.__setattr__(self, "reading_id", reading_id(self.reading))  # frozen model
        return self


class RejectReason(StrEnum):
    """Why input was rejected; the DLQ and the metrics are labelled with these codes."""

    NOT_JSON = "not_json"
    SCHEMA = "schema"
    BAD_TOPIC = "bad_topic"
    SPOOFED_TOPIC = "spoofed_topic"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    INTERNAL = "internal"  # our own failure while handling it: kept, counted, looked into


class DlqRecord(Message):
    """Rejected input with its reason (value of ``telemetry.dlq.v1``): the raw bytes whole up
    to a bound that keeps the record within Kafka's size limit, and always the full payload's
    size and SHA-256, so a truncated original can still be matched."""

    received_at: UtcDatetime
    gateway_id: str
    source: Annotated[str, Field(description="where it came from, e.g. 'mqtt' or a Kafka topic")]
    mqtt_topic: str | None = None
    reason: RejectReason
    detail: Annotated[str, Field(description="precise, human-readable explanation")]
    payload_b64: Annotated[str, Field(
        description="the raw payload bytes (at most the first 256 KiB), base64")]
    payload_size: Annotated[int, Field(ge=0, description="size of the whole payload")]
    payload_sha256: Annotated[str | None, Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the whole payload, hex")] = None

    @property
    def payload(self) -> bytes:
        """The kept bytes: the whole payload unless ``truncated``."""
        return base64.b64decode(self.payload_b64)

    @property
    def truncated(self) -> bool:
        return len(self.payload) < self.payload_size
