"""Following one container's declared movement, reading by reading (pure).

Phases: lodged → released (the declaration is released at the origin) → departed (a quay
crane at the origin finished lifting it onto a barge; a truck took it out of the origin's gate)
→ arrived (a quay crane at the destination finished lifting it off; the truck brought it in
through the destination's gate) → discharged, or discrepancy; overdue when the deadline
passes first. After the release the container's own tracker is the witness: every seal or
door report, every position fix and every report time is kept, bounded, with its event time.
Readings arrive late and out of order (the two ports publish through two MQTT sessions), so
an arrival waits ``transit_settle_s`` of wall clock for late evidence; then the checks of
``schemas.transit.CheckName`` run once (``judge``) over what falls inside the leg: all passed,
a ``DischargeCertificate``; any failed, a ``transit_discrepancy`` finding naming the failed
checks (the alert lifecycle of ``streams.rules.engine`` raises it, latched until an officer
closes it). The clock that declares a movement overdue is the caller's: the latest event time
it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

from schemas import Declaration, Evidence, Rule
from schemas.declaration import RELEASED_STATUSES
from schemas.telemetry import AnyReading, ContainerReading, CraneReading, GateReading
from schemas.transit import (
    CheckName,
    Clearance,
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
from streams.transit.state import IN_TRANSIT, OPEN_PHASES, Sighting, TransitState

EVIDENCE_SHOWN = 5  # per check: the earliest, which show when the trouble began
SIGHTINGS_KEPT = 50  # per kind, between the release and the judgement
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
    clearance: Clearance | None = None
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


def on_reading(state: TransitState, leg: Leg, reading: AnyReading, evidence: Evidence, *,
               now: datetime) -> TransitOutcome:
    """What one reading of the container tells about its movement (``state`` in place);
    ``now`` is the wall clock, from which late evidence of an arrival is awaited."""
    movement = leg.movement
    outcome = TransitOutcome()
    if state.movement_id != movement.movement_id or state.released_at is None or (
            reading.ts < state.released_at):
        return outcome
    if isinstance(reading, ContainerReading):
        _witness(state, movement, reading, evidence)
    elif (passage := carrier_passage(reading, movement)) is not None:
        carrier, load = passage
        if reading.port == movement.origin and state.departed_at is None and (
                state.arrived_at is None or reading.ts <= state.arrived_at):
            state.departed_at, state.departure = reading.ts, evidence
            state.departure_carrier = carrier
            if state.phase == TransitPhase.RELEASED:  # else it arrived first (out of order)
                state.phase = TransitPhase.DEPARTED
                outcome.events.append(_event(state, leg.declaration, reading.ts,
                                             evidence=evidence))
        elif reading.port == movement.destination and state.arrived_at is None and (
                state.phase in (*OPEN_PHASES, TransitPhase.OVERDUE)):
            state.phase, state.arrived_at = TransitPhase.ARRIVED, reading.ts
            state.arrival, state.arrival_seen_at = evidence, now
            state.arrival_carrier, state.arrival_load_kg = carrier, load
            outcome.events.append(_event(state, leg.declaration, reading.ts, evidence=evidence))
    overdue = check_overdue(state, leg, reading.ts)
    outcome.events += overdue.events
    outcome.findings += overdue.findings
    outcome.clearance = overdue.clearance
    return outcome


def carrier_passage(reading: AnyReading, movement: Movement
                    ) -> tuple[str | None, float | None] | None:
    """The carrier and the container's mass, when ``reading`` is the movement's departure
    from its origin or arrival at its destination as its mode sees them: a quay crane's lift
    onto or off a barge; a truck out of the origin's gate, in through the destination's."""
    if movement.mode == "barge" and isinstance(reading, CraneReading) and (
            reading.event == LIFT_DONE):
        return reading.vessel_imo, reading.load_kg
    if movement.mode == "truck" and isinstance(reading, GateReading) and (
            (reading.port, reading.event) in ((movement.origin, "gate_out"),
                                               (movement.destination, "gate_in"))):
        return reading.truck_plate, reading.load_kg
    return None


def check_overdue(state: TransitState, leg: Leg, now: datetime) -> TransitOutcome:
    """Declare the movement overdue once ``now`` (event time) passed its deadline."""
    movement = leg.movement
    outcome = TransitOutcome()
    if state.phase not in OPEN_PHASES or now <= movement.deadline:
        return outcome
    state.phase, state.overdue_raised = TransitPhase.OVERDUE, True
    outcome.events.append(_event(state, leg.declaration, now))
    outcome.clearance = _clearance(leg, now, [
        f"overdue: not discharged at {movement.destination} by its deadline "
        f"{movement.deadline:%Y-%m-%dT%H:%M:%SZ}"])
    outcome.findings.append(Finding(
        Rule.TRANSIT_OVERDUE, True,
        {"movement_id": movement.movement_id, "phase_before": "departed"
         if state.departed_at else "released"},
        {"deadline": movement.deadline.isoformat(), "destination": movement.destination}))
    return outcome


def judge(state: TransitState, leg: Leg, now: datetime) -> TransitOutcome:
    """Run the checks of an arrived movement once its late evidence had ``transit_settle_s``
    (wall clock) to come in: a certificate, or a discrepancy naming the failed checks."""
    settle = timedelta(seconds=leg.thresholds.transit_settle_s)
    if state.phase != TransitPhase.ARRIVED or state.arrival_seen_at is None or (
            now < state.arrival_seen_at + settle):
        return TransitOutcome()
    assert state.arrived_at is not None
    declaration, movement = leg.declaration, leg.movement

    checks = _checks(state, leg)
    outcome = TransitOutcome()
    failed = [check for check in checks if not check.passed]
    if not failed:
        state.phase = TransitPhase.DISCHARGED
        assert state.released_at is not None
        assert state.departed_at is not None
        outcome.certificate = DischargeCertificate(
            movement_id=movement.movement_id, container_no=declaration.container_no,
            declaration_id=declaration.declaration_id,
            declaration_version=declaration.version, origin=movement.origin,
            destination=movement.destination, corridor_id=movement.corridor.corridor_id,
            mode=movement.mode, carrier=movement.carrier,
            released_at=state.released_at, departed_at=state.departed_at,
            arrived_at=state.arrived_at, checks=tuple(checks), issued_by=leg.issuer)
        outcome.clearance = _clearance(leg, state.arrived_at, [])
    else:
        state.phase = TransitPhase.DISCREPANCY
        outcome.clearance = _clearance(leg, state.arrived_at, [
            f"{check.check.value}: {check.detail}" for check in failed])
        # An overdue movement's lateness was alerted when its deadline passed.
        new = [check for check in failed
               if not (state.overdue_raised and check.check == CheckName.DEADLINE)]
        if new:
            outcome.findings.append(Finding(
                Rule.TRANSIT_DISCREPANCY, True,
                {"failed_checks": ",".join(check.check.value for check in new),
                 "detail": "; ".join(check.detail for check in new)[:500]},
                {"movement_id": movement.movement_id, "origin": movement.origin,
                 "destination": movement.destination}))
    outcome.events.append(_event(state, declaration, state.arrived_at, evidence=state.arrival,
                                 checks=checks))
    return outcome


def _witness(state: TransitState, movement: Movement, reading: ContainerReading,
             evidence: Evidence) -> None:
    """Keep what the container's tracker says after its release; which of it falls inside
    the leg is decided when the leg is judged (readings arrive out of order)."""
    if state.phase not in IN_TRANSIT or (
            state.arrived_at is not None and reading.ts > state.arrived_at):
        return
    for kind, happened in (("seal broken", reading.seal_state == "broken"),
                           ("door opened", reading.door == "open")):
        if happened:
            _keep(state.breaches, Sighting(at=reading.ts, evidence=evidence, note=kind))
    if len(state.reports) < MAX_REPORTS:
        state.reports.append(reading.ts)
    else:
        state.reports_dropped += 1
    if reading.lat is not None and reading.lon is not None:
        off = off_corridor_m(GeoPoint(lat=reading.lat, lon=reading.lon), movement.corridor)
        if off > 0:
            _keep(state.off_corridor, Sighting(at=reading.ts, evidence=evidence,
                                               note=f"{off:.0f}"))
    if reading.port == movement.destination and reading.seal_id is not None:
        _keep(state.seals, Sighting(at=reading.ts, evidence=evidence, note=reading.seal_id))


def _checks(state: TransitState, leg: Leg) -> list[TransitCheck]:
    declaration, movement, thresholds = leg.declaration, leg.movement, leg.thresholds
    released, arrived = state.released_at, state.arrived_at
    assert released is not None
    assert arrived is not None
    departed = state.departed_at or arrived  # never seen loaded: the identity check says so
    leg_only = [s for s in state.off_corridor if departed <= s.at <= arrived]
    breaches = [s for s in state.breaches if released <= s.at <= arrived]
    seals = [s for s in state.seals if departed <= s.at <= arrived]
    read, sealed = {s.note for s in seals}, set(movement.seals)
    gap_s, gap_from = _longest_silence(state.reports, departed, arrived)
    tolerance = max(thresholds.weight_tolerance_ratio * declaration.gross_mass_kg,
                    thresholds.weight_tolerance_kg)
    load = state.arrival_load_kg
    ends = tuple(e for e in (state.departure, state.arrival) if e is not None)
    arrival = tuple(e for e in (state.arrival,) if e is not None)
    worst = max((float(s.note) for s in leg_only), default=0.0)
    mode = movement.mode
    return [
        TransitCheck(check=CheckName.SEALS, passed=read == sealed, evidence=_shown(seals),
                     detail=f"read at {movement.destination}: "
                     f"{', '.join(sorted(read)) or 'none'}; applied at release: "
                     f"{', '.join(sorted(sealed))}"),
        TransitCheck(check=CheckName.INTEGRITY, passed=not breaches, evidence=_shown(breaches),
                     detail=(f"{' and '.join(sorted({s.note for s in breaches}))} between "
                             "release and arrival" if breaches
                             else "seal intact and door closed throughout")),
        TransitCheck(check=CheckName.CORRIDOR, passed=not leg_only, evidence=_shown(leg_only),
                     detail=(f"{len(leg_only)} fixes outside corridor "
                             f"{movement.corridor.corridor_id}, up to {worst:.0f} m beyond its "
                             f"{movement.corridor.buffer_m:.0f} m buffer" if leg_only
                             else f"every fix within {movement.corridor.buffer_m:.0f} m of "
                             f"corridor {movement.corridor.corridor_id}")),
        TransitCheck(check=CheckName.REPORTING, passed=gap_s <= movement.corridor.max_gap_s,
                     evidence=ends, detail=(
                         f"longest silence {gap_s:.0f} s from {gap_from:%Y-%m-%dT%H:%M:%SZ}; "
                         f"allowed {movement.corridor.max_gap_s:.0f} s")),
        TransitCheck(check=CheckName.DEADLINE, passed=arrived <= movement.deadline,
                     evidence=arrival, detail=(
                         f"arrived {arrived:%Y-%m-%dT%H:%M:%SZ}, deadline "
                         f"{movement.deadline:%Y-%m-%dT%H:%M:%SZ}; transit "
                         f"{(arrived - departed).total_seconds():.0f} s")),
        TransitCheck(check=CheckName.MASS, passed=load is not None and abs(
            load - declaration.gross_mass_kg) <= tolerance, evidence=arrival,
            detail=f"measured {load if load is not None else 'nothing'} kg at "
            f"{movement.destination}, declared {declaration.gross_mass_kg:.0f} kg "
            f"± {tolerance:.0f}"),
        TransitCheck(check=CheckName.IDENTITY, passed={
            state.departure_carrier, state.arrival_carrier} == {movement.carrier},
            evidence=ends, detail=(
                f"left {movement.origin} on {state.departure_carrier or f'no {mode} seen'}, "
                f"reached {movement.destination} on "
                f"{state.arrival_carrier or f'no {mode} named'}; declared {mode} "
                f"{movement.carrier}")),
    ]


def _longest_silence(reports: list[datetime], departed: datetime, arrived: datetime
                     ) -> tuple[float, datetime]:
    """The longest time without a tracker report between departure and arrival, and where it
    began (readings may have arrived out of order)."""
    times = [departed, *sorted(t for t in reports if departed <= t <= arrived), arrived]
    return max(((b - a).total_seconds(), a) for a, b in pairwise(times))


def _keep(kept: list[Sighting], sighting: Sighting) -> None:
    """The earliest sightings, bounded: they show when the trouble began."""
    if any(s.evidence == sighting.evidence for s in kept):
        return  # a redelivery
    kept.append(sighting)
    kept.sort(key=lambda s: s.at)
    del kept[SIGHTINGS_KEPT:]


def _shown(sightings: list[Sighting]) -> tuple[Evidence, ...]:
    return tuple(s.evidence for s in sightings[:EVIDENCE_SHOWN])


def _clearance(leg: Leg, at: datetime, reasons: list[str]) -> Clearance:
    return Clearance(container_no=leg.declaration.container_no,
                     movement_id=leg.movement.movement_id,
                     declaration_id=leg.declaration.declaration_id,
                     destination=leg.movement.destination,
                     status="held" if reasons else "green", reasons=tuple(reasons), at=at)


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
