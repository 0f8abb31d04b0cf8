"""DCSA Track & Trace events derived from what the terminal saw (pure).

``LOAD`` when a quay crane at the origin lifted a container onto its movement's declared barge,
``DISC`` when one at the destination lifted it off; ``GTIN`` and ``GTOT`` when a truck gate's
reader saw a declared container pass in or out; a shipment event of the customs document
(``CUS``) when a declaration's status changes. TNT 2.2 (event domain 2.0.2) field names and
codes, validated in the tests against DCSA's own schemas (``tests/data/dcsa``). Event ids are
UUIDs derived from what the event is of — the container, the movement and the code; for a gate
passage the reading — so a replayed step or reading gives the same event (a movement id is the
declarant's: two containers' movements may share one).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from schemas import Declaration, DeclarationStatus, Evidence
from schemas.telemetry import AnyReading, GateReading, reading_id
from schemas.transit import PortEvent, RecordPosition, TransitEvent, TransitPhase

# The namespace of smartport's DCSA event ids (uuid5 of "<container>/<movement id>/<code>",
# or of "<container>/<reading id>/<code>" for a gate passage).
EVENT_ID_NAMESPACE = uuid.UUID("6f1f0a52-4a57-5c3b-9a4e-3d3c2b9b7e10")
CODES = {TransitPhase.DEPARTED: "LOAD", TransitPhase.ARRIVED: "DISC"}
GATE_CODES = {"gate_in": "GTIN", "gate_out": "GTOT"}
# A customs declaration's status as DCSA's shipment event type (document type CUS).
CUSTOMS_CODES = {
    DeclarationStatus.LODGED: "RECE",  # received
    DeclarationStatus.UNDER_REVIEW: "PENA",  # pending approval
    DeclarationStatus.HELD: "HOLD",
    DeclarationStatus.RELEASED: "RELS",
    DeclarationStatus.CLEARED: "CMPL",  # completed
}


def event_id(container_no: str, named: str, code: str) -> str:
    """A DCSA event's id: the same for the same container, thing and code, so a replay folds."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{container_no}/{named}/{code}"))


def passage_of(reading: AnyReading, evidence: Evidence) -> str:
    """What a reading's event is of: the reading itself (its identity)."""
    return evidence.reading_id or reading_id(reading)


def derived(declaration: Declaration, dcsa: dict[str, Any], *,
            evidence: tuple[Evidence, ...] = (),
            record: RecordPosition | None = None) -> PortEvent:
    """A DCSA event wrapped with the container's declaration and what it was derived from."""
    movement = declaration.movement
    return PortEvent(container_no=declaration.container_no,
                     movement_id=movement.movement_id if movement else None,
                     declaration_id=declaration.declaration_id, dcsa=dcsa, evidence=evidence,
                     declaration_record=record)


def timestamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _equipment_event(code: str, named: str, declaration: Declaration, *, port: str,
                     at: datetime, created: datetime, transport_call: dict[str, Any],
                     seals: tuple[str, ...]) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventID": event_id(declaration.container_no, named, code),
        "eventType": "EQUIPMENT",
        "eventClassifierCode": "ACT",
        "eventDateTime": timestamp(at),
        "eventCreatedDateTime": timestamp(created),
        "equipmentEventTypeCode": code,
        "equipmentReference": declaration.container_no,
        "emptyIndicatorCode": "LADEN",
        "facilityTypeCode": "POTE",
        "eventLocation": {"UNLocationCode": port},
        "transportCall": {"location": {"UNLocationCode": port}, **transport_call},
    }
    if seals:
        event["seals"] = [{"sealNumber": seal, "sealSource": "CUS", "sealType": "BLT"}
                          for seal in seals]
    return event


def port_event(step: TransitEvent, declaration: Declaration, created: datetime
               ) -> PortEvent | None:
    """The DCSA event of a movement's step, if DCSA has one for it; ``created`` is when the
    terminal derived it (DCSA's eventCreatedDateTime)."""
    code, movement = CODES.get(step.phase), declaration.movement
    if code is None or movement is None or movement.movement_id != step.movement_id or (
            movement.mode != "barge"):
        return None  # a truck's departure and arrival are its gate passages (GTOT, GTIN)
    port = movement.origin if code == "LOAD" else movement.destination
    dcsa = _equipment_event(
        code, movement.movement_id, declaration, port=port, at=step.at, created=created,
        transport_call={"transportCallID": f"{movement.movement_id}/{port}",
                        "modeOfTransport": "BARGE",
                        "vessel": {"vesselIMONumber": movement.carrier}},
        seals=movement.seals)
    return derived(declaration, dcsa, evidence=step.evidence)


def gate_event(reading: GateReading, declaration: Declaration | None, evidence: Evidence,
               created: datetime) -> PortEvent | None:
    """The DCSA ``GTIN``/``GTOT`` of a declared container's gate passage (an undeclared
    container's passage is the terminal rules' business, not an event to publish)."""
    code = GATE_CODES.get(reading.event)
    if code is None or declaration is None or reading.container_no != declaration.container_no:
        return None
    named = passage_of(reading, evidence)
    transport_call: dict[str, Any] = {
        "transportCallID": f"{reading.port}/{reading.device_id}/{timestamp(reading.ts)}",
        "modeOfTransport": "TRUCK"}
    dcsa = _equipment_event(code, named, declaration, port=reading.port, at=reading.ts,
                            created=created, transport_call=transport_call,
                            seals=declaration.seal_numbers)
    return derived(declaration, dcsa, evidence=(evidence,))


def customs_event(declaration: Declaration, previous: Declaration | None,
                  record: RecordPosition, created: datetime) -> PortEvent | None:
    """The DCSA shipment event of a declaration whose status changed (or was first seen): the
    customs document (``CUS``, its id the declaration's) received, pending, held, released or
    completed. A later version with the same status is no event; nor is an older version
    replayed after a newer one."""
    if previous is not None and (previous.version >= declaration.version
                                 or previous.status == declaration.status):
        return None
    code = CUSTOMS_CODES[declaration.status]
    dcsa = {
        "eventID": event_id(declaration.container_no,
                            f"{declaration.declaration_id}/{declaration.version}", code),
        "eventType": "SHIPMENT",
        "eventClassifierCode": "ACT",
        "eventDateTime": timestamp(declaration.updated_at),
        "eventCreatedDateTime": timestamp(created),
        "shipmentEventTypeCode": code,
        "documentTypeCode": "CUS",
        "documentID": declaration.declaration_id,
    }
    return derived(declaration, dcsa, record=record)
