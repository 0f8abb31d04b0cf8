"""Following one container's declared movement, reading by reading (pure).

Phases: lodged → released (the declaration is released at the origin) → departed (a quay
crane at the origin finished lifting it onto a barge) → arrived (a quay crane at the
destination finished lifting it off) → discharged, or discrepancy; overdue when the deadline
passes first. Between release and arrival the container's own tracker is the witness: every
seal or door report, every position fix and every silence is kept, bounded. At arrival the
checks of ``schemas.transit.CheckName`` run once: all passed, a ``DischargeCertificate``;
any failed, a ``transit_discrepancy`` finding naming the failed checks (the alert lifecycle of
``streams.rules.engine`` then raises it, latched until an officer closes it).

Event time throughout: readings may arrive late or out of order; the clock that declares a
movement overdue is the caller's (the latest event time it has seen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from schemas import Declaration, Evidence, Rule
from schemas.declaration import RELEASED_STATUSES
from schemas.telemetry import AnyReading, ContainerReading, CraneReading
from schemas.transit import (
    CheckName,
    DischargeCertificate,
    GeoPoint,
    Movement,
    TransitCheck,
    TransitEvent,
    TransitPhase,
)
from streams.rules.checks import Finding
from streams.rules.thresholds import Thresholds
from streams.transit.corridor import off_corridor_m
from streams.transit.state import OPEN_PHASES, TransitState

EVIDENCE_KEPT = 5  # per check: the first ones, which show when the trouble began
MAX_REPORTS = 20_000  # tracker report times kept per leg (a report a second for 5 h)
LIFT_DONE = "lift_end"  # a quay crane finished a lift: onto the barge at the origin, off it at
# the destination (DCSA LOAD and DISC)


@dataclass(frozen=True)
class Leg:
    """The declared movement being followed, and how to judge it."""

    declaration: Declaration
    movement: Movement
    thresholds: Thresholds
    issuer: str  # who signs off a certificate: the streams application's id

    @classmethod
    def of(cls, declaration: Declaration | None, thresholds: Thresholds, issuer: str
           ) -> Leg | None:
        if declaration is None or declaration.movement is None:
            return None
        return cls(declaration, declaration.movement, thresholds, issuer)


@dataclass
class TransitOutcome:
    events: list[TransitEvent] = field(default_factory=list)
    certificate: DischargeCertificate | None = None
    findings: list[Finding] = field(default_factory=list)


def on_declaration(state: TransitState | None, declaration: Declaration
                   ) -> tuple[TransitState | None, TransitOutcome]:
    """A new declaration version: start following its movement, or note its release."""
    outcome = TransitOutcome()
    movement = declaration.movement
    if movement is None:
        return state, outcome
    if state is None or state.movement_id != movement.movement_id:
        state = TransitState(movement_id=movement.movement_id,
                             declaration_id=declaration.declaration_id,
                             declaration_version=declaration.version)
        outcome.events.append(_event(state, declaration, declaration.updated_at))
    state.declaration_version = declaration.version
    if state.phase == TransitPhase.LODGED and declaration.status in RELEASED_STATUSES:
        state.phase, state.released_at = TransitPhase.RELEASED, declaration.updated_at
        outcome.events.append(_event(state, declaration, declaration.updated_at))
    return state, outcome


def on_reading(state: TransitState, leg: Leg, reading: AnyReading, evidence: Evidence
               ) -> TransitOutcome:
    """What one reading of the container tells about its movement (``state`` in place)."""
    movement = leg.movement
    outcome = TransitOutcome()
    if state.movement_id != movement.movement_id or state.released_at is None or (
            reading.ts < state.released_at):
        return outcome
    if isinstance(reading, ContainerReading):
        _witness(state, movement, reading, evidence)
    elif isinstance(reading, CraneReading) and reading.event == LIFT_DONE:
        if reading.port == movement.origin and state.phase == TransitPhase.RELEASED:
            state.phase, state.departed_at = TransitPhase.DEPARTED, reading.ts
            state.departure, state.departure_carrier = evidence, reading.vessel_imo
            outcome.events.append(_event(state, leg.declaration, reading.ts, evidence=evidence))
        elif reading.port == movement.destination and state.phase in (
                TransitPhase.DEPARTED, TransitPhase.OVERDUE):
            return _arrive(state, leg, reading, evidence)
    overdue = check_overdue(state, leg, reading.ts)
    outcome.events += overdue.events
    outcome.findings += overdue.findings
    return outcome


def check_overdue(state: TransitState, leg: Leg, now: datetime) -> TransitOutcome:
    """Declare the movement overdue once ``now`` (event time) passed its deadline."""
    movement = leg.movement
    outcome = TransitOutcome()
    if state.phase not in OPEN_PHASES or now <= movement.deadline:
        return outcome
    state.phase = TransitPhase.OVERDUE
    outcome.events.append(_event(state, leg.declaration, now))
    outcome.findings.append(Finding(
        Rule.TRANSIT_OVERDUE, True,
        {"movement_id": movement.movement_id, "phase_before": "departed"
         if state.departed_at else "released"},
        {"deadline": movement.deadline.isoformat(), "destination": movement.destination}))
    return outcome


def _witness(state: TransitState, movement: Movement, reading: ContainerReading,
             evidence: Evidence) -> None:
    """Keep what the container's tracker says between release and arrival."""
    if state.phase not in (*OPEN_PHASES, TransitPhase.OVERDUE):
        return
    broken = [kind for kind, happened in (("seal broken", reading.seal_state == "broken"),
                                          ("door opened", reading.door == "open")) if happened]
    if broken:
        state.breach_kinds = sorted({*state.breach_kinds, *broken})
        _keep(state.breaches, evidence)
    if state.departed_at is None or reading.ts < state.departed_at:
        return
    if len(state.reports) < MAX_REPORTS:
        state.reports.append(reading.ts)
    else:
        state.reports_dropped += 1
    if reading.lat is not None and reading.lon is not None:
        off = off_corridor_m(GeoPoint(lat=reading.lat, lon=reading.lon), movement.corridor)
        if off > 0:
            state.worst_off_corridor_m = max(state.worst_off_corridor_m, off)
            _keep(state.off_corridor, evidence)
    if reading.port == movement.destination and reading.seal_id is not None:
        state.seals_read = sorted({*state.seals_read, reading.seal_id})
        _keep(state.seal_evidence, evidence)


