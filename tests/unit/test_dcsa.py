"""The DCSA events smartport derives validate against DCSA's own schemas (tests/data/dcsa,
copied from dcsaorg/DCSA-OpenAPI): the SwaggerHub URLs the schemas use for one another are
mapped to those files."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from ingest.linked import LinkedConfig, LinkedPorts
from ingest.validation import Accepted, Limits, classify
from schemas import Declaration, Evidence, Rule, encode, topics
from schemas import clickhouse as ch
from schemas.telemetry import ContainerReading, parse_telemetry
from schemas.transit import PortEvent, RecordPosition
from streams.analytics.rows import to_row
from streams.rules.engine import Outcome, declare, evaluate, sweep_transit
from streams.rules.state import ContainerState
from streams.rules.thresholds import DEFAULT_GEOFENCES, Thresholds
from streams.transit.dcsa import customs_event
from streams.transit.iot import DCSA_IOT_CODES, iot_events
from tests.helpers import declaration as declaration_body

DCSA = Path(__file__).parents[1] / "data" / "dcsa"
SWAGGERHUB = "https://api.swaggerhub.com/domains/dcsaorg"
DOMAINS = {"event_domain": "EVENT_DOMAIN", "dcsa_domain": "DCSA_DOMAIN",
           "dcsa_location": "LOCATION_DOMAIN", "documentation_domain": "DOCUMENTATION_DOMAIN"}
FILE_NAME = re.compile(r"^([a-z_]+)_v([0-9.]+)\.yaml$")
START = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)


def _registry() -> Registry:
    resources = []
    for path in sorted(DCSA.glob("*.yaml")):
        named = FILE_NAME.match(path.name)
        assert named is not None, path
        resources.append((f"{SWAGGERHUB}/{DOMAINS[named[1]]}/{named[2]}", Resource.from_contents(
            yaml.safe_load(path.read_text()), default_specification=DRAFT4)))
    return Registry().with_resources(resources)


@pytest.fixture(scope="module")
def equipment_event() -> Draft4Validator:
    schema = {"$ref": f"{SWAGGERHUB}/EVENT_DOMAIN/2.0.2#/components/schemas/equipmentEvent"}
    return Draft4Validator(schema, registry=_registry())


def _port_events(linked: LinkedPorts, *, declared_first: bool = True) -> list[PortEvent]:
    """Through the engine as the worker runs it; with ``declared_first=False`` every reading
    reaches it before its container's declaration."""
    declarations = {d.container_no: d for d in linked.declarations}
    states = {number: ContainerState() for number in declarations}
    events: list[PortEvent] = []

    def declare_all() -> None:
        for number, declaration in declarations.items():
            events.extend(declare(states[number], declaration, Thresholds(), issuer="test",
                                  now=START).port_events)

    if declared_first:
        declare_all()
    clock = START
    for offset, message in enumerate(linked.messages()):
        accepted = classify(message.topic, message.payload, Limits(), START + timedelta(hours=2))
        assert isinstance(accepted, Accepted)
        reading = accepted.reading
        container = getattr(reading, "container_no", None)
        assert container is not None
        events += evaluate(reading, declarations[container] if declared_first else None,
                           states[container], Thresholds(),
                           Evidence(topic="telemetry.v1", partition=0, offset=offset,
                                    device_id=reading.device_id, seq=reading.seq)).port_events
        clock = max(clock, reading.ts)
    if not declared_first:
        declare_all()
    for number, declaration in declarations.items():
        events += sweep_transit(states[number], declaration, Thresholds(), clock=clock,
                                now=clock + timedelta(days=1), issuer="test").port_events
    return events


def test_load_discharge_and_gate_events_validate_against_dcsa(
    equipment_event: Draft4Validator
) -> None:
    linked = LinkedPorts(LinkedConfig(containers=12, seed=2, fault_rate=0.5, start=START))
    events = _port_events(linked)
    modes = Counter(t.declaration.movement.mode for t in linked.transits
                    if t.declaration.movement)
    assert set(modes) == {"barge", "truck"}  # both modes are there
    equipment = [event for event in events if event.dcsa["eventType"] == "EQUIPMENT"]
    assert Counter((event.container_no, event.dcsa["equipmentEventTypeCode"])
                   for event in equipment) == linked.equipment_events()
    carriers = {(event.dcsa["equipmentEventTypeCode"], event.dcsa["transportCall"][
        "modeOfTransport"]) for event in equipment}
    assert carriers == {("LOAD", "BARGE"), ("DISC", "BARGE"), ("GTIN", "TRUCK"),
                        ("GTOT", "TRUCK")}
    for event in equipment:
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in equipment_event.iter_errors(event.dcsa)]
        assert errors == [], errors
        assert event.evidence  # the lift it was derived from
    assert len({event.dcsa["eventID"] for event in events}) == len(events)


