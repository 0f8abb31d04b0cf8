"""The streams worker's relay on the real stack: telemetry.v1 into micro-batches, every record
once and in order, offsets committed only once Kafka took the batches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY, Gauge

from deploy.topics import delete_app_topics
from smartport.kafka import (
    committed_offsets,
    ensure_topics,
    high_watermarks,
    read_range,
)
from smartport.polling import wait_until
from smartport.readiness import Readiness
from smartport.settings import Settings
from streams.app import internal_topics
from streams.micro_batch import unpack
from streams.relay import RELAY, RelayFailed, TelemetryRelay, batches_topic, relay_group
from tests.stack.pipeline import FirstProducerStuck, run_scratch_worker, unique

READY = Gauge("test_relay_ready", "the relay's readiness in these tests", registry=None)


@pytest.fixture
def scratch(stack: Settings) -> Iterator[tuple[str, str]]:
    """A scratch source topic and a stream app id; both deleted afterwards."""
    source, app_id = unique("relay-source"), unique("relay")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(source, stack.kafka.partitions,
                                  stack.kafka.replication_factor)])[source].result(30)
    yield source, app_id
    admin.delete_topics([source])
    delete_app_topics(stack.kafka, app_id)


def _produce(settings: Settings, topic: str, count: int, start: int = 0) -> None:
    producer = Producer(settings.kafka.client_config())
    for i in range(start, start + count):
        # Values a real topic can hold: envelopes, garbage, newlines, empty values.
        value = [b'{"n": %d}' % i, b"[" * (i % 50), b"a\nb %d" % i, b""][i % 4]
        producer.produce(topic, key=b"C%d" % (i % 97), value=value)
    assert producer.flush(30) == 0


def _committed(settings: Settings, app_id: str, source: str) -> dict[int, int]:
    return committed_offsets(settings.kafka, relay_group(app_id), source,
                             settings.kafka.partitions)


def _batched(settings: Settings, app_id: str) -> dict[int, list[tuple[int, bytes]]]:
    relayed: dict[int, list[tuple[int, bytes]]] = {}
    for message in read_range(settings.kafka, batches_topic(app_id), {}):
        relayed.setdefault(message.partition() or 0, []).extend(unpack(message.value() or b""))
    return relayed


def _source(settings: Settings, topic: str) -> dict[int, list[tuple[int, bytes]]]:
    records: dict[int, list[tuple[int, bytes]]] = {}
    for message in read_range(settings.kafka, topic, {}):
        records.setdefault(message.partition() or 0, []).append(
            (message.offset() or 0, message.value() or b""))
    return records


def _relay(settings: Settings, source: str, app_id: str) -> tuple[TelemetryRelay, Readiness]:
    readiness = Readiness(READY, "streams", settings.kafka.join_timeout_s, (RELAY,))
    return TelemetryRelay(settings.kafka, source, app_id,
                          readiness=readiness), readiness


def test_every_record_is_relayed_once_in_order_to_its_partition(
        stack: Settings, scratch: tuple[str, str]) -> None:
    source, app_id = scratch
    ensure_topics(stack.kafka, internal_topics(app_id))
    _produce(stack, source, 3000)
    relay, readiness = _relay(stack, source, app_id)
    relay.start()
    try:
        ends = high_watermarks(stack.kafka, source)
        assert wait_until(lambda: _committed(stack, app_id, source) == ends, 60), (
            _committed(stack, app_id, source), ends, relay.failure)
        assert readiness.ready is False  # the worker's faust group is not joined here
        assert readiness.holds(RELAY)
    finally:
        relay.stop()
    assert relay.failure is None
    assert _batched(stack, app_id) == _source(stack, source)

    # A relay started again goes on from the commit: nothing is relayed twice.
    _produce(stack, source, 40, start=3000)
    again, _ = _relay(stack, source, app_id)
    again.start()
    try:
        ends = high_watermarks(stack.kafka, source)
        assert wait_until(lambda: _committed(stack, app_id, source) == ends, 60)
    finally:
        again.stop()
    assert _batched(stack, app_id) == _source(stack, source)


def test_a_producer_that_delivers_nothing_is_replaced_and_nothing_is_lost(
        stack: Settings, scratch: tuple[str, str]) -> None:
    """After a Kafka restart a relay's producer was seen left with no broker to ask, its
    batches held for good while the worker said ready. Here the first producer talks to a
    port nothing listens on: it is replaced, and what it held is relayed again, once."""
    source, app_id = scratch
    ensure_topics(stack.kafka, internal_topics(app_id))
    _produce(stack, source, 500)
    kafka = stack.kafka.model_copy(update={"replace_after_s": 3.0})
    new_producer = FirstProducerStuck()

    replaced = {"client": relay_group(app_id)}
    before = REGISTRY.get_sample_value("smartport_kafka_producers_replaced_total", replaced)
    assert before is None
    readiness = Readiness(READY, "streams", kafka.join_timeout_s, (RELAY,))
    relay = TelemetryRelay(kafka, source, app_id, readiness=readiness,
                           new_producer=new_producer)
    relay.start()
    try:
        ends = high_watermarks(stack.kafka, source)
        assert wait_until(lambda: _committed(stack, app_id, source) == ends, 120), (
            _committed(stack, app_id, source), ends, relay.failure)
    finally:
        relay.stop()
    assert relay.failure is None
    assert new_producer.made == 2
    assert REGISTRY.get_sample_value("smartport_kafka_producers_replaced_total", replaced) == 1
    assert _batched(stack, app_id) == _source(stack, source)


def test_a_batch_kafka_refuses_stops_the_relay_without_committing(
        stack: Settings, scratch: tuple[str, str]) -> None:
    source, app_id = scratch
    ensure_topics(stack.kafka, {batches_topic(app_id): {"max.message.bytes": "64"}})
    _produce(stack, source, 20)
    relay, readiness = _relay(stack, source, app_id)
    relay.start()
    try:
        assert wait_until(lambda: relay.failure is not None, 60), "the relay went on"
    finally:
        relay.stop()
    assert isinstance(relay.failure, RelayFailed)
    assert "MSG_SIZE_TOO_LARGE" in str(relay.failure) or "too large" in str(relay.failure)
    assert not readiness.holds(RELAY)
    assert not any(_committed(stack, app_id, source).values())  # a commit would be ≥ 1


def test_a_failed_relay_ends_the_worker(stack: Settings, scratch: tuple[str, str]) -> None:
    """A worker whose relay cannot write its batches judges nothing: it must exit, not idle."""
    source, app_id = scratch
    ensure_topics(stack.kafka, {batches_topic(app_id): {"max.message.bytes": "64"}})
    _produce(stack, source, 5)
    finished = run_scratch_worker(app_id, source)
    assert finished.returncode != 0, finished.stderr[-2000:]
    assert "Kafka refused a micro-batch" in finished.stderr, finished.stderr[-2000:]