def _arrive(state: TransitState, leg: Leg, lift: CraneReading, evidence: Evidence
            ) -> TransitOutcome:
    declaration, movement = leg.declaration, leg.movement
    already_overdue = state.phase == TransitPhase.OVERDUE  # its alert was raised then
    state.arrived_at = lift.ts
    checks = _checks(state, leg, lift, evidence)
    outcome = TransitOutcome()
    state.phase = TransitPhase.ARRIVED
    outcome.events.append(_event(state, declaration, lift.ts, evidence=evidence, checks=checks))
    failed = [check for check in checks if not check.passed]
    if not failed:
        state.phase = TransitPhase.DISCHARGED
        assert state.released_at is not None
        assert state.departed_at is not None
        outcome.certificate = DischargeCertificate(
            movement_id=movement.movement_id, container_no=declaration.container_no,
            declaration_id=declaration.declaration_id,
            declaration_version=declaration.version, origin=movement.origin,
            destination=movement.destination, carrier_imo=movement.carrier_imo,
            released_at=state.released_at, departed_at=state.departed_at,
            arrived_at=lift.ts, checks=tuple(checks), issued_by=leg.issuer)
    else:
        state.phase = TransitPhase.DISCREPANCY
        # An overdue movement's lateness was alerted when its deadline passed.
        new = [check for check in failed
               if not (already_overdue and check.check == CheckName.DEADLINE)]
        if new:
            outcome.findings.append(Finding(
                Rule.TRANSIT_DISCREPANCY, True,
                {"failed_checks": ",".join(check.check.value for check in new),
                 "detail": "; ".join(check.detail for check in new)[:500]},
                {"movement_id": movement.movement_id, "origin": movement.origin,
                 "destination": movement.destination}))
    outcome.events.append(_event(state, declaration, lift.ts, evidence=evidence, checks=checks))
    return outcome