def test_what_dcsa_forbids_is_caught(equipment_event: Draft4Validator) -> None:
    """The schemas are really applied: a code DCSA does not have, a missing required field."""
    [event] = _port_events(LinkedPorts(LinkedConfig(containers=1, seed=3, start=START)))[:1]
    bad: dict[str, Any] = {**event.dcsa, "equipmentEventTypeCode": "LIFT"}
    assert not equipment_event.is_valid(bad)
    missing = {key: value for key, value in event.dcsa.items() if key != "eventDateTime"}
    assert not equipment_event.is_valid(missing)
    no_mode = {**event.dcsa, "transportCall": {
        k: v for k, v in event.dcsa["transportCall"].items() if k != "modeOfTransport"}}
    assert not equipment_event.is_valid(no_mode)


def test_two_containers_moved_under_one_movement_id_get_their_own_events() -> None:
    """A movement id is the declarant's: two scenarios (two declarants) both use MV-0001, and
    a DCSA event id must still name one container's event (it was the movement's alone, so
    the analysts' store kept one of two containers' LOAD events)."""
    first, second = (_port_events(LinkedPorts(LinkedConfig(containers=2, seed=seed, start=START)))
                     for seed in (3, 4))
    assert {e.movement_id for e in first} == {e.movement_id for e in second}
    assert {e.container_no for e in first}.isdisjoint({e.container_no for e in second})
    ids = [event.dcsa["eventID"] for event in first + second]
    assert len(set(ids)) == len(ids) >= 8


def test_a_gate_passage_is_an_event_only_for_a_declared_container_and_a_held_one_is_stopped(
    equipment_event: Draft4Validator
) -> None:
    held = Declaration.model_validate_json(json.dumps(declaration_body(status="held")))
    def passage(event: str, declared: Declaration | None) -> Outcome:
        reading = parse_telemetry(json.dumps({
            "kind": "gate", "device_id": "gate-cnshk-01", "seq": 7, "ts": START.isoformat(),
            "port": "CNSHK", "event": event, "container_no": held.container_no,
            "truck_plate": "YUE B12345", "lane": 2}))
        return evaluate(reading, declared, ContainerState(), Thresholds(), Evidence(
            topic="telemetry.v1", partition=0, offset=1, device_id="gate-cnshk-01", seq=7))

    out = passage("gate_out", held)
    [event] = out.port_events
    assert event.dcsa["equipmentEventTypeCode"] == "GTOT"
    assert event.movement_id is None  # no movement: a plain gate passage
    assert equipment_event.is_valid(event.dcsa)
    assert [a.rule for a in out.alerts] == [Rule.HOLD_VIOLATION]  # a held container leaving
    assert [a.rule for a in passage("gate_in", held).alerts] == []
    assert passage("gate_out", None).port_events == []  # undeclared: the rules' business


@pytest.fixture(scope="module")
def shipment_event() -> Draft4Validator:
    schema = {"$ref": f"{SWAGGERHUB}/EVENT_DOMAIN/2.0.2#/components/schemas/shipmentEvent"}
    return Draft4Validator(schema, registry=_registry())


def test_a_customs_declaration_changing_status_is_a_dcsa_shipment_event(
    shipment_event: Draft4Validator
) -> None:
    def version(number: int, status: str) -> Declaration:
        return Declaration.model_validate_json(json.dumps(declaration_body(
            status=status, version=number,
            updated_at=(START + timedelta(hours=number)).isoformat())))

    where = RecordPosition(topic="declarations.v1", partition=2, offset=40)
    history = [version(1, "lodged"), version(2, "held"), version(3, "held"),
               version(4, "released"), version(5, "cleared")]
    events, previous = [], None
    for current in history:
        events.append(customs_event(current, previous, where, START))
        previous = current
    codes = [event.dcsa["shipmentEventTypeCode"] if event else None for event in events]
    assert codes == ["RECE", "HOLD", None, "RELS", "CMPL"]  # version 3 changed no status
    for event in filter(None, events):
        errors = [e.message for e in shipment_event.iter_errors(event.dcsa)]
        assert errors == [], errors
        assert (event.dcsa["documentTypeCode"], event.dcsa["documentID"]) == (
            "CUS", history[0].declaration_id)
        assert event.declaration_record == where
        table, row = to_row(topics.PORT_EVENTS, 2, 41, encode(event), START)
        assert (table, row["event_type"]) == (ch.PORT_EVENTS, "SHIPMENT")
        assert row["event_type_code"] == event.dcsa["shipmentEventTypeCode"]
    assert customs_event(history[1], history[3], where, START) is None  # an older replayed
    first = events[0]
    assert first is not None
    assert not shipment_event.is_valid({**first.dcsa, "shipmentEventTypeCode": "CUSTOMS"})
    assert not shipment_event.is_valid({**first.dcsa, "documentTypeCode": "CUSTOMS"})


