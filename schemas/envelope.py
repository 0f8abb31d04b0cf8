"""What the gateway writes to Kafka: validated readings in an envelope, rejects to the DLQ."""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from schemas.base import Message
from schemas.identifiers import UtcDatetime
from schemas.telemetry import Telemetry


class GatewayEnvelope(Message):
    """A validated reading as received by one gateway (value of ``telemetry.v1``)."""

    received_at: UtcDatetime
    gateway_id: Annotated[str, Field(min_length=1, max_length=128)]
    mqtt_topic: str
    reading: Telemetry


class RejectReason(StrEnum):
    """Why input was rejected; the DLQ and the metrics are labelled with these codes."""

    NOT_JSON = "not_json"
    SCHEMA = "schema"
    BAD_TOPIC = "bad_topic"
    SPOOFED_TOPIC = "spoofed_topic"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"


class DlqRecord(Message):
    """Rejected input, kept whole with its reason (value of ``telemetry.dlq.v1``)."""

    received_at: UtcDatetime
    gateway_id: str
    source: Annotated[str, Field(description="where it came from, e.g. 'mqtt' or a Kafka topic")]
    mqtt_topic: str | None = None
    reason: RejectReason
    detail: Annotated[str, Field(description="precise, human-readable explanation")]
    payload_b64: Annotated[str, Field(description="the raw payload bytes, base64")]
    payload_size: Annotated[int, Field(ge=0)]

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)
