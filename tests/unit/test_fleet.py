"""The simulated terminal: reproducible, valid, and anomalies only where the truth says."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice

import pytest

from ingest.fleet import ANOMALY_SPAN, Fleet, FleetConfig
from ingest.validation import Accepted, Limits, Rejected, classify
from schemas import DeclarationStatus, Rule
from schemas.alert import TRANSIT_RULES
from schemas.declaration import RELEASED_STATUSES

START = datetime(2026, 11, 24, tzinfo=UTC)


def _take(count: int, **config: object) -> tuple[Fleet, list]:  # type: ignore[type-arg]
    fleet = Fleet(FleetConfig(start=START, **config))  # type: ignore[arg-type]
    return fleet, list(islice(fleet.messages(), count))


def test_same_seed_same_messages() -> None:
    _, first = _take(500, seed=7, anomaly_rate=0.05, invalid_rate=0.05)
    _, second = _take(500, seed=7, anomaly_rate=0.05, invalid_rate=0.05)
    _, other = _take(500, seed=8, anomaly_rate=0.05, invalid_rate=0.05)
    assert first == second
    assert first != other


def test_valid_messages_are_accepted_and_invalid_ones_rejected() -> None:
    _, messages = _take(3000, seed=3, anomaly_rate=0.05, invalid_rate=0.05)
    kinds: Counter[str | None] = Counter()
    for message in messages:
        outcome = classify(message.topic, message.payload, Limits())
        if message.valid:
            assert isinstance(outcome, Accepted), (message, outcome)
        else:
            assert isinstance(outcome, Rejected), message
            kinds[message.invalid_kind] += 1
    assert set(kinds) == {"not_json", "schema", "bad_container", "spoofed_topic", "oversized"}


def test_every_device_sequence_and_event_time_increase() -> None:
    _, messages = _take(3000, seed=4, anomaly_rate=0.05)
    last: dict[str, tuple[int, datetime]] = {}
    for message in messages:
        reading = json.loads(message.payload)
        ts = datetime.fromisoformat(reading["ts"])
        if message.device_id in last:
            seq, previous = last[message.device_id]
            assert reading["seq"] == seq + 1
            assert ts > previous
        last[message.device_id] = (reading["seq"], ts)


def test_truth_is_unique_per_container_and_rule() -> None:
    _, messages = _take(20_000, seed=5, anomaly_rate=0.05)
    truths = [m.truth for m in messages if m.truth]
    assert len(truths) == len(set(truths))
    assert {rule for _, rule in truths} == set(Rule) - TRANSIT_RULES  # tests/unit/test_linked


def test_normal_traffic_breaks_no_rule() -> None:
    fleet, messages = _take(5000, seed=6)
    declarations = {d.container_no: d for d in fleet.declarations}
    for message in messages:
        reading = json.loads(message.payload)
        declaration = declarations[reading["container_no"]]
        if reading["kind"] == "container":
            assert reading["door"] == "closed"
            assert reading["seal_state"] == "intact"
            assert reading["seal_id"] in declaration.seal_numbers
            if declaration.reefer:
                assert declaration.reefer.min_c <= reading["reefer_temp_c"] <= (
                    declaration.reefer.max_c)
        else:
            assert declaration.status != DeclarationStatus.HELD
            assert abs(reading["load_kg"] - declaration.gross_mass_kg) < max(
                0.05 * declaration.gross_mass_kg, 500)
        if reading["kind"] == "crane":
            assert reading["vessel_imo"] == declaration.vessel_imo
        if reading["kind"] == "rtg":
            assert reading["yard_block"] in (declaration.allowed_yard_blocks or ())


@pytest.mark.parametrize("rule", sorted(set(Rule) - TRANSIT_RULES), ids=lambda r: r.value)
def test_each_injected_anomaly_breaks_its_rule(rule: Rule) -> None:
    fleet, messages = _take(20_000, seed=9, anomaly_rate=0.05)
    declarations = {d.container_no: d for d in fleet.declarations}
    first = next(m for m in messages if m.truth and m.truth[1] is rule)
    reading = json.loads(first.payload)
    declaration = declarations.get(reading["container_no"])
    if rule is Rule.UNDECLARED_CONTAINER:
        assert declaration is None
        burst = [json.loads(m.payload) for m in messages if m.device_id == first.device_id]
        assert burst[-1]["ts"] > burst[0]["ts"]
        assert len(burst) >= 2
        return
    assert declaration is not None
    checks: dict[Rule, Callable[[], bool]] = {
        Rule.WEIGHT_MISMATCH: lambda: abs(reading["load_kg"] - declaration.gross_mass_kg)
        > max(0.05 * declaration.gross_mass_kg, 500),
        Rule.SEAL_BROKEN: lambda: reading["seal_state"] == "broken",
        Rule.DOOR_OPENED: lambda: reading["door"] == "open"
        and declaration.status not in RELEASED_STATUSES,
        Rule.REEFER_EXCURSION: lambda: declaration.reefer is not None
        and reading["reefer_temp_c"] > declaration.reefer.max_c,
        Rule.HOLD_VIOLATION: lambda: declaration.status == DeclarationStatus.HELD
        and reading["event"] == "lift_start",
        Rule.VESSEL_MISMATCH: lambda: reading["vessel_imo"] != declaration.vessel_imo,
        Rule.ZONE_VIOLATION: lambda: reading["yard_block"] not in (
            declaration.allowed_yard_blocks or ()),
    }
    assert checks[rule](), reading


def test_excursions_last_longer_than_the_grace_periods() -> None:
    _, messages = _take(20_000, seed=9, anomaly_rate=0.05)
    first = next(m for m in messages if m.truth and m.truth[1] is Rule.REEFER_EXCURSION)
    burst = [json.loads(m.payload) for m in messages if m.device_id == first.device_id]
    out_of_range = [r for r in burst if r["reefer_temp_c"] == json.loads(first.payload)[
        "reefer_temp_c"]]
    start = datetime.fromisoformat(out_of_range[0]["ts"])
    end = datetime.fromisoformat(out_of_range[-1]["ts"])
    assert end - start >= ANOMALY_SPAN


def test_config_errors_are_named() -> None:
    with pytest.raises(ValueError, match="at least 3 devices"):
        FleetConfig(devices=2)
    with pytest.raises(ValueError, match=r"anomaly_rate must be between 0 and 1, got 1\.5"):
        FleetConfig(anomaly_rate=1.5)


def test_devices_restart_their_seq_and_cranes_step_their_boot_counter() -> None:
    messages = list(islice(Fleet(FleetConfig(devices=40, seed=5, reboot_rate=0.05)).messages(),
                           2000))
    restarts = [m for m in messages if m.restarted]
    assert len(restarts) > 40
    assert all(m.seq == 1 for m in restarts)
    boots = {json.loads(m.payload).get("boot") for m in messages if m.device_id.startswith("qc-")}
    assert len(boots) > 2  # sent by cranes, and stepped on each restart
    assert all("boot" not in json.loads(m.payload) for m in messages
               if m.device_id.startswith("trk-"))  # trackers send none: (seq, ts) tells apart
    readings = [json.loads(m.payload) for m in messages]
    assert len({(r["device_id"], r["seq"]) for r in readings}) < len(readings)