@pytest.fixture(scope="module")
def iot_payload() -> Draft4Validator:
    """DCSA's IoT event as event domain 3.1 defines its payload (its metadata wants a carrier
    code as the publisher, which a terminal does not have)."""
    domain = f"{SWAGGERHUB}/EVENT_DOMAIN/3.1.0#/components/schemas"
    schema = {"allOf": [{"$ref": f"{domain}/baseEvent"}, {"$ref": f"{domain}/baseIoTEvent"}]}
    return Draft4Validator(schema, registry=_registry())


def test_door_and_geofence_changes_are_dcsa_shaped_iot_events(
    iot_payload: Draft4Validator
) -> None:
    linked = LinkedPorts(LinkedConfig(containers=16, seed=2, fault_rate=0.5, start=START))
    assert any(t.fault == "door_opened" for t in linked.transits)
    iot = [event for event in _port_events(linked) if event.dcsa["eventType"] == "IOT"]
    assert Counter((event.container_no, event.dcsa["iotEventCode"]) for event in iot) == (
        linked.iot_events())
    for event in iot:
        code = event.dcsa["iotEventCode"]
        # DCSA has a code for a door opened only; the others are smartport's in that field,
        # and everything else about them is as DCSA defines it.
        assert iot_payload.is_valid(event.dcsa) == (code in DCSA_IOT_CODES)
        errors = [e.message for e in iot_payload.iter_errors({**event.dcsa,
                                                               "iotEventCode": "DRO"})]
        assert errors == [], errors
        assert event.evidence  # the tracker reading
    assert {e.dcsa["eventLocation"]["UNLocationCode"] for e in iot
            if e.dcsa["iotEventCode"] == "GFO"} == {"CNSUD"}
    assert {e.dcsa["eventLocation"]["UNLocationCode"] for e in iot
            if e.dcsa["iotEventCode"] == "GFI"} == {"CNSHK"}


def test_port_events_do_not_depend_on_the_declaration_coming_first() -> None:
    """Readings that beat their container's declaration are judged when it comes: the same
    DCSA events, IoT ones included (the door and geofence the tracker reported before were
    taken as already known, so a door opened among them was no event)."""
    linked = LinkedPorts(LinkedConfig(containers=16, seed=2, fault_rate=0.5, start=START))

    def codes(events: list[PortEvent]) -> Counter[tuple[str, str]]:
        return Counter((e.container_no, str(e.dcsa.get("iotEventCode")
                                            or e.dcsa.get("equipmentEventTypeCode")))
                       for e in events)

    declared_first = codes(_port_events(linked))
    assert declared_first
    assert codes(_port_events(linked, declared_first=False)) == declared_first


def test_an_iot_event_is_a_change_of_the_latest_report_only() -> None:
    declared = Declaration.model_validate_json(json.dumps(declaration_body()))
    state = ContainerState()

    def report(minutes: int, door: str, lat: float = 22.48, lon: float = 113.90) -> list[str]:
        reading = parse_telemetry(json.dumps({
            "kind": "container", "device_id": "trk-1", "seq": minutes,
            "ts": (START + timedelta(minutes=minutes)).isoformat(), "port": "CNSHK",
            "container_no": declared.container_no, "door": door, "lat": lat, "lon": lon}))
        assert isinstance(reading, ContainerReading)
        return [e.dcsa["iotEventCode"] for e in iot_events(
            reading, declared, state, DEFAULT_GEOFENCES, created=START, evidence=Evidence(
                topic="telemetry.v1", partition=0, offset=minutes, device_id="trk-1",
                seq=minutes))]

    assert report(1, "open") == []  # a first report is no change
    assert report(2, "open") == []
    assert report(3, "closed") == ["DRC"]
    assert report(2, "open") == []  # late: older than the latest report
    assert report(4, "open", lat=22.60) == ["DRO", "GFO"]  # 13 km north: out of Shekou's area
    assert report(5, "open", lat=22.60) == []
    assert report(6, "open") == ["GFI"]
