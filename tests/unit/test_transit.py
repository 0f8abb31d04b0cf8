"""Linked ports: the corridor geometry and a movement followed reading by reading (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from anchoring.errors import VerificationFailed
from anchoring.verify import verify_certificate
from ingest.linked import along
from schemas import Declaration, Evidence, Rule, encode, topics
from schemas import clickhouse as ch
from schemas.telemetry import AnyReading, parse_telemetry
from schemas.transit import CheckName, GeoPoint, Movement, TransitPhase
from smartport.ed25519 import fingerprint
from streams.analytics.rows import to_row
from streams.rules.thresholds import Thresholds
from streams.transit.corridor import distance_to_polyline
from streams.transit.dcsa import port_event
from streams.transit.signature import sign
from streams.transit.state import TransitState
from streams.transit.tracker import (
    Leg,
    TransitOutcome,
    check_overdue,
    judge,
    on_declaration,
    on_reading,
)
from tests.helpers import container_reading, crane_reading, declaration

ORIGIN, DESTINATION = "CNSUD", "CNSHK"  # Shunde river port → Shekou
BARGE, OTHER_BARGE = "9074729", "9176187"
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
# A plausible river corridor: Shunde → down the river → Shekou, three legs.
WAYPOINTS = [(22.80, 113.25), (22.65, 113.45), (22.50, 113.70), (22.48, 113.91)]


def _point(lat: float, lon: float) -> GeoPoint:
    return GeoPoint(lat=lat, lon=lon)


def test_distance_to_the_polyline() -> None:
    line = [_point(22.5, 113.0), _point(22.5, 113.2)]
    assert distance_to_polyline(_point(22.5, 113.1), line) == pytest.approx(0, abs=0.01)
    one_km_north = 22.5 + 1000 / 111_195
    assert distance_to_polyline(_point(one_km_north, 113.1), line) == pytest.approx(1000, rel=1e-3)
    # Beyond the end: the distance to the end point, not to the infinite line.
    assert distance_to_polyline(_point(22.5, 113.3), line) == pytest.approx(10_280, rel=2e-3)
    across = [_point(0.0, 179.99), _point(0.0, -179.99)]  # the antimeridian
    assert distance_to_polyline(_point(0.0, 180.0), across) == pytest.approx(0, abs=0.01)


def _movement(**overrides: Any) -> dict[str, Any]:
    movement: dict[str, Any] = {
        "movement_id": "MV-0001", "origin": ORIGIN, "destination": DESTINATION,
        "carrier_imo": BARGE, "seals": ["SL123456"],
        "deadline": (T0 + timedelta(hours=8)).isoformat(),
        "corridor": {"corridor_id": "SUD-SHK-river", "buffer_m": 2000, "max_gap_s": 1800,
                     "waypoints": [{"lat": lat, "lon": lon} for lat, lon in WAYPOINTS]},
    }
    movement.update(overrides)
    return movement


def _declared(status: str = "released", **movement: Any) -> Declaration:
    return Declaration.model_validate_json(json.dumps(declaration(
        status=status, port_of_loading=DESTINATION, movement=_movement(**movement),
        updated_at=T0.isoformat())))


def _evidence(offset: int, reading: AnyReading) -> Evidence:
    return Evidence(topic="telemetry.v1", partition=0, offset=offset,
                    device_id=reading.device_id, seq=reading.seq)


class Followed:
    """A movement followed through its readings, collecting what it yields."""

    def __init__(self, declared: Declaration) -> None:
        state, outcome = on_declaration(None, declared)
        assert state is not None
        self.state = state
        self.leg = Leg.of(declared, Thresholds(), "smartport-streams")
        self.events = list(outcome.events)
        self.findings: list[Any] = []
        self.certificates: list[Any] = []
        self.offset = 0

    def read(self, body: dict[str, Any]) -> None:
        assert self.leg is not None
        reading = parse_telemetry(json.dumps(body))
        self.offset += 1
        self._take(on_reading(self.state, self.leg, reading, _evidence(self.offset, reading),
                              now=reading.ts))
        self._take(judge(self.state, self.leg, reading.ts))

    def settle(self) -> None:
        """The late evidence of the arrival had its time (wall clock)."""
        assert self.leg is not None
        self._take(judge(self.state, self.leg, T0 + timedelta(days=1)))

    def _take(self, outcome: TransitOutcome) -> None:
        self.events += outcome.events
        self.findings += outcome.findings
        if outcome.certificate:
            self.certificates.append(outcome.certificate)

    def phases(self) -> list[TransitPhase]:
        return [event.phase for event in self.events]


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def _tracker(minutes: float, lat: float, lon: float, port: str = ORIGIN,
             changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return container_reading(**{"seq": int(minutes) + 100, "ts": _at(minutes), "port": port,
                                "lat": lat, "lon": lon, **(changes or {})})


def _lift(minutes: float, port: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return crane_reading(**{"device_id": f"qc-{port.lower()}", "seq": int(minutes),
                            "ts": _at(minutes), "port": port, "event": "lift_end",
                            "vessel_imo": BARGE, "load_kg": 21_100.0, **(changes or {})})


def _journey(leg: Followed, *, skip: frozenset[str] = frozenset(),
             tracker: dict[str, Any] | None = None, lift: dict[str, Any] | None = None,
             end_minutes: float = 180.0) -> None:
    """A clean barge leg, 10 minutes between fixes along the corridor, then the discharge."""
    leg.read(_lift(5, ORIGIN))
    steps = 18
    for step in range(steps):
        minutes = 10 + step * (end_minutes - 20) / steps
        lat, lon = _along(step / (steps - 1))
        port = DESTINATION if step == steps - 1 else ORIGIN
        if f"fix-{step}" in skip:
            continue
        leg.read(_tracker(minutes, lat, lon, port, tracker if step == 9 else None))
    leg.read(_lift(end_minutes, DESTINATION, lift))
    leg.settle()


def _along(fraction: float) -> tuple[float, float]:
    return along(WAYPOINTS, fraction)


def test_a_clean_transit_yields_one_certificate_with_every_check_passed() -> None:
    leg = Followed(_declared())
    _journey(leg)
    assert leg.phases() == [TransitPhase.LODGED, TransitPhase.RELEASED, TransitPhase.DEPARTED,
                            TransitPhase.ARRIVED, TransitPhase.DISCHARGED]
    assert leg.findings == []
    [certificate] = leg.certificates
    assert {c.check.value for c in certificate.checks} == {
        "seals", "integrity", "corridor", "reporting", "deadline", "mass", "identity"}
    assert certificate.departed_at == T0 + timedelta(minutes=5)
    assert certificate.arrived_at == T0 + timedelta(minutes=180)
    assert certificate.issued_by == "smartport-streams"


def test_a_declaration_is_followed_from_lodged_to_released() -> None:
    lodged = _declared(status="lodged")
    state, outcome = on_declaration(None, lodged)
    assert state is not None
    assert [e.phase for e in outcome.events] == [TransitPhase.LODGED]
    released = lodged.model_copy(update={"status": "released", "version": 2})
    state, outcome = on_declaration(state, released)
    assert state is not None
    assert [e.phase for e in outcome.events] == [TransitPhase.RELEASED]
    assert state.released_at == T0


@pytest.mark.parametrize(("fault", "failed"), [
    ("seal swapped", "seals"),
    ("door opened mid-leg", "integrity"),
    ("corridor deviation", "corridor"),
    ("tracker silent", "reporting"),
    ("mass mismatch", "mass"),
    ("another barge", "identity"),
])
def test_each_transit_fault_fails_exactly_its_check(fault: str, failed: str) -> None:
    leg = Followed(_declared())
    match fault:
        case "seal swapped":
            leg.read(_lift(5, ORIGIN))
            for step in range(18):
                lat, lon = _along(step / 17)
                swapped = {"seal_id": "SL999999"} if step == 17 else None
                leg.read(_tracker(10 + step * 9, lat, lon, DESTINATION if step == 17 else ORIGIN,
                                  swapped))
            leg.read(_lift(180, DESTINATION))
            leg.settle()
        case "door opened mid-leg":
            _journey(leg, tracker={"door": "open"})
        case "corridor deviation":
            _journey(leg, tracker={"lat": 22.9, "lon": 113.9})
        case "tracker silent":
            _journey(leg, skip=frozenset(f"fix-{step}" for step in range(6, 12)))
        case "mass mismatch":
            _journey(leg, lift={"load_kg": 27_000.0})
        case "another barge":
            _journey(leg, lift={"vessel_imo": OTHER_BARGE})
    assert leg.phases()[-1] == TransitPhase.DISCREPANCY
    assert leg.certificates == []
    [finding] = leg.findings
    assert finding.rule == Rule.TRANSIT_DISCREPANCY
    assert finding.measured["failed_checks"] == failed


def test_overdue_when_the_deadline_passes_not_at_arrival() -> None:
    declared = _declared(deadline=(T0 + timedelta(hours=2)).isoformat())
    leg = Followed(declared)
    leg.read(_lift(5, ORIGIN))
    assert leg.leg is not None
    assert check_overdue(leg.state, leg.leg, T0 + timedelta(hours=1)).events == []
    overdue = check_overdue(leg.state, leg.leg, T0 + timedelta(hours=2, seconds=1))
    assert [e.phase for e in overdue.events] == [TransitPhase.OVERDUE]
    assert [f.rule for f in overdue.findings] == [Rule.TRANSIT_OVERDUE]
    assert check_overdue(leg.state, leg.leg, T0 + timedelta(hours=3)).events == []  # once
    # It arrives after all: the checks still run and the deadline failed, but its lateness
    # was alerted already: one fault, one alert.
    for step in range(18):
        lat, lon = _along(step / 17)
        leg.read(_tracker(10 + step * 9, lat, lon, DESTINATION if step == 17 else ORIGIN))
    leg.read(_lift(170, DESTINATION))
    leg.settle()
    assert leg.findings == []
    assert leg.phases()[-1] == TransitPhase.DISCREPANCY
    assert [c.check.value for c in leg.events[-1].checks if not c.passed] == ["deadline"]


def test_readings_before_the_release_or_of_another_movement_are_not_evidence() -> None:
    leg = Followed(_declared(status="lodged"))
    leg.read(_lift(5, ORIGIN))
    assert leg.phases() == [TransitPhase.LODGED]
    assert leg.state.departed_at is None
    other = TransitState(movement_id="MV-other", declaration_id="x", declaration_version=1,
                         phase=TransitPhase.RELEASED, released_at=T0)
    assert leg.leg is not None
    reading = parse_telemetry(json.dumps(_lift(6, ORIGIN)))
    assert on_reading(other, leg.leg, reading, _evidence(1, reading), now=T0).events == []


def test_a_movement_names_two_ports_and_at_least_one_seal() -> None:
    with pytest.raises(ValidationError, match="not CNSUD to itself"):
        Movement.model_validate_json(json.dumps(_movement(destination=ORIGIN)))
    with pytest.raises(ValidationError, match="seals"):
        Movement.model_validate_json(json.dumps(_movement(seals=[])))
    for carrier in ({"carrier_imo": None}, {"mode": "truck"},
                    {"mode": "truck", "carrier_plate": TRUCK}):  # the last names both
        with pytest.raises(ValidationError, match="names its carrier by"):
            Movement.model_validate_json(json.dumps(_movement(**carrier)))


TRUCK, OTHER_TRUCK = "YUE E12345", "YUE E54321"


def _gate(minutes: float, port: str, event: str, plate: str = TRUCK,
          load_kg: float = 21_100.0) -> dict[str, Any]:
    return {"kind": "gate", "device_id": f"gate-{port.lower()}", "seq": int(minutes),
            "ts": _at(minutes), "port": port, "event": event, "container_no": "CSQU3054383",
            "truck_plate": plate, "load_kg": load_kg}


@pytest.mark.parametrize(("arrival", "failed"), [
    ({}, None),
    ({"plate": OTHER_TRUCK}, "identity"),
    ({"load_kg": 27_000.0}, "mass"),
])
def test_a_truck_leg_goes_out_of_one_gate_and_in_through_the_other(
    arrival: dict[str, Any], failed: str | None
) -> None:
    leg = Followed(_declared(mode="truck", carrier_imo=None, carrier_plate=TRUCK))
    leg.read(_lift(4, ORIGIN))  # a quay crane's lift is not a truck's departure
    assert leg.state.departed_at is None
    leg.read(_gate(5, ORIGIN, "gate_out"))
    for step in range(18):
        lat, lon = _along(step / 17)
        leg.read(_tracker(10 + step * 9, lat, lon, DESTINATION if step == 17 else ORIGIN))
    leg.read(_gate(180, DESTINATION, "gate_in", **arrival))
    leg.settle()
    if failed is None:
        [certificate] = leg.certificates
        assert (certificate.mode, certificate.carrier) == ("truck", TRUCK)
        assert certificate.departed_at == T0 + timedelta(minutes=5)
        assert leg.findings == []
    else:
        assert leg.certificates == []
        [finding] = leg.findings
        assert finding.measured["failed_checks"] == failed


def test_a_silent_tracker_is_overdue_when_the_clock_passes_the_deadline() -> None:
    """No reading of the container after its departure: the worker's clock (the latest event
    time it saw) raises the overdue alert, once, with the departure as evidence."""
    from schemas import AlertState
    from streams.rules.engine import declare, evaluate, sweep_transit
    from streams.rules.state import ContainerState

    declared = _declared()
    state = ContainerState()
    declare(state, declared, Thresholds(), issuer="t", now=T0)
    reading = parse_telemetry(json.dumps(_lift(5, ORIGIN)))
    evaluate(reading, declared, state, Thresholds(), _evidence(1, reading))
    def sweep(clock: datetime) -> Any:
        return sweep_transit(state, declared, Thresholds(), clock=clock, now=clock, issuer="t")

    assert sweep(T0 + timedelta(hours=7)).alerts == []
    late = sweep(T0 + timedelta(hours=8, minutes=1))
    [alert] = late.alerts
    assert (alert.rule, alert.state, alert.port) == (
        Rule.TRANSIT_OVERDUE, AlertState.RAISED, DESTINATION)
    assert [e.offset for e in alert.evidence] == [1]  # the departure
    assert [e.phase for e in late.transit] == [TransitPhase.OVERDUE]
    assert sweep(T0 + timedelta(hours=9)).alerts == []


def test_a_late_discharge_nobody_saw_coming_is_a_deadline_discrepancy() -> None:
    """No reading and no sweep between the deadline and the discharge: the lateness was never
    alerted as overdue, so the judged leg raises it (it must not fall through)."""
    leg = Followed(_declared(deadline=(T0 + timedelta(hours=2)).isoformat()))
    leg.read(_lift(5, ORIGIN))
    for step in range(12):  # every fix before the deadline
        lat, lon = _along(step / 17)
        leg.read(_tracker(10 + step * 9, lat, lon, DESTINATION if step == 11 else ORIGIN))
    leg.read(_lift(130, DESTINATION))  # 10 min late
    leg.settle()
    [finding] = leg.findings
    assert (finding.rule, finding.measured["failed_checks"]) == (
        Rule.TRANSIT_DISCREPANCY, "deadline")


def test_a_reading_after_the_deadline_makes_it_overdue_and_holds_the_container() -> None:
    leg = Followed(_declared(deadline=(T0 + timedelta(hours=1)).isoformat()))
    leg.read(_lift(5, ORIGIN))
    assert leg.leg is not None
    reading = parse_telemetry(json.dumps(_tracker(61, *_along(0.5))))
    outcome = on_reading(leg.state, leg.leg, reading, _evidence(99, reading), now=reading.ts)
    assert [f.rule for f in outcome.findings] == [Rule.TRANSIT_OVERDUE]
    assert outcome.clearance is not None
    assert outcome.clearance.status == "held"
    assert outcome.clearance.reasons[0].startswith("overdue")


def test_a_movement_and_its_certificate_become_the_analysts_rows() -> None:
    clean, faulty = Followed(_declared()), Followed(_declared())
    _journey(clean)
    _journey(faulty, lift={"load_kg": 27_000.0})
    [certificate] = clean.certificates
    table, row = to_row(topics.CERTIFICATES, 1, 9, encode(certificate), T0)
    assert table is ch.CERTIFICATES
    assert set(row) == set(ch.CERTIFICATES.column_names)
    assert (row["corridor_id"], row["transit_seconds"], row["kafka_offset"]) == (
        "SUD-SHK-river", 175 * 60.0, 9)
    table, row = to_row(topics.TRANSIT, 0, 3, encode(faulty.events[-1]), T0)
    assert table is ch.MOVEMENTS
    assert set(row) == set(ch.MOVEMENTS.column_names)
    assert (row["phase"], row["failed_checks"]) == ("discrepancy", ["mass"])
    assert [c["check"] for c in json.loads(row["checks"])] == [c.value for c in CheckName]
    declared = _declared()
    step = clean.events[2]  # departed: DCSA's LOAD
    event = port_event(step, declared, T0)
    assert event is not None
    table, row = to_row(topics.PORT_EVENTS, 0, 4, encode(event), T0)
    assert (table, row["event_type_code"], row["un_location"]) == (ch.PORT_EVENTS, "LOAD",
                                                                   ORIGIN)
    assert row["event_datetime"] == step.at
    broken = encode(event).replace(b'"eventDateTime"', b'"eventDate"')
    table, row = to_row(topics.PORT_EVENTS, 0, 5, broken, T0)
    assert table is ch.REJECTS
    assert "KeyError" in row["reason"]


def _signed_certificate(key: Ed25519PrivateKey) -> bytes:
    leg = Followed(_declared())
    _journey(leg)
    [certificate] = leg.certificates
    return encode(sign(certificate, key))


def test_a_certificate_is_signed_by_its_terminal_and_verifies_only_unchanged() -> None:
    terminal, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trusted = {fingerprint(terminal.public_key())}
    record = _signed_certificate(terminal)
    assert verify_certificate(record, trusted) == fingerprint(terminal.public_key())
    changed = record.replace(b'"carrier":"9074729"', b'"carrier":"9176187"')
    assert changed != record
    with pytest.raises(VerificationFailed, match="changed after the terminal signed it"):
        verify_certificate(changed, trusted)
    with pytest.raises(VerificationFailed, match="not a terminal you trust"):
        verify_certificate(_signed_certificate(stranger), trusted)
    # A stranger's signature presented under the trusted key's id.
    forged = json.loads(_signed_certificate(stranger))
    forged["signature"]["key_id"] = fingerprint(terminal.public_key())
    with pytest.raises(VerificationFailed, match="is not the fingerprint"):
        verify_certificate(encode(forged), trusted)
    unsigned = json.loads(record)
    del unsigned["signature"]
    with pytest.raises(VerificationFailed, match="not signed"):
        verify_certificate(encode(unsigned), trusted)
    with pytest.raises(VerificationFailed, match="not a discharge certificate"):
        verify_certificate(b'{"kind": "discharge_certificate"}', trusted)
