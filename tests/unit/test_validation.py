"""The gateway's accept/reject decision, table-driven, plus a property test on arbitrary bytes."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.fleet import Fleet, FleetConfig
from ingest.linked import LinkedConfig, LinkedPorts
from ingest.records import dlq_value, envelope_value
from ingest.validation import Accepted, Limits, Rejected, classify
from schemas import DlqRecord, GatewayEnvelope, RejectReason, encode
from tests.helpers import container_reading, crane_reading, hostile_payloads, rtg_reading

LIMIT = Limits(max_payload_bytes=65_536)
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def _bytes(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("topic", "payload", "key"),
    [
        ("port/CNSHK/crane/qc-01/telemetry", _bytes(crane_reading()), b"CSQU3054383"),
        ("port/CNSHK/crane/qc-01/telemetry",
         _bytes(crane_reading(event="heartbeat", container_no=None)), b"qc-01"),
        ("port/CNSHK/container/tracker-CSQU3054383/telemetry", _bytes(container_reading()),
         b"CSQU3054383"),
        ("port/CNSHK/rtg/rtg-07/telemetry", _bytes(rtg_reading()), b"BICU1234565"),
    ],
    ids=["crane", "heartbeat-keyed-by-device", "container", "rtg"],
)
def test_accepted_and_keyed(topic: str, payload: bytes, key: bytes) -> None:
    outcome = classify(topic, payload, LIMIT)
    assert isinstance(outcome, Accepted)
    assert outcome.key == key


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "detail"),
    [
        ("port/CNSHK/crane/qc-01/telemetry", b"x" * (LIMIT.max_payload_bytes + 1),
         RejectReason.OVERSIZED,
         "payload is 65537 bytes, the limit is 65536"),
        ("port/CNSHK/crane/qc-01/status", _bytes(crane_reading()), RejectReason.BAD_TOPIC,
         "is not port/<locode>/<kind>/<device_id>/telemetry"),
        ("port/CNSHK/crane/qc-01/telemetry\n", _bytes(crane_reading()), RejectReason.BAD_TOPIC,
         "is not port/<locode>/<kind>/<device_id>/telemetry"),
        ("port/CNSHK/crane/qc-01/telemetry", b"\xc3\x28", RejectReason.NOT_UTF8, "not UTF-8"),
        ("port/CNSHK/crane/qc-01/telemetry", b'{"kind": ', RejectReason.NOT_JSON, "not JSON"),
        ("port/CNSHK/crane/qc-01/telemetry", _bytes(crane_reading(load_kg=-5)),
         RejectReason.SCHEMA, "crane.load_kg: Input should be greater than or equal to 0"),
        ("port/CNSHK/crane/qc-02/telemetry", _bytes(crane_reading()),
         RejectReason.SPOOFED_TOPIC, "device_id 'qc-01' in payload but 'qc-02' in topic"),
        ("port/NLRTM/crane/qc-01/telemetry", _bytes(crane_reading()),
         RejectReason.SPOOFED_TOPIC, "port 'CNSHK' in payload but 'NLRTM' in topic"),
        ("port/CNSHK/rtg/qc-01/telemetry", _bytes(crane_reading()),
         RejectReason.SPOOFED_TOPIC, "kind 'crane' in payload but 'rtg' in topic"),
    ],
    ids=["oversized", "bad-topic", "newline-after-topic", "not-utf8", "not-json", "schema",
         "spoofed-device", "spoofed-port", "spoofed-kind"],
)
def test_rejected_with_reason(topic: str, payload: bytes, reason: RejectReason,
                              detail: str) -> None:
    outcome = classify(topic, payload, LIMIT)
    assert isinstance(outcome, Rejected)
    assert outcome.reason is reason
    assert detail in outcome.detail


def test_rejected_key_is_the_topic_device_or_unknown() -> None:
    spoofed = classify("port/CNSHK/crane/qc-02/telemetry", b"{", LIMIT)
    assert spoofed.key == b"qc-02"
    assert classify("elsewhere", b"{}", LIMIT).key == b"unknown"


def test_long_schema_errors_are_summarised() -> None:
    seven_errors = (b'{"kind":"crane","seq":"a","ts":1,"port":1,"event":1,"load_kg":"x",'
                    b'"bay":"y"}')  # and device_id is missing
    outcome = classify("port/CNSHK/crane/qc-01/telemetry", seven_errors, LIMIT)
    assert isinstance(outcome, Rejected)
    assert outcome.detail.count(";") == 5
    assert outcome.detail.endswith("; and 2 more")


def test_records_round_trip() -> None:
    accepted = classify("port/CNSHK/crane/qc-01/telemetry", _bytes(crane_reading()), LIMIT)
    assert isinstance(accepted, Accepted)
    envelope = GatewayEnvelope.model_validate_json(
        envelope_value(accepted, "port/CNSHK/crane/qc-01/telemetry", "gw-1", NOW))
    assert envelope.reading == accepted.reading
    raw = b"\x00\xffnot json"
    rejected = classify("port/CNSHK/crane/qc-01/telemetry", raw, LIMIT)
    assert isinstance(rejected, Rejected)
    value = dlq_value(rejected, raw, gateway_id="gw-1", received_at=NOW)
    record = DlqRecord.model_validate_json(value)
    assert record.payload == raw
    assert record.reason is RejectReason.NOT_UTF8


def test_the_spliced_envelope_is_the_canonical_encoding_of_the_model() -> None:
    """The gateway splices the envelope's bytes around the reading's; they must be exactly
    what encoding the GatewayEnvelope model gives, for every kind of reading and odd ids."""
    fleet = Fleet(FleetConfig(devices=40, seed=5, anomaly_rate=0.05, invalid_rate=0.0))
    linked = LinkedPorts(LinkedConfig(containers=4, seed=5))
    kinds = set()
    for index, message in enumerate(chain(islice(fleet.messages(), 600), linked.messages())):
        accepted = classify(message.topic, message.payload, Limits(max_ahead_s=1e9))
        assert isinstance(accepted, Accepted)
        kinds.add(accepted.reading.kind)
        gateway_id = ("gw-1", 'gw "reading":null', "网关-λ")[index % 3]
        received_at = datetime(2026, 11, 24, 2, 0, index % 60, index * 997 % 1_000_000,
                               tzinfo=UTC)
        assert envelope_value(accepted, message.topic, gateway_id, received_at) == encode(
            GatewayEnvelope(received_at=received_at, gateway_id=gateway_id,
                            mqtt_topic=message.topic, reading=accepted.reading))
    assert kinds == {"container", "crane", "rtg", "gate"}


topics_strategy = st.one_of(
    st.text(max_size=80),
    st.builds(lambda a, b, c: f"port/{a}/{b}/{c}/telemetry",
              st.text(max_size=8), st.sampled_from(["crane", "rtg", "container", "x"]),
              st.text(max_size=12)),
)
payload_strategy = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda v: json.dumps(v).encode(), st.dictionaries(
        st.sampled_from([*list(crane_reading()), "extra"]),
        st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=20), st.booleans()),
    )),
)


@settings(max_examples=400)
@given(topics_strategy, payload_strategy)
def test_classify_never_raises(topic: str, payload: bytes) -> None:
    outcome = classify(topic, payload, Limits(max_payload_bytes=256))
    assert isinstance(outcome, Accepted | Rejected)
    if isinstance(outcome, Rejected):
        assert outcome.detail
        # The DLQ record of anything can be built and keeps the bytes exactly.
        value = dlq_value(outcome, payload, gateway_id="gw", received_at=NOW)
        assert DlqRecord.model_validate_json(value).payload == payload


# -- hostile input: each must be rejected with a reason, never raise ---------------------------

CRANE_TOPIC = "port/CNSHK/crane/qc-01/telemetry"
HOSTILE = hostile_payloads(NOW)


def _with_ts(ts: str) -> bytes:
    return _bytes(crane_reading(ts=ts))


@pytest.mark.parametrize(("payload", "reason", "detail"), list(HOSTILE.values()),
                         ids=list(HOSTILE))
def test_hostile_payloads_are_rejected_not_raised(payload: bytes, reason: RejectReason,
                                                  detail: str) -> None:
    outcome = classify(CRANE_TOPIC, payload, LIMIT, now=NOW)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is reason, outcome.detail
    assert detail in outcome.detail


def test_deep_nesting_is_caught_whatever_the_recursion_limit() -> None:
    """web3 (py_ecc) raises the interpreter's recursion limit to 100,000 on import; the
    stdlib's json then recursed 60,000 levels into a payload of ``[``."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        outcome = classify(CRANE_TOPIC, b"[" * 60_000, LIMIT, now=NOW)
    finally:
        sys.setrecursionlimit(before)
    assert isinstance(outcome, Rejected)
    assert "nested too deeply" in outcome.detail


