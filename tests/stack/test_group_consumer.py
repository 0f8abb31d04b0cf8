"""A consumer left out of its group on the real stack: replaced by a new member, which gets the
partitions and reads on from the last commit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import REGISTRY

from smartport.group_consumer import GroupConsumer
from smartport.settings import Settings
from tests.stack.pipeline import unique


@pytest.fixture
def topic(stack: Settings) -> Iterator[str]:
    name = unique("group-consumer")
    admin = AdminClient(stack.kafka.client_config())
    admin.create_topics([NewTopic(name, stack.kafka.partitions,
                                  stack.kafka.replication_factor)])[name].result(30)
    yield name
    admin.delete_topics([name])


def _produce(settings: Settings, topic: str, values: range) -> None:
    producer = Producer(settings.kafka.client_config())
    for i in values:
        producer.produce(topic, key=b"k%d" % i, value=b"%d" % i)
    assert producer.flush(30) == 0


def test_a_member_pushed_out_of_its_group_is_replaced_and_reads_on(
        stack: Settings, topic: str) -> None:
    group = unique("group-consumer")
    assigned: list[Consumer] = []
    revoked: list[Consumer] = []
    member = GroupConsumer(stack.kafka.model_copy(update={"replace_after_s": 3.0}), group,
                           [topic], on_assign=lambda consumer, _: assigned.append(consumer),
                           on_revoke=lambda consumer, _: revoked.append(consumer))
    seen: set[int] = set()

    def read_until(done: int, polls: int = 300) -> None:
        for _ in range(polls):
            for message in member.consume(500, timeout=0.1):
                seen.add(int(message.value() or b"-1"))
                member.commit({(message.topic() or "", message.partition() or 0):
                               (message.offset() or 0) + 1})
            if len(seen) >= done:
                return

    try:
        _produce(stack, topic, range(100))
        read_until(100)
        assert seen == set(range(100))
        first = member.consumer
        assert assigned == [first]

        # What librdkafka was seen to do after a broker restart: out of its group, no rejoin.
        first.unsubscribe()
        before = REGISTRY.get_sample_value("smartport_kafka_consumers_replaced_total",
                                           {"group": group}) or 0.0
        _produce(stack, topic, range(100, 200))
        read_until(200)
        assert seen == set(range(200)), f"{200 - len(seen)} records not read"
        assert revoked == [first]  # the old member's revocation was heard, once
        assert member.consumer is not first
        assert assigned == [first, member.consumer]
        assert REGISTRY.get_sample_value("smartport_kafka_consumers_replaced_total",
                                         {"group": group}) == before + 1
        # The new member commits for the group: its offsets cover every record.
        positions = member.consumer.committed(
            [TopicPartition(topic, p) for p in range(stack.kafka.partitions)], timeout=30)
        assert sum(max(tp.offset, 0) for tp in positions) == 200
    finally:
        member.close()
