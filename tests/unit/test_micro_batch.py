"""Micro-batches between the relay and the streams worker: exact round trips, and bytes that
are not a batch refused with a reason, never misread; a relay that cannot work says so."""

from __future__ import annotations

import struct

import pytest
from prometheus_client import Gauge

from smartport.polling import wait_until
from smartport.readiness import NotWorking, Readiness
from smartport.settings import KafkaSettings
from streams.micro_batch import VERSION, MalformedBatch, chunks, pack, unpack
from streams.relay import RELAY, TelemetryRelay

AWKWARD = [
    (0, b""),  # a tombstone or an empty value
    (1, b'{"a":1}\n{"b":2}'),  # newlines: no line framing to confuse
    (2, bytes(range(256))),  # every byte value
    (2**63 - 1, b"x" * 70_000),  # the largest offset, a value beyond 16-bit lengths
]


def test_every_record_comes_back_as_it_went_in() -> None:
    assert unpack(pack(AWKWARD)) == AWKWARD
    assert unpack(pack([])) == []


@pytest.mark.parametrize(("batch", "reason"), [
    (b"", "an empty record"),
    (b'{"reading": 1}', "version byte 123"),
    (bytes([VERSION]) + b"\x00" * 5, "truncated entry header"),
    (bytes([VERSION]) + struct.pack(">qI", 7, 10) + b"short", "runs past the end"),
    (pack(AWKWARD)[:-1], "runs past the end"),
    (pack(AWKWARD) + b"\x00", "truncated entry header"),
    (pack([(-1, b"{}")]), "offset -1"),  # no Kafka record has one: evidence would carry it
])
def test_bytes_that_are_not_a_batch_are_refused(batch: bytes, reason: str) -> None:
    with pytest.raises(MalformedBatch, match=reason):
        unpack(batch)


def test_chunks_keep_order_and_stay_within_the_bound() -> None:
    records = [(i, b"v" * (i % 7 * 100)) for i in range(200)]
    runs = list(chunks(records, 1000))
    assert [record for run in runs for record in run] == records
    assert all(sum(len(v) for _, v in run) <= 1000 for run in runs)
    assert len(runs) > 1


def test_a_record_larger_than_the_bound_is_a_run_of_its_own() -> None:
    records = [(0, b"a"), (1, b"b" * 5000), (2, b"c")]
    assert list(chunks(records, 1000)) == [[records[0]], [records[1]], [records[2]]]


def test_a_relay_that_never_joins_its_group_says_so_and_stops() -> None:
    """Kafka unreachable (nothing listens on port 1): the relay must not idle alive."""
    readiness = Readiness(Gauge("unit_relay_ready", "-", registry=None), "streams", 60, (RELAY,))
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:1", join_timeout_s=1.0)
    relay = TelemetryRelay(kafka, "telemetry.v1", "unit-relay",
                           readiness=readiness)
    relay.start()
    try:
        assert wait_until(lambda: relay.failure is not None, 30)
    finally:
        relay.stop()
    assert isinstance(relay.failure, NotWorking)
    assert "has not been assigned its Kafka partitions" in str(relay.failure)
    assert not readiness.holds(RELAY)
