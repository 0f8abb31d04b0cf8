"""DCSA Track & Trace equipment events derived from a movement's steps (pure).

``LOAD`` when a quay crane at the origin lifted the container onto the declared barge, ``DISC``
when one at the destination lifted it off: TNT 2.2 (event domain 2.0.2) field names and codes,
validated in the tests against DCSA's own schemas (``tests/data/dcsa``). The event id is a UUID
derived from the container, the movement and the code, so a replayed step gives the same event
(a movement id is the declarant's: two containers' movements may share one).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from schemas import Declaration
from schemas.transit import PortEvent, TransitEvent, TransitPhase

# The namespace of smartport's DCSA event ids (uuid5 of "<container>/<movement id>/<code>").
EVENT_ID_NAMESPACE = uuid.UUID("6f1f0a52-4a57-5c3b-9a4e-3d3c2b9b7e10")
CODES = {TransitPhase.DEPARTED: "LOAD", TransitPhase.ARRIVED: "DISC"}


def _timestamp(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def port_event(step: TransitEvent, declaration: Declaration, created: datetime
               ) -> PortEvent | None:
    """The DCSA event of a movement's step, if DCSA has one for it; ``created`` is when the
    terminal derived it (DCSA's eventCreatedDateTime)."""
    code, movement = CODES.get(step.phase), declaration.movement
    if code is None or movement is None or movement.movement_id != step.movement_id:
        return None
    port = movement.origin if code == "LOAD" else movement.destination
    dcsa: dict[str, Any] = {
        "eventID": str(uuid.uuid5(EVENT_ID_NAMESPACE, "/".join(
            (declaration.container_no, movement.movement_id, code)))),
        "eventType": "EQUIPMENT",
        "eventClassifierCode": "ACT",
        "eventDateTime": _timestamp(step.at),
        "eventCreatedDateTime": _timestamp(created),
        "equipmentEventTypeCode": code,
        "equipmentReference": declaration.container_no,
        "emptyIndicatorCode": "LADEN",
        "facilityTypeCode": "POTE",
        "eventLocation": {"UNLocationCode": port},
        "transportCall": {
            "transportCallID": f"{movement.movement_id}/{port}",
            "modeOfTransport": "BARGE",
            "location": {"UNLocationCode": port},
            "vessel": {"vesselIMONumber": movement.carrier_imo},
        },
        "seals": [{"sealNumber": seal, "sealSource": "CUS", "sealType": "BLT"}
                  for seal in movement.seals],
    }
    return PortEvent(container_no=declaration.container_no, movement_id=movement.movement_id,
                     declaration_id=declaration.declaration_id, dcsa=dcsa,
                     evidence=step.evidence)
