"""The rule engine and the alert lifecycle: pure, one reading in, alert events out.

One open alert per (container, rule): ``raised`` once, ``updated`` on repeats (count,
last_seen, worst value), ``cleared`` when the condition ends or the declaration changes.
Alert ids are ``<container>/<rule>/<incident number>``, so a replay of the same readings from
the same state produces the same ids and versions.

Telemetry is not trusted to end what matters (ISA-18.2's latched alarms): a critical alert
(seal broken, door opened, hold violation, vessel mismatch by default) never clears; an
officer ``acknowledged`` and ``closed`` it (``command``). Other alerts clear only on a reading
from a device that reported the condition, so an unrelated device cannot end it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas import Alert, AlertCommand, AlertState, Declaration, Evidence, Rule, Severity
from schemas.telemetry import (
    AnyReading,
    ContainerReading,
    GateReading,
    parse_telemetry,
    reading_id,
)
from schemas.transit import Clearance, DischargeCertificate, PortEvent, TransitEvent
from streams.rules.checks import CHECKS, Finding
from streams.rules.state import EVIDENCE_KEPT, ContainerState, OpenAlert
from streams.rules.thresholds import Thresholds
from streams.transit.dcsa import gate_event, port_event
from streams.transit.iot import iot_events
from streams.transit.tracker import (
    Leg,
    check_overdue,
    judge,
    on_declaration,
    on_reading,
)


@dataclass(frozen=True)
class Context:
    container_no: str
    port: str
    declaration: Declaration | None
    ts: datetime


def latched(rule: Rule, thresholds: Thresholds) -> bool:
    """Whether only an officer may end this rule's alerts."""
    return thresholds.severity(rule) == Severity.CRITICAL


def _alert(context: Context, rule: Rule, open_alert: OpenAlert, *, state: AlertState,
           finding: Finding | None, thresholds: Thresholds,
           command: AlertCommand | None = None) -> Alert:
    return Alert(
        alert_id=open_alert.alert_id, rule=rule, severity=thresholds.severity(rule), state=state,
        container_no=context.container_no,
        declaration_id=context.declaration.declaration_id if context.declaration else None,
        port=context.port, first_seen=open_alert.first_seen, last_seen=open_alert.last_seen,
        count=open_alert.count, version=open_alert.version,
        measured=finding.measured if finding else {},
        declared=finding.declared if finding else {},
        evidence=tuple(open_alert.evidence),
        officer=command.officer if command else None,
        reason=command.reason if command else None,
    )


def apply(state: ContainerState, finding: Finding, context: Context, evidence: Evidence | None,
          thresholds: Thresholds) -> Alert | None:
    """Move the (container, rule) alert through its lifecycle; the event to publish, if any.
    ``evidence`` is None when the clock, not a reading, found it (a deadline passed)."""
    rule, current = finding.rule, state.alerts.get(finding.rule)
    if not finding.active:
        if current is None or context.ts < current.last_seen:
            return None  # nothing open, or a late reading older than the evidence
        if latched(rule, thresholds) or evidence is None or evidence.device_id not in {
                e.device_id for e in current.evidence}:
            return None  # an officer ends it, or a device that never saw it cannot
        del state.alerts[rule]
        current.version += 1
        current.last_seen = max(current.last_seen, context.ts)
        return _alert(context, rule, current, state=AlertState.CLEARED, finding=finding,
                      thresholds=thresholds)
    if current is None:
        incident = state.incidents.get(rule, 0) + 1
        state.incidents[rule] = incident
        current = OpenAlert(alert_id=f"{context.container_no}/{rule.value}/{incident}",
                            first_seen=context.ts, last_seen=context.ts, count=1, version=1,
                            worst=finding.worst, evidence=[evidence] if evidence else [],
                            raised_by=evidence.reading_id if evidence else None)
        state.alerts[rule] = current
        return _alert(context, rule, current, state=AlertState.RAISED, finding=finding,
                      thresholds=thresholds)
    current.count += 1
    current.version += 1
    current.first_seen = min(current.first_seen, context.ts)
    current.last_seen = max(current.last_seen, context.ts)
    if finding.worst is not None:
        current.worst = max(current.worst or finding.worst, finding.worst)
    if evidence is not None:
        current.evidence = [*current.evidence, evidence][-EVIDENCE_KEPT:]
    return _alert(context, rule, current, state=AlertState.UPDATED, finding=finding,
                  thresholds=thresholds)


