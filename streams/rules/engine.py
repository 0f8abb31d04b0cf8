"""The rule engine and the alert lifecycle: pure, one reading in, alert events out.

One open alert per (container, rule): ``raised`` once, ``updated`` on repeats (count,
last_seen, worst value), ``cleared`` when the condition ends or the declaration changes.
Alert ids are ``<container>/<rule>/<incident number>``, so a replay of the same readings from
the same state produces the same ids and versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas import Alert, AlertState, Declaration, Evidence, Rule
from schemas.telemetry import AnyReading, reading_id
from streams.rules.checks import CHECKS, Finding
from streams.rules.state import EVIDENCE_KEPT, ContainerState, OpenAlert
from streams.rules.thresholds import Thresholds


@dataclass(frozen=True)
class Context:
    container_no: str
    port: str
    declaration: Declaration | None
    ts: datetime


def _alert(context: Context, rule: Rule, open_alert: OpenAlert, *, state: AlertState,
           finding: Finding | None, thresholds: Thresholds) -> Alert:
    return Alert(
        alert_id=open_alert.alert_id, rule=rule, severity=thresholds.severity(rule), state=state,
        container_no=context.container_no,
        declaration_id=context.declaration.declaration_id if context.declaration else None,
        port=context.port, first_seen=open_alert.first_seen, last_seen=open_alert.last_seen,
        count=open_alert.count, version=open_alert.version,
        measured=finding.measured if finding else {},
        declared=finding.declared if finding else {},
        evidence=tuple(open_alert.evidence),
    )


def apply(state: ContainerState, finding: Finding, context: Context, evidence: Evidence,
          thresholds: Thresholds) -> Alert | None:
    """Move the (container, rule) alert through its lifecycle; the event to publish, if any."""
    rule, current = finding.rule, state.alerts.get(finding.rule)
    if not finding.active:
        if current is None or context.ts < current.last_seen:
            return None  # nothing open, or a late reading older than the evidence
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
                            worst=finding.worst, evidence=[evidence])
        state.alerts[rule] = current
        return _alert(context, rule, current, state=AlertState.RAISED, finding=finding,
                      thresholds=thresholds)
    current.count += 1
    current.version += 1
    current.first_seen = min(current.first_seen, context.ts)
    current.last_seen = max(current.last_seen, context.ts)
    if finding.worst is not None:
        current.worst = max(current.worst or finding.worst, finding.worst)
    current.evidence = [*current.evidence, evidence][-EVIDENCE_KEPT:]
    return _alert(context, rule, current, state=AlertState.UPDATED, finding=finding,
                  thresholds=thresholds)


def clear_all(state: ContainerState, context: Context, thresholds: Thresholds) -> list[Alert]:
    """The declaration changed: every open incident was judged against the old one."""
    cleared = []
    for rule, open_alert in sorted(state.alerts.items()):
        open_alert.version += 1
        cleared.append(_alert(context, rule, open_alert, state=AlertState.CLEARED, finding=None,
                              thresholds=thresholds))
    state.alerts.clear()
    state.undeclared_since = state.undeclared_last = None
    return cleared


def evaluate(reading: AnyReading, declaration: Declaration | None, state: ContainerState,
             thresholds: Thresholds, evidence: Evidence) -> list[Alert]:
    """Every alert event one reading causes (``state`` is updated in place)."""
    container_no = getattr(reading, "container_no", None)
    if container_no is None or not state.first_time(
            reading.device_id, evidence.reading_id or reading_id(reading)):
        return []
    context = Context(container_no, reading.port, declaration, reading.ts)
    events: list[Alert] = []
    version = declaration.version if declaration else None
    if version != state.declaration_version:
        events += clear_all(state, context, thresholds)
        state.declaration_version = version
    for check in CHECKS.values():
        finding = check(reading, declaration, state, thresholds)
        if finding is not None:
            event = apply(state, finding, context, evidence, thresholds)
            if event is not None:
                events.append(event)
    return events