@pytest.mark.parametrize("ts", ["2000-01-01T00:00:00Z", "2026-11-01T00:00:00Z",
                                "2026-11-24T02:09:59Z", "2026-11-24T10:09:00+08:00"],
                         ids=["first-accepted-instant", "weeks-old-buffered-at-sea",
                              "just-inside-the-future-window", "future-window-in-another-zone"])
def test_plausible_timestamps_are_accepted(ts: str) -> None:
    assert isinstance(classify(CRANE_TOPIC, _with_ts(ts), LIMIT, now=NOW), Accepted)


def test_the_timestamp_window_is_configurable() -> None:
    wide = Limits(max_payload_bytes=65_536, not_before=datetime(1990, 1, 1, tzinfo=UTC),
                  max_ahead_s=3600)
    assert isinstance(classify(CRANE_TOPIC, _with_ts("1999-12-31T23:59:59Z"), wide, now=NOW),
                      Accepted)
    assert isinstance(classify(CRANE_TOPIC, _with_ts("2026-11-24T02:11:00Z"), wide, now=NOW),
                      Accepted)


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 65_537, 1_048_575, 1_048_576, 3_000_000])
def test_the_dlq_record_of_any_payload_fits_kafka(size: int) -> None:
    """Kafka's default limit is 1 MiB a record; a DLQ record keeps a bounded prefix of the raw
    bytes with the full size and SHA-256, so the original can still be matched."""
    import hashlib

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    rejected = classify(CRANE_TOPIC, payload, LIMIT, now=NOW)
    assert isinstance(rejected, Rejected)
    value = dlq_value(rejected, payload, gateway_id="gw-1", received_at=NOW)
    assert len(value) < 1_000_000
    record = DlqRecord.model_validate_json(value)
    assert record.payload_size == size
    assert record.payload_sha256 == hashlib.sha256(payload).hexdigest()
    assert payload.startswith(record.payload)
    assert record.truncated == (len(record.payload) < size)


