"""Kafka producer settings shared by every smartport producer."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from smartport.settings import KafkaSettings


def producer_config(kafka: KafkaSettings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """An idempotent, lz4, murmur2 producer that never gives up on a record by itself.

    ``message.timeout.ms=0`` keeps retrying while Kafka is down: the caller keeps its input
    unacknowledged meanwhile, so nothing is dropped and memory stays bounded by the caller.
    ``murmur2_random`` puts a key in the same partition as Java and faust (aiokafka) clients do.
    """
    return {
        **kafka.client_config(),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 10,
        "batch.num.messages": 10_000,
        "partitioner": "murmur2_random",
        "message.timeout.ms": 0,
        "queue.buffering.max.messages": 200_000,
        **overrides,
    }


def produce(producer: Producer, topic: str, key: bytes, value: bytes, **kwargs: Any) -> None:
    """Produce, waiting for room when the local queue is full instead of dropping the record."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, **kwargs)
        except BufferError:
            producer.poll(0.05)
        else:
            producer.poll(0)
            return