def clear_all(state: ContainerState, context: Context, thresholds: Thresholds) -> list[Alert]:
    """The declaration changed: every open incident was judged against the old one, except
    the critical ones, which stay until an officer closes them."""
    cleared = []
    for rule, open_alert in sorted(state.alerts.items()):
        if latched(rule, thresholds):
            continue
        open_alert.version += 1
        cleared.append(_alert(context, rule, open_alert, state=AlertState.CLEARED, finding=None,
                              thresholds=thresholds))
        del state.alerts[rule]
    state.undeclared_since = state.undeclared_last = None
    return cleared


def command(state: ContainerState, order: AlertCommand, declaration: Declaration | None,
            thresholds: Thresholds) -> Alert | None:
    """An officer's acknowledgement or closing of an open alert; the event to publish, or None
    when the incident is not open (closed already, a replay, or a later incident)."""
    found = next(((rule, a) for rule, a in state.alerts.items()
                  if a.alert_id == order.alert_id), None)
    if found is None:
        return None
    rule, open_alert = found
    if None not in (order.raised_by, open_alert.raised_by) and (
            order.raised_by != open_alert.raised_by):
        return None
    if order.action == "acknowledge":
        if open_alert.acknowledged_by is not None:
            return None
        open_alert.acknowledged_by = order.officer
        new_state = AlertState.ACKNOWLEDGED
    else:
        del state.alerts[rule]
        new_state = AlertState.CLOSED
    open_alert.version += 1
    context = Context(order.container_no, order.port, declaration, open_alert.last_seen)
    return _alert(context, rule, open_alert, state=new_state, finding=None,
                  thresholds=thresholds, command=order)


@dataclass
class Outcome:
    """What one reading causes: alert events, and for a container on a declared movement its
    steps and, at a clean arrival, the discharge certificate."""

    alerts: list[Alert] = field(default_factory=list)
    transit: list[TransitEvent] = field(default_factory=list)
    certificate: DischargeCertificate | None = None
    clearance: Clearance | None = None
    port_events: list[PortEvent] = field(default_factory=list)  # DCSA LOAD / DISC


def _port_events(steps: list[TransitEvent], declaration: Declaration, created: datetime
                 ) -> list[PortEvent]:
    return [event for step in steps if (event := port_event(step, declaration, created))]


def declare(state: ContainerState, declaration: Declaration, thresholds: Thresholds, *,
            issuer: str, now: datetime) -> Outcome:
    """A new declaration version: follow its movement, if it declares one, and judge the
    readings that came before it (kept in ``state.early``) against it: declarations and
    telemetry are two topics read by two agents, so a replay, or a declaration read a moment
    after the first readings, must lose neither the departure nor an anomaly."""
    state.transit, declared = on_declaration(state.transit, declaration)
    early, state.early, state.early_dropped = state.early, [], 0
    outcome = Outcome(transit=declared.events,
                      port_events=_port_events(declared.events, declaration, now))
    if not early:
        return outcome
    first = parse_telemetry(early[0].reading)
    outcome.alerts = clear_all(state, Context(declaration.container_no, first.port, declaration,
                                              first.ts), thresholds)
    state.declaration_version = declaration.version
    # What the tracker reported is learnt again from these readings: taken as known, a door
    # opened among them was no event.
    state.door = state.door_at = state.fence = state.fence_at = None
    for kept in early:  # in the order they came
        judged = _judge(parse_telemetry(kept.reading), declaration, state, thresholds,
                        kept.evidence, issuer=issuer, now=now)
        outcome.alerts += judged.alerts
        outcome.transit += judged.transit
        outcome.port_events += judged.port_events
        outcome.certificate = judged.certificate or outcome.certificate
        outcome.clearance = judged.clearance or outcome.clearance
    return outcome


