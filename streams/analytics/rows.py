"""Kafka records → ClickHouse rows (pure). A record that is not a valid message is a reject."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas import Alert, AnchorRecord, Declaration, DlqRecord, GatewayEnvelope, topics
from schemas import clickhouse as ch
from schemas.base import describe_validation_error

Row = dict[str, Any]


def _telemetry(value: bytes, partition: int, offset: int) -> Row:
    envelope = GatewayEnvelope.model_validate_json(value)
    reading = envelope.reading
    fields = reading.model_dump()
    return {
        "ts": reading.ts, "received_at": envelope.received_at, "device_id": reading.device_id,
        "boot": reading.boot or 0, "seq": reading.seq, "reading_id": envelope.reading_id,
        "kind": reading.kind, "port": reading.port,
        "container_no": fields.get("container_no") or "", "event": fields.get("event") or "",
        "load_kg": fields.get("load_kg"), "lat": fields.get("lat"), "lon": fields.get("lon"),
        "reefer_temp_c": fields.get("reefer_temp_c"), "door": fields.get("door") or "",
        "seal_state": fields.get("seal_state") or "", "yard_block": fields.get("yard_block") or "",
        "vessel_imo": fields.get("vessel_imo") or "", "gateway_id": envelope.gateway_id,
        "kafka_partition": partition, "kafka_offset": offset, "raw": value.decode(),
    }


def _alert(value: bytes, partition: int, offset: int) -> Row:
    alert = Alert.model_validate_json(value)
    return {
        "last_seen": alert.last_seen, "first_seen": alert.first_seen, "alert_id": alert.alert_id,
        "version": alert.version, "rule": alert.rule.value, "severity": alert.severity.value,
        "state": alert.state.value, "container_no": alert.container_no,
        "declaration_id": alert.declaration_id or "", "port": alert.port, "count": alert.count,
        "measured": json.dumps(alert.measured, sort_keys=True),
        "declared": json.dumps(alert.declared, sort_keys=True), "raw": value.decode(),
    }


def _declaration(value: bytes, partition: int, offset: int) -> Row:
    declaration = Declaration.model_validate_json(value)
    return {
        "updated_at": declaration.updated_at, "declaration_id": declaration.declaration_id,
        "version": declaration.version, "container_no": declaration.container_no,
        "status": declaration.status.value, "gross_mass_kg": declaration.gross_mass_kg,
        "vessel_imo": declaration.vessel_imo, "voyage": declaration.voyage,
        "port_of_loading": declaration.port_of_loading,
        "port_of_discharge": declaration.port_of_discharge, "raw": value.decode(),
    }


def _anchor(value: bytes, partition: int, offset: int) -> Row:
    record = AnchorRecord.model_validate_json(value)
    manifest = record.manifest
    return {
        "created_at": manifest.created_at, "batch_id": manifest.batch_id,
        "topic": manifest.topic, "partition": manifest.partition,
        "first_offset": manifest.first_offset, "last_offset": manifest.last_offset,
        "count": manifest.count, "root": manifest.root, "hash_alg": manifest.hash_alg,
        "aggregate_root": record.aggregate.root, "ledger_kind": record.ledger.kind,
        "ledger_id": record.ledger.ledger_id, "ledger_entry": record.ledger.entry,
    }


def _dlq(value: bytes, partition: int, offset: int) -> Row:
    record = DlqRecord.model_validate_json(value)
    return {
        "received_at": record.received_at, "gateway_id": record.gateway_id,
        "reason": record.reason.value, "detail": record.detail,
        "mqtt_topic": record.mqtt_topic or "", "payload_size": record.payload_size,
        "payload_b64": record.payload_b64, "kafka_partition": partition, "kafka_offset": offset,
    }


CONVERTERS = {
    topics.TELEMETRY: (ch.TELEMETRY, _telemetry),
    topics.ALERTS: (ch.ALERTS, _alert),
    topics.DECLARATIONS: (ch.DECLARATIONS, _declaration),
    topics.ANCHORS: (ch.ANCHORS, _anchor),
    topics.TELEMETRY_DLQ: (ch.DLQ, _dlq),
}
SINK_TOPICS: tuple[str, ...] = tuple(CONVERTERS)


def to_row(topic: str, partition: int, offset: int, value: bytes | None,
           now: datetime) -> tuple[ch.Table, Row]:
    """The table and row for one record; anything unusable becomes a ``sink_rejects`` row."""
    reason = "empty record (a tombstone?)"
    if value:
        table, convert = CONVERTERS[topic]
        try:
            return table, convert(value, partition, offset)
        except (ValidationError, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if isinstance(exc, UnicodeDecodeError) else (
                f"not a valid {table.name} message: {describe_validation_error(exc)}")
    return ch.REJECTS, reject_row(topic, partition, offset, value, reason=reason, now=now)


def reject_row(topic: str, partition: int, offset: int, value: bytes | None, *, reason: str,
               now: datetime) -> Row:
    """A ``sink_rejects`` row: the record whole (as text), where it came from, and why."""
    return {"rejected_at": now, "topic": topic, "kafka_partition": partition,
            "kafka_offset": offset, "reason": reason,
            "raw": (value or b"").decode("utf-8", errors="replace")}
