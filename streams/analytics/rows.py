"""Kafka records → ClickHouse rows (pure). A record that is not a valid message is a reject."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from schemas import Alert, AnchorRecord, Declaration, DlqRecord, GatewayEnvelope, topics
from schemas import clickhouse as ch
from schemas.base import describe_validation_error
from schemas.canonical import duplicate_key
from schemas.transit import Clearance, DischargeCertificate, PortEvent, TransitEvent

Row = dict[str, Any]


def _telemetry(value: bytes, partition: int, offset: int) -> Row:
    envelope = GatewayEnvelope.model_validate_json(value)
    reading = envelope.reading
    # pydantic keeps the last of a key written twice, a raw reader may keep the first
    twice = duplicate_key(value, len(envelope.model_fields_set) + len(reading.model_fields_set))
    if twice is not None:
        raise ValueError(f"a key appears twice: {twice}")
    # What this kind of reading has of a field: a pydantic model keeps its fields in
    # __dict__, and getattr of one another kind lacks costs an AttributeError (3 µs).
    field = reading.__dict__.get

    return {
        "ts": reading.ts, "received_at": envelope.received_at, "device_id": reading.device_id,
        "boot": reading.boot or 0, "seq": reading.seq, "reading_id": envelope.reading_id,
        "kind": reading.kind, "port": reading.port,
        "container_no": field("container_no") or "", "event": field("event") or "",
        "load_kg": field("load_kg"), "lat": field("lat"), "lon": field("lon"),
        "reefer_temp_c": field("reefer_temp_c"), "door": field("door") or "",
        "seal_state": field("seal_state") or "", "yard_block": field("yard_block") or "",
        "vessel_imo": field("vessel_imo") or "", "gateway_id": envelope.gateway_id,
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


def _movement(value: bytes, partition: int, offset: int) -> Row:
    step = TransitEvent.model_validate_json(value)
    return {
        "at": step.at, "movement_id": step.movement_id, "container_no": step.container_no,
        "declaration_id": step.declaration_id, "origin": step.origin,
        "destination": step.destination, "phase": step.phase.value,
        "failed_checks": [check.check.value for check in step.checks if not check.passed],
        "checks": json.dumps([check.model_dump(mode="json", exclude={"evidence"})
                              for check in step.checks], sort_keys=True),
        "kafka_partition": partition, "kafka_offset": offset, "raw": value.decode(),
    }


def _certificate(value: bytes, partition: int, offset: int) -> Row:
    certificate = DischargeCertificate.model_validate_json(value)
    return {
        "arrived_at": certificate.arrived_at, "movement_id": certificate.movement_id,
        "container_no": certificate.container_no,
        "declaration_id": certificate.declaration_id,
        "declaration_version": certificate.declaration_version, "origin": certificate.origin,
        "destination": certificate.destination, "corridor_id": certificate.corridor_id,
        "mode": certificate.mode, "carrier": certificate.carrier,
        "released_at": certificate.released_at,
        "departed_at": certificate.departed_at,
        "transit_seconds": (certificate.arrived_at - certificate.departed_at).total_seconds(),
        "issued_by": certificate.issued_by, "kafka_partition": partition,
        "kafka_offset": offset, "raw": value.decode(),
    }


def _clearance(value: bytes, partition: int, offset: int) -> Row:
    clearance = Clearance.model_validate_json(value)
    return {
        "at": clearance.at, "container_no": clearance.container_no,
        "movement_id": clearance.movement_id, "declaration_id": clearance.declaration_id,
        "destination": clearance.destination, "status": clearance.status,
        "reasons": "; ".join(clearance.reasons), "kafka_partition": partition,
        "kafka_offset": offset, "raw": value.decode(),
    }


EVENT_CODE_FIELDS = {"EQUIPMENT": "equipmentEventTypeCode", "SHIPMENT": "shipmentEventTypeCode",
                     "IOT": "iotEventCode"}


def _port_event(value: bytes, partition: int, offset: int) -> Row:
    event = PortEvent.model_validate_json(value)
    dcsa = event.dcsa
    kind = dcsa["eventType"]  # EQUIPMENT (LOAD, DISC, GTIN, GTOT), SHIPMENT (customs), IOT
    return {
        "event_datetime": datetime.fromisoformat(dcsa["eventDateTime"]),
        "event_id": dcsa["eventID"], "event_type": kind,
        "event_type_code": dcsa[EVENT_CODE_FIELDS[kind]],
        "container_no": event.container_no,
        "un_location": dcsa.get("eventLocation", {}).get("UNLocationCode", ""),
        "movement_id": event.movement_id or "", "declaration_id": event.declaration_id,
        "kafka_partition": partition, "kafka_offset": offset, "raw": value.decode(),
    }


CONVERTERS = {
    topics.TELEMETRY: (ch.TELEMETRY, _telemetry),
    topics.ALERTS: (ch.ALERTS, _alert),
    topics.DECLARATIONS: (ch.DECLARATIONS, _declaration),
    topics.ANCHORS: (ch.ANCHORS, _anchor),
    topics.TELEMETRY_DLQ: (ch.DLQ, _dlq),
    topics.TRANSIT: (ch.MOVEMENTS, _movement),
    topics.CERTIFICATES: (ch.CERTIFICATES, _certificate),
    topics.CLEARANCE: (ch.CLEARANCE, _clearance),
    topics.PORT_EVENTS: (ch.PORT_EVENTS, _port_event),
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
        except ValidationError as exc:
            reason = f"not a valid {table.name} message: {describe_validation_error(exc)}"
        except UnicodeDecodeError as exc:
            reason = str(exc).splitlines()[0]
        except ValueError as exc:  # a key twice, a DCSA time that is not one
            reason = f"not a valid {table.name} message: {exc}"[:2000]
        except (KeyError, TypeError) as exc:  # a DCSA event without its fields
            reason = f"not a valid {table.name} message: {type(exc).__name__} {exc}"[:2000]
    return ch.REJECTS, reject_row(topic, partition, offset, value, reason=reason, now=now)


def reject_row(topic: str, partition: int, offset: int, value: bytes | None, *, reason: str,
               now: datetime) -> Row:
    """A ``sink_rejects`` row: the record whole (as text), where it came from, and why."""
    return {"rejected_at": now, "topic": topic, "kafka_partition": partition,
            "kafka_offset": offset, "reason": reason,
            "raw": (value or b"").decode("utf-8", errors="replace")}
