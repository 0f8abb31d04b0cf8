"""What the evidence of a container's declared movement says so far (kept in the container's
state table entry, so it survives a worker restart)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from schemas import Evidence
from schemas.transit import TransitPhase

# Released or on the way: the deadline runs.
OPEN_PHASES = frozenset({TransitPhase.RELEASED, TransitPhase.DEPARTED})
# ... or late: until it arrives, the movement's own checks judge its seals, its barge and its
# mass at the destination, not the terminal rules (one fault, one alert).
IN_TRANSIT = OPEN_PHASES | {TransitPhase.OVERDUE}


class TransitState(BaseModel):
    """What the leg's evidence says so far (kept in the container's state)."""

    movement_id: str
    declaration_id: str
    declaration_version: int
    phase: TransitPhase = TransitPhase.LODGED
    released_at: datetime | None = None
    departed_at: datetime | None = None
    arrived_at: datetime | None = None
    departure: Evidence | None = None
    departure_carrier: str | None = None
    reports: list[datetime] = Field(default_factory=list)
    reports_dropped: int = 0
    off_corridor: list[Evidence] = Field(default_factory=list)
    worst_off_corridor_m: float = 0.0
    breaches: list[Evidence] = Field(default_factory=list)
    breach_kinds: list[str] = Field(default_factory=list)
    seals_read: list[str] = Field(default_factory=list)
    seal_evidence: list[Evidence] = Field(default_factory=list)