def sweep_transit(state: ContainerState, declaration: Declaration, thresholds: Thresholds, *,
                  clock: datetime, now: datetime, issuer: str) -> Outcome:
    """The clock's part of a movement: overdue once ``clock`` (the latest event time the
    worker has seen) passed the deadline of a movement still on its way — with a silent
    tracker too — and an arrival judged once its late evidence had time (``now``: wall)."""
    leg = Leg.of(declaration, thresholds, issuer)
    if leg is None or state.transit is None:
        return Outcome()
    overdue = check_overdue(state.transit, leg, clock)
    judged = judge(state.transit, leg, now)
    context = Context(declaration.container_no, leg.movement.destination, declaration, clock)
    evidence = state.transit.arrival or state.transit.departure
    alerts = [alert for finding in (*overdue.findings, *judged.findings)
              if (alert := apply(state, finding, context, evidence, thresholds))]
    steps = overdue.events + judged.events
    return Outcome(alerts=alerts, transit=steps, certificate=judged.certificate,
                   clearance=judged.clearance or overdue.clearance,
                   port_events=_port_events(steps, declaration, now))


def evaluate(reading: AnyReading, declaration: Declaration | None, state: ContainerState,
             thresholds: Thresholds, evidence: Evidence, *, issuer: str = "smartport-streams",
             now: datetime | None = None) -> Outcome:
    """Everything one reading causes (``state`` is updated in place); ``issuer`` signs off a
    discharge certificate, ``now`` is the wall clock (the reading's own time when not given:
    replays and tests)."""
    container_no = getattr(reading, "container_no", None)
    if container_no is None or not state.first_time(
            reading.device_id, evidence.reading_id or reading_id(reading)):
        return Outcome()
    cleared: list[Alert] = []
    version = declaration.version if declaration else None
    if version != state.declaration_version:
        context = Context(container_no, reading.port, declaration, reading.ts)
        cleared = clear_all(state, context, thresholds)
        state.declaration_version = version
    if declaration is None and state.transit is None:
        state.keep_early(reading.model_dump_json(), evidence)  # judged when it is declared
    outcome = _judge(reading, declaration, state, thresholds, evidence, issuer=issuer,
                     now=now or reading.ts)
    outcome.alerts = cleared + outcome.alerts
    return outcome


def _judge(reading: AnyReading, declaration: Declaration | None, state: ContainerState,
           thresholds: Thresholds, evidence: Evidence, *, issuer: str, now: datetime
           ) -> Outcome:
    """The rules, the declared movement and the port events for one new reading."""
    context = Context(getattr(reading, "container_no", ""), reading.port, declaration,
                      reading.ts)
    findings = [finding for check in CHECKS.values()
                if (finding := check(reading, declaration, state, thresholds)) is not None]
    outcome = Outcome()
    leg = Leg.of(declaration, thresholds, issuer)
    if leg is not None and state.transit is not None:
        followed = on_reading(state.transit, leg, reading, evidence, now=now)
        judged = judge(state.transit, leg, now)
        findings += followed.findings + judged.findings
        outcome.transit = followed.events + judged.events
        outcome.certificate = judged.certificate
        outcome.clearance = judged.clearance or followed.clearance
        outcome.port_events = _port_events(outcome.transit, leg.declaration, now)
    if isinstance(reading, GateReading) and (
            passage := gate_event(reading, declaration, evidence, now)):
        outcome.port_events.append(passage)
    if isinstance(reading, ContainerReading):
        outcome.port_events += iot_events(reading, declaration, state, thresholds.geofences,
                                          evidence=evidence, created=now)
    outcome.alerts = [alert for finding in findings
                      if (alert := apply(state, finding, context, evidence, thresholds))]
    return outcome