def _checks(state: TransitState, leg: Leg, lift: CraneReading, arrival: Evidence
            ) -> list[TransitCheck]:
    declaration, movement, thresholds = leg.declaration, leg.movement, leg.thresholds
    assert state.departed_at is not None
    ends = tuple(e for e in (state.departure, arrival) if e is not None)
    read, sealed = set(state.seals_read), set(movement.seals)
    gap_s, gap_from = _longest_silence(state.reports, state.departed_at, lift.ts)
    tolerance = max(thresholds.weight_tolerance_ratio * declaration.gross_mass_kg,
                    thresholds.weight_tolerance_kg)
    carriers = {state.departure_carrier, lift.vessel_imo}
    return [
        TransitCheck(check=CheckName.SEALS, passed=read == sealed, evidence=tuple(
            state.seal_evidence), detail=f"read at {movement.destination}: "
            f"{', '.join(sorted(read)) or 'none'}; applied at release: "
            f"{', '.join(sorted(sealed))}"),
        TransitCheck(check=CheckName.INTEGRITY, passed=not state.breaches,
                     evidence=tuple(state.breaches), detail=(
                         f"{' and '.join(state.breach_kinds)} between release and arrival"
                         if state.breaches else "seal intact and door closed throughout")),
        TransitCheck(check=CheckName.CORRIDOR, passed=not state.off_corridor,
                     evidence=tuple(state.off_corridor), detail=(
                         f"{len(state.off_corridor)}+ fixes outside corridor "
                         f"{movement.corridor.corridor_id}, up to "
                         f"{state.worst_off_corridor_m:.0f} m beyond its "
                         f"{movement.corridor.buffer_m:.0f} m buffer" if state.off_corridor
                         else f"every fix within {movement.corridor.buffer_m:.0f} m of "
                         f"corridor {movement.corridor.corridor_id}")),
        TransitCheck(check=CheckName.REPORTING, passed=gap_s <= movement.corridor.max_gap_s,
                     evidence=ends, detail=(
                         f"longest silence {gap_s:.0f} s from {gap_from:%Y-%m-%dT%H:%M:%SZ} "
                         f"({len(state.reports)} reports); allowed "
                         f"{movement.corridor.max_gap_s:.0f} s")),
        TransitCheck(check=CheckName.DEADLINE, passed=lift.ts <= movement.deadline,
                     evidence=(arrival,), detail=(
                         f"arrived {lift.ts:%Y-%m-%dT%H:%M:%SZ}, deadline "
                         f"{movement.deadline:%Y-%m-%dT%H:%M:%SZ}; transit "
                         f"{(lift.ts - state.departed_at).total_seconds():.0f} s")),
        TransitCheck(check=CheckName.MASS, passed=lift.load_kg is not None and abs(
            lift.load_kg - declaration.gross_mass_kg) <= tolerance, evidence=(arrival,),
            detail=f"measured {lift.load_kg if lift.load_kg is not None else 'nothing'} kg at "
            f"{movement.destination}, declared {declaration.gross_mass_kg:.0f} kg "
            f"± {tolerance:.0f}"),
        TransitCheck(check=CheckName.IDENTITY, passed=carriers == {movement.carrier_imo},
                     evidence=ends, detail=(
                         f"loaded on {state.departure_carrier or 'no barge named'}, discharged "
                         f"from {lift.vessel_imo or 'no barge named'}; declared barge "
                         f"{movement.carrier_imo}")),
    ]


def _longest_silence(reports: list[datetime], departed: datetime, arrived: datetime
                     ) -> tuple[float, datetime]:
    """The longest time without a tracker report between departure and arrival, and where it
    began (readings may have arrived out of order)."""
    times = [departed, *sorted(t for t in reports if departed <= t <= arrived), arrived]
    return max(((b - a).total_seconds(), a) for a, b in pairwise(times))


def _keep(kept: list[Evidence], evidence: Evidence) -> None:
    if len(kept) < EVIDENCE_KEPT and evidence not in kept:
        kept.append(evidence)


def _event(state: TransitState, declaration: Declaration, at: datetime, *,
           evidence: Evidence | None = None, checks: list[TransitCheck] | None = None
           ) -> TransitEvent:
    movement = declaration.movement
    assert movement is not None
    return TransitEvent(
        movement_id=movement.movement_id, container_no=declaration.container_no,
        declaration_id=declaration.declaration_id, origin=movement.origin,
        destination=movement.destination, phase=state.phase, at=at,
        checks=tuple(checks or ()), evidence=(evidence,) if evidence else ())
