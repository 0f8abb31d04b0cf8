"""The Kafka records the gateway writes: enveloped readings and DLQ entries (pure)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from ingest.validation import Accepted, Rejected
from schemas import DlqRecord, GatewayEnvelope, encode
from schemas.envelope import DLQ_PAYLOAD_MAX_BYTES


def envelope_value(accepted: Accepted, topic: str, gateway_id: str, received_at: datetime) -> bytes:
    return encode(GatewayEnvelope(
        received_at=received_at, gateway_id=gateway_id, mqtt_topic=topic, reading=accepted.reading
    ))


def dlq_value(
    rejected: Rejected,
    payload: bytes,
    *,
    gateway_id: str,
    received_at: datetime,
    source: str = "mqtt",
    mqtt_topic: str | None = None,
) -> bytes:
    return encode(DlqRecord(
        received_at=received_at,
        gateway_id=gateway_id,
        source=source,
        mqtt_topic=mqtt_topic,
        reason=rejected.reason,
        detail=rejected.detail,
        payload_b64=base64.b64encode(payload[:DLQ_PAYLOAD_MAX_BYTES]).decode("ascii"),
        payload_size=len(payload),
        payload_sha256=hashlib.sha256(payload).hexdigest(),
    ))
