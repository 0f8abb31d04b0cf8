"""The simulated linked port, judged by the pure rule engine: every injected transit fault
raises exactly one alert naming its failed check, every clean transit yields exactly one
discharge certificate, and nothing else is raised."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ingest.linked import FAULTS, LinkedConfig, LinkedPorts
from ingest.validation import Accepted, Limits, classify
from schemas import AlertState, Evidence, Rule
from schemas.transit import CheckName, Clearance, DischargeCertificate, TransitPhase
from streams.rules.engine import Outcome, declare, evaluate, sweep_transit
from streams.rules.state import EARLY_KEPT, ContainerState
from streams.rules.thresholds import Thresholds

START = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


@dataclass
class Judged:
    raised: list[tuple[str, Rule, str]] = field(default_factory=list)
    certificates: list[DischargeCertificate] = field(default_factory=list)
    phases: Counter[TransitPhase] = field(default_factory=Counter)
    clearance: dict[str, Clearance] = field(default_factory=dict)  # the latest, as compacted


def _judge(linked: LinkedPorts, *, declared_first: bool = True) -> Judged:
    """Through the engine as the worker runs it; with ``declared_first=False`` every reading
    reaches it before its container's declaration (a replay that loads them together)."""
    judged = Judged()
    declarations = {d.container_no: d for d in linked.declarations}
    states = {number: ContainerState() for number in declarations}

    def declare_all() -> None:
        for number, declaration in declarations.items():
            _take(judged, declare(states[number], declaration, Thresholds(), issuer="test",
                                 now=START))

    if declared_first:
        declare_all()
    now = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    clock = START
    for offset, message in enumerate(linked.messages()):
        accepted = classify(message.topic, message.payload, Limits(), now)
        assert isinstance(accepted, Accepted), accepted
        reading = accepted.reading
        container = getattr(reading, "container_no", None)
        assert container is not None
        evidence = Evidence(topic="telemetry.v1", partition=0, offset=offset,
                            device_id=reading.device_id, seq=reading.seq)
        outcome = evaluate(reading, declarations[container] if declared_first else None,
                           states[container], Thresholds(), evidence, issuer="test")
        _take(judged, outcome)
        clock = max(clock, reading.ts)
    if not declared_first:
        declare_all()
    for number, declaration in declarations.items():  # the worker's sweep, a day later
        swept = sweep_transit(states[number], declaration, Thresholds(), clock=clock,
                              now=clock + timedelta(days=1), issuer="test")
        _take(judged, swept)
    return judged


def _take(judged: Judged, outcome: Outcome) -> None:
    judged.raised += [(a.container_no, a.rule, str(a.measured.get("failed_checks", "")))
                      for a in outcome.alerts if a.state is AlertState.RAISED]
    judged.phases.update(step.phase for step in outcome.transit)
    if outcome.certificate is not None:
        judged.certificates.append(outcome.certificate)
    if outcome.clearance is not None:
        judged.clearance[outcome.clearance.container_no] = outcome.clearance


def test_a_clean_run_discharges_every_container_on_one_declaration() -> None:
    linked = LinkedPorts(LinkedConfig(containers=30, seed=3, start=START))
    judged = _judge(linked)
    assert judged.raised == []
    assert sorted(c.container_no for c in judged.certificates) == sorted(
        d.container_no for d in linked.declarations)
    assert judged.phases[TransitPhase.DISCHARGED] == 30
    assert {c.status for c in judged.clearance.values()} == {"green"}


def test_each_injected_fault_raises_one_alert_naming_its_check_and_nothing_else() -> None:
    linked = LinkedPorts(LinkedConfig(containers=80, seed=7, fault_rate=0.5, start=START))
    faulty = {t.declaration.container_no: t for t in linked.transits if t.fault}
    assert {t.fault for t in faulty.values()} == set(FAULTS)  # every kind of fault is there
    judged = _judge(linked)
    expected = sorted((number, *_named(t.expected)) for number, t in faulty.items())
    assert sorted(judged.raised) == expected
    assert sorted(c.container_no for c in judged.certificates) == sorted(
        t.declaration.container_no for t in linked.transits if not t.fault)
    assert {n: c.status for n, c in judged.clearance.items()} == {
        t.declaration.container_no: "held" if t.fault else "green" for t in linked.transits}
    for number, transit in faulty.items():  # held, with the failed check as the reason
        check = _named(transit.expected)[1]
        assert judged.clearance[number].reasons[0].startswith(check or "overdue")
    truth = sorted(m.truth for m in linked.messages() if m.truth)
    assert truth == sorted((number, t.expected[0]) for number, t in faulty.items()
                           if t.expected)


def _named(expected: tuple[Rule, CheckName | None] | None) -> tuple[Rule, str]:
    assert expected is not None
    rule, check = expected
    return rule, check.value if check else ""


def test_the_same_seed_gives_the_same_messages() -> None:
    def payloads(seed: int) -> list[bytes]:
        return [m.payload for m in LinkedPorts(LinkedConfig(
            containers=5, seed=seed, fault_rate=0.5, start=START)).messages()]

    assert payloads(4) == payloads(4)
    assert payloads(4) != payloads(5)


def test_readings_that_beat_their_declaration_are_replayed_when_it_comes() -> None:
    """Declarations and telemetry are two topics read by two agents: a reading may reach the
    worker before its container's declaration. The movement must still be judged on it (it
    was not: the departure lift was lost, and every container failed 'identity')."""
    linked = LinkedPorts(LinkedConfig(containers=40, seed=7, fault_rate=0.3, start=START))
    faulty = {t.declaration.container_no: t for t in linked.transits if t.fault}
    judged = _judge(linked, declared_first=False)
    assert sorted(c.container_no for c in judged.certificates) == sorted(
        d.container_no for d in linked.declarations if d.container_no not in faulty)
    transit_rules = {Rule.TRANSIT_DISCREPANCY, Rule.TRANSIT_OVERDUE}
    raised = sorted((n, rule, checks) for n, rule, checks in judged.raised
                    if rule in transit_rules)
    assert raised == sorted((n, t.expected[0], t.expected[1].value if t.expected[1] else "")
                            for n, t in faulty.items() if t.expected)
    # Until its declaration came, each container was an undeclared one: that is an alert
    # of its own (the terminal's), which the declaration clears.
    assert {rule for _, rule, _ in judged.raised} - transit_rules <= {Rule.UNDECLARED_CONTAINER}


def test_an_undeclared_flood_is_kept_bounded() -> None:
    state = ContainerState()
    linked = LinkedPorts(LinkedConfig(containers=1, seed=2, start=START))
    [declaration] = linked.declarations
    for offset, message in enumerate(linked.messages()):
        accepted = classify(message.topic, message.payload, Limits(), START + timedelta(days=1))
        assert isinstance(accepted, Accepted)
        for copy in range(5):  # five distinct readings each (seq moved on)
            reading = accepted.reading.model_copy(update={"seq": accepted.reading.seq * 10
                                                          + copy})
            evaluate(reading, None, state, Thresholds(), Evidence(
                topic="telemetry.v1", partition=0, offset=offset * 10 + copy,
                device_id=reading.device_id, seq=reading.seq))
    assert len(state.early) == EARLY_KEPT
    assert state.early_dropped > 0
    declare(state, declaration, Thresholds(), issuer="test", now=START)
    assert (state.early, state.early_dropped) == ([], 0)
