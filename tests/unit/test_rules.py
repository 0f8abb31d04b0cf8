"""The customs rules and the alert lifecycle, table-driven (pure: no services)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    Alert,
    AlertCommand,
    AlertState,
    Declaration,
    Evidence,
    Rule,
    parse_declaration,
    parse_telemetry,
)
from schemas.telemetry import AnyReading, reading_id
from streams.rules.checks import CHECKS
from streams.rules.engine import command, declare, evaluate
from streams.rules.state import RECENT_PER_DEVICE, ContainerState
from streams.rules.thresholds import Thresholds, load_thresholds
from tests.helpers import container_reading, crane_reading, declaration, rtg_reading

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
TH = Thresholds()


def _declaration(**overrides: Any) -> Declaration:
    return parse_declaration(json.dumps(declaration(**overrides)))


def _reading(sample: dict[str, Any]) -> Any:
    return parse_telemetry(json.dumps(sample))


def _check(rule: Rule, sample: dict[str, Any], decl: Declaration | None = None) -> bool | None:
    finding = CHECKS[rule](_reading(sample), decl if decl is not None else _declaration(),
                           ContainerState(), TH)
    return None if finding is None else finding.active


# declared gross mass 21,000 kg: tolerance max(5 % = 1,050 kg, 500 kg) = 1,050 kg
@pytest.mark.parametrize(("sample", "want"), [
    (crane_reading(load_kg=22_050.0), False),
    (crane_reading(load_kg=22_051.0), True),
    (crane_reading(load_kg=19_950.0), False),
    (crane_reading(load_kg=19_949.0), True),
    (rtg_reading(container_no="CSQU3054383", load_kg=30_000.0), True),
    (crane_reading(load_kg=None), None),
    (container_reading(), None),
], ids=["at-tolerance", "above", "at-lower", "below", "rtg", "no-load", "tracker"])
def test_weight_mismatch(sample: dict[str, Any], want: bool | None) -> None:
    assert _check(Rule.WEIGHT_MISMATCH, sample) is want


def test_weight_tolerance_is_500_kg_for_light_boxes() -> None:
    light = _declaration(gross_mass_kg=4_000.0)  # 5 % = 200 kg < 500 kg
    assert _check(Rule.WEIGHT_MISMATCH, crane_reading(load_kg=4_500.0), light) is False
    assert _check(Rule.WEIGHT_MISMATCH, crane_reading(load_kg=4_501.0), light) is True


@pytest.mark.parametrize(("sample", "want"), [
    (container_reading(), False),
    (container_reading(seal_state="broken"), True),
    (container_reading(seal_id="SL999"), True),
    (container_reading(seal_id=None, seal_state=None), None),
], ids=["intact", "broken", "foreign-seal", "no-seal-data"])
def test_seal_broken(sample: dict[str, Any], want: bool | None) -> None:
    assert _check(Rule.SEAL_BROKEN, sample) is want


@pytest.mark.parametrize(("status", "door", "want"), [
    ("lodged", "open", True), ("held", "open", True), ("under_review", "open", True),
    ("released", "open", False), ("cleared", "open", False), ("lodged", "closed", False),
    ("lodged", None, None),
])
def test_door_opened(status: str, door: str | None, want: bool | None) -> None:
    assert _check(Rule.DOOR_OPENED, container_reading(door=door),
                  _declaration(status=status)) is want


@pytest.mark.parametrize(("event", "status", "want"), [
    ("lift_start", "held", True), ("lift_end", "held", True), ("heartbeat", "held", None),
    ("lift_start", "released", False), ("lift_start", "lodged", False),
])
def test_hold_violation(event: str, status: str, want: bool | None) -> None:
    sample = crane_reading(event=event)
    assert _check(Rule.HOLD_VIOLATION, sample, _declaration(status=status)) is want


def test_hold_violation_for_rtg_moves() -> None:
    sample = rtg_reading(container_no="CSQU3054383", event="move")
    assert _check(Rule.HOLD_VIOLATION, sample, _declaration(status="held")) is True


@pytest.mark.parametrize(("vessel", "want"), [("9074729", False), ("9176187", True), (None, None)])
def test_vessel_mismatch(vessel: str | None, want: bool | None) -> None:
    assert _check(Rule.VESSEL_MISMATCH, crane_reading(vessel_imo=vessel)) is want


@pytest.mark.parametrize(("event", "block", "want"), [
    ("drop", "B3", False), ("drop", "A1", True), ("move", "A1", None), ("pick", "B4", False),
])
def test_zone_violation(event: str, block: str, want: bool | None) -> None:
    sample = rtg_reading(container_no="CSQU3054383", event=event, yard_block=block)
    assert _check(Rule.ZONE_VIOLATION, sample) is want


def test_zone_rule_needs_allowed_blocks() -> None:
    sample = rtg_reading(container_no="CSQU3054383", event="drop", yard_block="A1")
    assert _check(Rule.ZONE_VIOLATION, sample, _declaration(allowed_yard_blocks=None)) is None


# -- the engine: durations, lifecycle, duplicates, order ------------------------------------


def _evidence(reading: AnyReading, offset: int) -> Evidence:
    return Evidence(topic="telemetry.v1", partition=0, offset=offset, device_id=reading.device_id,
                    seq=reading.seq, reading_id=reading_id(reading))


def _run(readings: list[dict[str, Any]], decl: Declaration | None,
         state: ContainerState | None = None) -> tuple[list[Any], ContainerState]:
    state = state or ContainerState()
    events = []
    for offset, sample in enumerate(readings):
        reading = _reading(sample)
        events += evaluate(reading, decl, state, TH, _evidence(reading, offset)).alerts
    return events, state


def _tracker(seq: int, minutes: float, **fields: Any) -> dict[str, Any]:
    ts = (T0 + timedelta(minutes=minutes)).isoformat()
    return container_reading(device_id="trk", seq=seq, ts=ts, **fields)


def test_reefer_excursion_needs_the_grace_period() -> None:
    decl = _declaration()  # reefer -20..-16 °C, grace 300 s
    events, _ = _run([_tracker(1, 0, reefer_temp_c=-10.0), _tracker(2, 4.9, reefer_temp_c=-10.0)],
                     decl)
    assert events == []
    events, _ = _run([_tracker(1, 0, reefer_temp_c=-10.0), _tracker(2, 5, reefer_temp_c=-10.0),
                      _tracker(3, 6, reefer_temp_c=-9.0), _tracker(4, 7, reefer_temp_c=-18.0)],
                     decl)
    assert [(e.rule, e.state, e.count) for e in events] == [
        (Rule.REEFER_EXCURSION, AlertState.RAISED, 1),
        (Rule.REEFER_EXCURSION, AlertState.UPDATED, 2),
        (Rule.REEFER_EXCURSION, AlertState.CLEARED, 2),
    ]
    assert events[1].measured["reefer_temp_c"] == -9.0


def test_out_of_order_readings_use_event_time() -> None:
    decl = _declaration()
    # The 5-minute reading arrives first, the 0-minute one later: still 5 minutes out of range.
    events, _ = _run([_tracker(2, 5, reefer_temp_c=-10.0), _tracker(1, 0, reefer_temp_c=-10.0)],
                     decl)
    assert [(e.rule, e.state) for e in events] == [(Rule.REEFER_EXCURSION, AlertState.RAISED)]
    # A late in-range reading older than the excursion does not end it.
    events, state = _run([_tracker(1, 0, reefer_temp_c=-10.0), _tracker(3, 6, reefer_temp_c=-10.0),
                          _tracker(2, 3, reefer_temp_c=-18.0)], decl)
    assert [e.state for e in events] == [AlertState.RAISED]
    assert Rule.REEFER_EXCURSION in state.alerts


def test_duplicates_are_ignored() -> None:
    opened = _tracker(1, 0, door="open")
    events, _ = _run([opened, opened, opened], _declaration(status="lodged"))
    assert [(e.rule, e.state, e.count) for e in events] == [
        (Rule.DOOR_OPENED, AlertState.RAISED, 1)]


def test_a_restarted_seq_is_a_new_reading_not_a_duplicate() -> None:
    # The device rebooted: seq 1 again, later. Both door openings count; neither is folded.
    before, after = _tracker(1, 0, door="open"), _tracker(1, 5, door="open")
    events, _ = _run([before, after, after], _declaration(status="lodged"))
    assert [(e.state, e.count) for e in events] == [
        (AlertState.RAISED, 1), (AlertState.UPDATED, 2)]
    # With a boot counter, even the same ts is another reading.
    rebooted = {**before, "boot": 1}
    events, _ = _run([before, rebooted], _declaration(status="lodged"))
    assert [e.count for e in events] == [1, 2]


def test_a_forged_reading_under_a_genuine_seq_is_still_judged() -> None:
    # Someone posts "door closed" under the seq and ts of a genuine "door open" first: the
    # genuine reading still raises its alert.
    genuine = _tracker(1, 0, door="open")
    forged = {**genuine, "door": "closed"}
    events, _ = _run([forged, genuine], _declaration(status="lodged"))
    assert [(e.rule, e.state) for e in events] == [(Rule.DOOR_OPENED, AlertState.RAISED)]


def _order(alert: Alert, action: str, officer: str = "Officer Lin",
           reason: str = "seal checked") -> AlertCommand:
    return AlertCommand(alert_id=alert.alert_id, container_no=alert.container_no,
                        port=alert.port, raised_by=alert.evidence[0].reading_id,
                        action=action, officer=officer, reason=reason, at=T0)  # type: ignore[arg-type]


def test_lifecycle_ids_are_deterministic_and_incidents_counted() -> None:
    decl = _declaration(status="lodged")
    readings = [_tracker(1, 0, door="open"), _tracker(2, 1, door="open"),
                _tracker(3, 2, door="closed"), _tracker(4, 3, door="open")]
    first, state = _run(readings, decl)
    replay, _ = _run(readings, decl)
    assert [(e.alert_id, e.version, e.state) for e in first] == [
        (e.alert_id, e.version, e.state) for e in replay]
    # A door opened is critical: closing the door does not end it, an officer does.
    assert [(e.alert_id, e.state, e.version) for e in first] == [
        ("CSQU3054383/door_opened/1", AlertState.RAISED, 1),
        ("CSQU3054383/door_opened/1", AlertState.UPDATED, 2),
        ("CSQU3054383/door_opened/1", AlertState.UPDATED, 3),
    ]
    assert first[1].count == 2
    assert [ev.seq for ev in first[1].evidence] == [1, 2]
    assert first[0].severity.value == "critical"
    closed = command(state, _order(first[0], "close"), decl, TH)
    assert closed is not None
    assert (closed.state, closed.version, closed.officer) == (AlertState.CLOSED, 4, "Officer Lin")
    events, _ = _run([_tracker(5, 4, door="open")], decl, state)
    assert [(e.alert_id, e.state) for e in events] == [
        ("CSQU3054383/door_opened/2", AlertState.RAISED)]


@pytest.mark.parametrize("rule", [Rule.SEAL_BROKEN, Rule.DOOR_OPENED, Rule.HOLD_VIOLATION,
                                  Rule.VESSEL_MISMATCH])
def test_critical_alerts_never_clear_from_telemetry_or_a_new_declaration(rule: Rule) -> None:
    """Only an officer ends them: not the reading that says all is well again, even from the
    device that reported the condition, and not an amended declaration."""
    decl = _declaration(status="held")
    bad, good = {
        Rule.SEAL_BROKEN: (container_reading(seal_state="broken"), container_reading()),
        Rule.DOOR_OPENED: (container_reading(door="open"), container_reading(door="closed")),
        Rule.HOLD_VIOLATION: (crane_reading(event="lift_start", vessel_imo="9074729"), None),
        Rule.VESSEL_MISMATCH: (crane_reading(vessel_imo="9321483"), crane_reading()),
    }[rule]
    events, state = _run([bad], decl)
    assert (rule, AlertState.RAISED) in [(e.rule, e.state) for e in events]
    later = [{**(good or bad), "seq": 2, "ts": "2026-11-24T03:00:00Z"}]
    events, state = _run(later, _declaration(status="released", version=2), state)
    assert (rule, AlertState.CLEARED) not in [(e.rule, e.state) for e in events]
    assert rule in state.alerts


def test_only_a_device_that_saw_the_condition_clears_it() -> None:
    """A non-critical alert (reefer excursion) is not ended by a stranger's reading about the
    same container; the tracker that reported it can end it."""
    decl = _declaration()
    warm = [_tracker(1, 0, reefer_temp_c=-10.0), _tracker(2, 6, reefer_temp_c=-10.0)]
    events, state = _run(warm, decl)
    assert [e.state for e in events] == [AlertState.RAISED]
    stranger = {**_tracker(1, 7, reefer_temp_c=-18.0), "device_id": "tracker-STRANGER"}
    events, state = _run([stranger], decl, state)
    assert events == []
    assert Rule.REEFER_EXCURSION in state.alerts
    events, state = _run([_tracker(3, 8, reefer_temp_c=-18.0)], decl, state)
    assert [(e.rule, e.state) for e in events] == [(Rule.REEFER_EXCURSION, AlertState.CLEARED)]


def test_officers_acknowledge_then_close_and_replays_change_nothing() -> None:
    decl = _declaration()
    events, state = _run([container_reading(seal_state="broken")], decl)
    raised = events[0]
    acknowledged = command(state, _order(raised, "acknowledge", "Officer Wu", "on my way"),
                           decl, TH)
    assert acknowledged is not None
    assert (acknowledged.state, acknowledged.version, acknowledged.officer,
            acknowledged.reason) == (AlertState.ACKNOWLEDGED, 2, "Officer Wu", "on my way")
    assert command(state, _order(raised, "acknowledge"), decl, TH) is None, "a replay"
    closed = command(state, _order(raised, "close"), decl, TH)
    assert closed is not None
    assert (closed.state, closed.version) == (AlertState.CLOSED, 3)
    assert command(state, _order(raised, "close"), decl, TH) is None, "a replay"
    assert state.alerts == {}


def test_a_command_for_an_earlier_incident_does_not_close_a_later_one() -> None:
    decl = _declaration()
    events, state = _run([container_reading(seal_state="broken")], decl)
    stale = _order(events[0], "close").model_copy(update={"raised_by": "0" * 32})
    assert command(state, stale, decl, TH) is None
    assert Rule.SEAL_BROKEN in state.alerts


def test_undeclared_container_after_grace_then_cleared_by_a_declaration() -> None:
    readings = [_tracker(1, 0), _tracker(2, 9.9)]
    events, state = _run(readings, None)
    assert events == []
    events, state = _run([_tracker(3, 10)], None, state)
    assert [(e.rule, e.state) for e in events] == [(Rule.UNDECLARED_CONTAINER, AlertState.RAISED)]
    events, _ = _run([_tracker(4, 11)], _declaration(), state)
    assert (Rule.UNDECLARED_CONTAINER, AlertState.CLEARED) in [(e.rule, e.state) for e in events]


def test_readings_that_beat_their_declaration_are_judged_when_it_comes() -> None:
    """Declarations and telemetry are two topics read by two agents: a reading may reach the
    worker a moment before its container's declaration. It is judged against the declaration
    when that comes, once (it was not: a fault run missed a zone violation injected among the
    run's first readings, and its reefer twin would miss an excursion)."""
    decl = _declaration(allowed_yard_blocks=["A1"])
    dropped = rtg_reading(container_no=decl.container_no, event="drop", yard_block="B3", seq=1,
                           load_kg=21_000.0)
    warm = [_tracker(seq, minutes, reefer_temp_c=-10.0) for seq, minutes in ((1, 0), (2, 6))]
    events, state = _run([dropped, *warm], None)
    assert events == []
    outcome = declare(state, decl, TH, issuer="test", now=T0)
    assert sorted((e.rule, e.state) for e in outcome.alerts) == [
        (Rule.REEFER_EXCURSION, AlertState.RAISED), (Rule.ZONE_VIOLATION, AlertState.RAISED)]
    assert state.early == []
    events, _ = _run([dropped, *warm], decl, state)  # redelivered: not judged again
    assert events == []


def test_a_declaration_clears_the_undeclared_alert_its_early_readings_raised() -> None:
    events, state = _run([_tracker(1, 0), _tracker(2, 10)], None)
    assert [(e.rule, e.state) for e in events] == [(Rule.UNDECLARED_CONTAINER, AlertState.RAISED)]
    outcome = declare(state, _declaration(), TH, issuer="test", now=T0)
    assert [(e.rule, e.state) for e in outcome.alerts] == [
        (Rule.UNDECLARED_CONTAINER, AlertState.CLEARED)]


def test_a_released_hold_stops_alerting_and_the_violation_waits_for_an_officer() -> None:
    held, released = _declaration(status="held"), _declaration(status="released", version=2)
    lift = {"device_id": "qc", "event": "lift_start"}
    events, state = _run([crane_reading(seq=1, **lift), crane_reading(seq=2, **lift)], held)
    assert [e.state for e in events] == [AlertState.RAISED, AlertState.UPDATED]
    events, state = _run([crane_reading(seq=3, **lift), crane_reading(seq=4, **lift)], released,
                         state)
    assert events == []
    assert state.alerts[Rule.HOLD_VIOLATION].count == 2


def test_readings_without_container_are_skipped() -> None:
    events, _ = _run([crane_reading(event="heartbeat", container_no=None)], _declaration())
    assert events == []


def test_thresholds_from_toml(tmp_path: Any) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('reefer_grace_s = 60\n[severities]\nzone_violation = "critical"\n')
    thresholds = load_thresholds(path)
    assert thresholds.reefer_grace_s == 60
    assert thresholds.severity(Rule.ZONE_VIOLATION).value == "critical"
    assert thresholds.severity(Rule.SEAL_BROKEN).value == "critical"
    path.write_text("reefer_grace = 60\n")
    with pytest.raises(Exception, match=r"(?s)rules file .*reefer_grace"):
        load_thresholds(path)


def test_simulator_ground_truth_precision_and_recall() -> None:
    from itertools import islice

    from ingest.fleet import Fleet, FleetConfig
    from ingest.validation import Accepted, Limits, classify

    fleet = Fleet(FleetConfig(devices=120, seed=21, anomaly_rate=0.01, invalid_rate=0.01,
                              start=T0))
    declarations = {d.container_no: d for d in fleet.declarations}
    states: dict[str, ContainerState] = {}
    truth, raised = set(), set()
    for offset, message in enumerate(islice(fleet.messages(), 30_000)):
        if message.truth:
            truth.add((message.truth[0], message.truth[1]))
        outcome = classify(message.topic, message.payload, Limits())
        if not isinstance(outcome, Accepted):
            continue
        reading = outcome.reading
        container = getattr(reading, "container_no", None)
        if container is None:
            continue
        evidence = _evidence(reading, offset)
        state = states.setdefault(container, ContainerState())
        for event in evaluate(reading, declarations.get(container), state, TH, evidence).alerts:
            if event.state is AlertState.RAISED:
                assert (event.container_no, event.rule) not in raised, "a second incident"
                raised.add((event.container_no, event.rule))
    assert len(truth) > 50
    assert raised == truth  # precision and recall both 100 %


def _ids(count: int, start: int = 0) -> list[str]:
    return [reading_id(parse_telemetry(json.dumps(container_reading(seq=seq))))
            for seq in range(start, start + count)]


def test_the_dedup_window_holds_the_last_512_reading_ids_of_each_device() -> None:
    state = ContainerState()
    ids = _ids(RECENT_PER_DEVICE + 1)
    assert all(state.first_time("trk-1", i) for i in ids)
    assert state.first_time("trk-2", ids[-1])  # another device's window
    restored = ContainerState.model_validate_json(state.model_dump_json())
    assert not any(restored.first_time("trk-1", i) for i in ids[1:])  # redeliveries
    assert restored.first_time("trk-1", ids[0])  # beyond the window: judged again
    # What the worker writes per container at each commit: was 18 KB as a list of ids.
    assert len(state.model_dump_json()) < 6_500


def test_a_prefix_found_across_two_kept_ids_is_not_a_redelivery() -> None:
    state = ContainerState()
    assert state.first_time("trk-1", "00000000aaaaaaaa" + "0" * 16)
    assert state.first_time("trk-1", "bbbbbbbb11111111" + "0" * 16)
    # Its first 8 bytes are the tail of one kept prefix and the head of the next.
    assert state.first_time("trk-1", "aaaaaaaabbbbbbbb" + "0" * 16)
    assert not state.first_time("trk-1", "aaaaaaaabbbbbbbb" + "f" * 16)


def test_the_window_is_written_as_one_base64_string_and_read_back() -> None:
    """The changelog's format: states written before the window was kept as bytes in memory
    read back, and new ones are written the same way."""
    ids = _ids(3)
    state = ContainerState()
    assert all(state.first_time("trk-1", i) for i in ids)
    written = json.loads(state.model_dump_json())["recent"]
    assert written == {"trk-1": base64.b64encode(
        b"".join(bytes.fromhex(i[:16]) for i in ids)).decode("ascii")}
    again = ContainerState.model_validate_json(json.dumps({"recent": written}))
    assert not any(again.first_time("trk-1", i) for i in ids)
    assert again.first_time("trk-1", _ids(1, start=3)[0])
    with pytest.raises(ValidationError, match=r"recent\.trk-1"):
        ContainerState.model_validate_json('{"recent": {"trk-1": "not base64!"}}')
    with pytest.raises(ValidationError, match="whole 8-byte prefixes"):
        ContainerState.model_validate_json(json.dumps(
            {"recent": {"trk-1": base64.b64encode(b"x" * 9).decode("ascii")}}))


def test_a_state_written_with_lists_of_ids_keeps_its_window() -> None:
    ids = _ids(3)
    old = json.dumps({"recent_ids": {"trk-1": ids}})
    state = ContainerState.model_validate_json(old)
    assert not any(state.first_time("trk-1", i) for i in ids)
    assert state.first_time("trk-1", _ids(1, start=3)[0])
