import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    Alert,
    ContainerReading,
    CraneReading,
    Declaration,
    DlqRecord,
    Evidence,
    GatewayEnvelope,
    LedgerRef,
    RtgReading,
    encode,
    parse_declaration,
    parse_telemetry,
)
from schemas.registry import MESSAGES
from schemas.telemetry import reading_id
from tests.helpers import container_reading, crane_reading, declaration, rtg_reading


def _raw(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("sample", "model"),
    [(crane_reading(), CraneReading), (container_reading(), ContainerReading),
     (rtg_reading(), RtgReading)],
    ids=["crane", "container", "rtg"],
)
def test_telemetry_round_trip(sample: dict[str, Any], model: type) -> None:
    reading = parse_telemetry(_raw(sample))
    assert isinstance(reading, model)
    assert parse_telemetry(encode(reading)) == reading


def test_timestamps_are_normalised_to_utc() -> None:
    reading = parse_telemetry(_raw(crane_reading(ts="2026-11-24T10:00:00+08:00")))
    assert reading.ts == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert b'"ts":"2026-11-24T02:00:00Z"' in encode(reading)


def test_declaration_round_trip() -> None:
    value = parse_declaration(_raw(declaration()))
    assert value.reefer is not None
    assert value.reefer.min_c == -20.0
    assert parse_declaration(encode(value)) == value


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (crane_reading(container_no="CSQU3054384"), "has check digit 4, want 3"),
        (crane_reading(container_no="ABC123"), "is not ISO 6346 shaped"),
        (crane_reading(seq="5"), "Input should be a valid integer"),
        (crane_reading(load_kg="heavy"), "Input should be a valid number"),
        (crane_reading(colour="red"), "Extra inputs are not permitted"),
        (crane_reading(ts="2026-11-24T10:00:00"), "timezone info"),
        (crane_reading(load_kg=250_000), "less than or equal to 120000"),
        (crane_reading(load_kg=-1), "greater than or equal to 0"),
        (crane_reading(event="lift_start", container_no=None), "must name container_no"),
        (crane_reading(event="jump"), "lift_start"),
        (crane_reading(vessel_imo="9074728"), "want 9"),
        (crane_reading(port="cnshk"), "should match pattern"),
        (crane_reading(device_id="qc/01"), "should match pattern"),
        (crane_reading(kind="drone"), "does not match any of the expected tags"),
        (crane_reading(seq=-1), "greater than or equal to 0"),
        (container_reading(lat=91.0), "less than or equal to 90"),
        (container_reading(reefer_temp_c=-120.0), "greater than or equal to -70"),
        (container_reading(door="ajar"), "'open' or 'closed'"),
        (container_reading(battery_pct=101), "less than or equal to 100"),
        (rtg_reading(yard_block="b 3"), "should match pattern"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_telemetry_rejections_say_why(sample: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_telemetry(_raw(sample))


def test_heartbeat_needs_no_container() -> None:
    reading = parse_telemetry(_raw(crane_reading(event="heartbeat", container_no=None)))
    assert isinstance(reading, CraneReading)
    assert reading.container_no is None


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        (declaration(status="lost"), "'lodged', 'under_review', 'held', 'released' or 'cleared'"),
        (declaration(reefer={"min_c": 5.0, "max_c": -5.0}), "min_c 5.0 is above max_c -5.0"),
        (declaration(hs_codes=[]), "at least 1 item"),
        (declaration(hs_codes=["85x440"]), "should match pattern"),
        (declaration(gross_mass_kg=0), "greater than 0"),
        (declaration(dangerous_goods={"imdg_class": "3", "un_number": "1203"}), "pattern"),
        (declaration(version=0), "greater than or equal to 1"),
        (declaration(updated_at="2026-11-24 01:00"), "timezone"),
        (declaration(port_of_discharge="Rotterdam"), "should match pattern"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_declaration_rejections_say_why(sample: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_declaration(_raw(sample))


def test_envelope_dlq_alert_round_trip() -> None:
    now = "2026-11-24T02:00:01.250000Z"
    envelope = GatewayEnvelope.model_validate_json(_raw({
        "received_at": now, "gateway_id": "gw-1",
        "mqtt_topic": "port/CNSHK/crane/qc-01/telemetry", "reading": crane_reading(),
    }))
    assert isinstance(envelope.reading, CraneReading)
    assert GatewayEnvelope.model_validate_json(encode(envelope)) == envelope

    dlq = DlqRecord.model_validate_json(_raw({
        "received_at": now, "gateway_id": "gw-1", "source": "mqtt", "reason": "not_json",
        "detail": "Expecting value: line 1 column 1 (char 0)", "payload_b64": "/wA=",
        "payload_size": 2,
    }))
    assert dlq.payload == b"\xff\x00"

    alert = Alert.model_validate_json(_raw({
        "alert_id": "a1", "rule": "weight_mismatch", "severity": "critical", "state": "raised",
        "container_no": "CSQU3054383", "port": "CNSHK", "first_seen": now, "last_seen": now,
        "count": 1, "version": 1, "measured": {"load_kg": 30_000.0},
        "declared": {"gross_mass_kg": 21_000.0},
        "evidence": [{"topic": "telemetry.v1", "partition": 0, "offset": 5,
                      "device_id": "qc-01", "seq": 1}],
    }))
    assert Alert.model_validate_json(encode(alert)) == alert


def test_every_message_carries_schema_version() -> None:
    for name, adapter in MESSAGES.items():
        schema = adapter.json_schema()
        defs = schema.get("$defs", {})
        variants = [defs[ref["$ref"].split("/")[-1]] for ref in schema["oneOf"]] if (
            "oneOf" in schema) else [schema]
        for variant in variants:
            assert "schema_version" in variant["properties"], name


def test_unknown_schema_version_is_rejected() -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        Declaration.model_validate_json(_raw(declaration(schema_version=2)))


# -- a reading's identity --------------------------------------------------------------------


def test_a_redelivery_has_the_same_reading_id_however_it_is_spelled() -> None:
    sample = crane_reading(seq=7)
    spelled_otherwise = json.dumps(dict(reversed(sample.items())), indent=2)
    assert reading_id(parse_telemetry(json.dumps(sample))) == reading_id(
        parse_telemetry(spelled_otherwise))


@pytest.mark.parametrize("change", [
    {"ts": "2026-05-04T10:00:00.001Z"},  # the seq restarted after a reboot, later
    {"boot": 1},  # the boot counter stepped, same seq and ts
    {"load_kg": 21_000.5},  # a different value under the same seq and ts (a forgery)
])
def test_two_different_readings_never_share_an_id(change: dict[str, Any]) -> None:
    sample = crane_reading(seq=7, ts="2026-05-04T10:00:00Z", load_kg=21_000.0)
    assert reading_id(parse_telemetry(json.dumps(sample))) != reading_id(
        parse_telemetry(json.dumps({**sample, **change})))


def test_the_envelope_carries_the_reading_id_and_computes_it_for_old_records() -> None:
    reading = parse_telemetry(json.dumps(crane_reading()))
    old = {"received_at": "2026-05-04T10:00:00Z", "gateway_id": "gw", "mqtt_topic": "t",
           "reading": json.loads(encode(reading))}
    envelope = GatewayEnvelope.model_validate_json(json.dumps(old))
    assert envelope.reading_id == reading_id(reading)
    assert json.loads(encode(envelope))["reading_id"] == reading_id(reading)
    with pytest.raises(ValidationError, match="reading_id"):
        GatewayEnvelope.model_validate_json(json.dumps({**old, "reading_id": "not-a-hash"}))


@pytest.mark.parametrize("extra", [{"boot": 7}, {}])
@pytest.mark.parametrize("with_id", [True, False])
def test_evidence_names_the_reading_and_its_record(extra: dict[str, Any],
                                                   with_id: bool) -> None:
    reading = parse_telemetry(json.dumps({**crane_reading(), **extra}))
    envelope = GatewayEnvelope.model_validate_json(json.dumps({
        "received_at": "2026-05-04T10:00:00Z", "gateway_id": "gw", "mqtt_topic": "t",
        "reading": json.loads(encode(reading)),
        **({"reading_id": reading_id(reading)} if with_id else {})}))
    built = Evidence.of(envelope, "telemetry.v1", 3, 2**62)
    assert (built.topic, built.partition, built.offset) == ("telemetry.v1", 3, 2**62)
    assert (built.device_id, built.seq, built.boot, built.reading_id) == (
        reading.device_id, reading.seq, reading.boot, reading_id(reading))
    assert Evidence.model_validate_json(encode(built)) == built


def test_boot_is_optional_and_bounded() -> None:
    assert parse_telemetry(json.dumps(crane_reading(boot=3))).boot == 3
    with pytest.raises(ValidationError, match="boot"):
        parse_telemetry(json.dumps(crane_reading(boot=-1)))


@pytest.mark.parametrize("version", ["true", "1.0", "1e0"])
def test_schema_version_is_the_integer_1_not_an_equal_value(version: str) -> None:
    """pydantic's Literal[1] takes JSON `true` and `1.0`, even when strict (True == 1.0 == 1
    in Python): found by the receipt fuzzer and a review. Every other integer field refuses
    them."""
    body = '{"kind":"file","ledger_id":"x","entry":"0","schema_version":%s}'
    assert LedgerRef.model_validate_json(body % "1").schema_version == 1
    with pytest.raises(ValidationError, match="schema_version is the integer 1"):
        LedgerRef.model_validate_json(body % version)
    with pytest.raises(ValidationError, match="schema_version is the integer 1"):
        parse_telemetry(json.dumps(crane_reading())[:-1] + f', "schema_version": {version}}}')
