"""What the evidence of a container's declared movement says so far (kept in the container's
state table entry, so it survives a worker restart)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from schemas import Evidence
from schemas.transit import TransitPhase

# Released or on the way: the deadline runs.
OPEN_PHASES = frozenset({TransitPhase.RELEASED, TransitPhase.DEPARTED})
# ... or late, or arrived and not judged yet: until it is judged, the movement's own checks
# judge its seals, its barge and its mass at the destination, not the terminal rules (one
# fault, one alert).
IN_TRANSIT = OPEN_PHASES | {TransitPhase.OVERDUE, TransitPhase.ARRIVED}


class Sighting(BaseModel):
    """One reading that matters to a check, with its event time: readings arrive late and out
    of order (two ports, two MQTT sessions), so which ones fall inside the leg is decided when
    the leg is judged."""

    at: datetime
    evidence: Evidence
    note: str = ""  # what was seen: "door opened", a seal id, metres off the corridor


class TransitState(BaseModel):
    """What the leg's evidence says so far (kept in the container's state)."""

    movement_id: str
    declaration_id: str
    declaration_version: int
    phase: TransitPhase = TransitPhase.LODGED
    released_at: datetime | None = None
    departed_at: datetime | None = None
    departure: Evidence | None = None
    departure_carrier: str | None = None
    arrived_at: datetime | None = None
    arrival: Evidence | None = None
    arrival_carrier: str | None = None
    arrival_load_kg: float | None = None
    arrival_seen_at: datetime | None = None  # wall clock: late evidence is awaited from then
    overdue_raised: bool = False  # its lateness was alerted: arriving late is not a new alert
    reports: list[datetime] = Field(default_factory=list)  # every tracker report since release
    reports_dropped: int = 0
    off_corridor: list[Sighting] = Field(default_factory=list)
    breaches: list[Sighting] = Field(default_factory=list)
    seals: list[Sighting] = Field(default_factory=list)  # seal ids read at the destination
