"""IoT events from a container's own tracker (pure): its door opened or closed, its entry into
or exit from a port's geofence — each on a change of what the latest (event-time) reading
reported, so a repeated or late reading is no event, and a first report is no change.

Published as DCSA-shaped IoT events (event domain 3.1: ``eventType IOT``, ``iotEventTypeCode
DETC``, ``iotEventCode``, ``geoLocation``, ``equipmentReference``). DCSA has a code for one of
them, ``DRO`` (door opened); the others use smartport's codes in the same field: ``DRC`` (door
closed), ``GFI`` and ``GFO`` (geofence in, out).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas import Declaration, Evidence
from schemas.telemetry import ContainerReading
from schemas.transit import PortEvent
from streams.rules.state import ContainerState
from streams.rules.thresholds import Geofence
from streams.transit.corridor import Fix, distance_m
from streams.transit.dcsa import derived, event_id, passage_of, timestamp

DCSA_IOT_CODES = frozenset({"DRO"})  # what DCSA's iotEventCode has; the rest are smartport's
DOOR_CODES = {"open": "DRO", "closed": "DRC"}


def inside(fences: dict[str, Geofence], lat: float, lon: float) -> str:
    """The port whose geofence holds the point, or ""."""
    point = Fix(lat, lon)  # per reading: no model to build
    return next((port for port, fence in sorted(fences.items())
                 if distance_m(point, fence) <= fence.radius_m), "")


def iot_events(reading: ContainerReading, declaration: Declaration | None,
               state: ContainerState, fences: dict[str, Geofence], *, evidence: Evidence,
               created: datetime) -> list[PortEvent]:
    """The IoT events of one tracker reading (``state`` in place); only for a declared
    container, like every DCSA event."""
    changes: list[tuple[str, str]] = []  # (code, port)
    if reading.door is not None and (state.door_at is None or reading.ts > state.door_at):
        if state.door is not None and state.door != reading.door:
            changes.append((DOOR_CODES[reading.door], reading.port))
        state.door, state.door_at = reading.door, reading.ts
    if reading.lat is not None and reading.lon is not None and (
            state.fence_at is None or reading.ts > state.fence_at):
        now_in = inside(fences, reading.lat, reading.lon)
        if state.fence is not None and state.fence != now_in:
            if state.fence:
                changes.append(("GFO", state.fence))
            if now_in:
                changes.append(("GFI", now_in))
        state.fence, state.fence_at = now_in, reading.ts
    if declaration is None:
        return []
    return [_event(code, port, reading, declaration, evidence=evidence, created=created)
            for code, port in changes]


def _event(code: str, port: str, reading: ContainerReading, declaration: Declaration, *,
           evidence: Evidence, created: datetime) -> PortEvent:
    dcsa: dict[str, Any] = {
        "eventID": event_id(declaration.container_no, passage_of(reading, evidence), code),
        "eventType": "IOT",
        "eventClassifierCode": "ACT",
        "eventDateTime": timestamp(reading.ts),
        "eventCreatedDateTime": timestamp(created),
        "iotEventTypeCode": "DETC",
        "iotEventCode": code,
        "equipmentReference": declaration.container_no,
        "eventLocation": {"UNLocationCode": port},
    }
    if reading.lat is not None and reading.lon is not None:
        dcsa["geoLocation"] = {"latitude": f"{reading.lat:+.6f}",
                               "longitude": f"{reading.lon:+.6f}"}
    return derived(declaration, dcsa, evidence=(evidence,))