GATE_TOPIC = "port/CNSHK/gate/gate-cnshk-01/telemetry"


def _gate(**changes: Any) -> bytes:
    return json.dumps({"kind": "gate", "device_id": "gate-cnshk-01", "seq": 1,
                       "ts": "2026-11-24T02:00:00Z", "port": "CNSHK", "event": "gate_out",
                       "container_no": "CSQU3054383", "lane": 2, "truck_plate": "YUE B12345",
                       "load_kg": 21_000.0, **changes}).encode()


@pytest.mark.parametrize("changes", [
    {"lane": 0}, {"lane": 65}, {"load_kg": -1}, {"load_kg": 1e308}, {"load_kg": 120_001},
    {"truck_plate": ""}, {"truck_plate": "a" * 17}, {"truck_plate": "YUE\nB1"},
    {"truck_plate": "<script>"}, {"event": "gate_open"}, {"container_no": None},
    {"seal_id": "x" * 33}, {"kind": "gate", "vessel_imo": "9074729"},  # not a gate's field
])
def test_a_gate_reading_out_of_bounds_goes_to_the_dlq(changes: dict[str, Any]) -> None:
    assert isinstance(classify(GATE_TOPIC, _gate(), Limits()), Accepted)
    rejected = classify(GATE_TOPIC, _gate(**changes), Limits())
    assert isinstance(rejected, Rejected)
    assert rejected.reason is RejectReason.SCHEMA
