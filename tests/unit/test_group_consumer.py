"""A consumer left out of its group is replaced by a new member, and only then; a replaced
member's late rebalance callbacks are not heard. (Against real Kafka: tests/stack/test_relay.)"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from smartport.group_consumer import ConsumerFailed, GroupConsumer
from smartport.settings import KafkaSettings

GROUP = "unit-group"
PARTITIONS = [TopicPartition("telemetry.v1", 0)]


class FakeConsumer:
    """What GroupConsumer asks of a librdkafka consumer; the test plays the rebalances."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.closed = False
        self.on_assign: Any = None
        self.on_revoke: Any = None
        self.commits: list[tuple[list[TopicPartition], bool]] = []

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.topics, self.on_assign, self.on_revoke = topics, on_assign, on_revoke

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def assignment(self) -> list[TopicPartition]:
        return PARTITIONS

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append((offsets, asynchronous))

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _group(clock: Clock) -> tuple[GroupConsumer, list[Any], list[str]]:
    made: list[Any] = []  # FakeConsumers, seen by GroupConsumer as Consumers
    heard: list[str] = []

    def new_consumer(config: dict[str, Any]) -> Any:
        made.append(FakeConsumer(config))
        return made[-1]

    group = GroupConsumer(
        KafkaSettings(replace_after_s=30), GROUP, ["telemetry.v1"],
        on_assign=lambda consumer, partitions: heard.append(f"assign {made.index(consumer)}"),
        on_revoke=lambda consumer, partitions: heard.append(f"revoke {made.index(consumer)}"),
        new_consumer=new_consumer, clock=clock)
    group.consume(10)  # the first member joins
    return group, made, heard


def _replaced() -> float:
    return REGISTRY.get_sample_value("smartport_kafka_consumers_replaced_total",
                                     {"group": GROUP}) or 0.0


def test_a_member_in_its_group_is_kept_however_long() -> None:
    clock = Clock()
    group, made, heard = _group(clock)
    made[0].on_assign(made[0], PARTITIONS)
    clock.now += 3600
    group.consume(10)
    assert len(made) == 1
    assert not made[0].closed
    assert heard == ["assign 0"]


def test_a_member_revoked_and_never_assigned_again_is_replaced_after_the_bound() -> None:
    clock = Clock()
    group, made, heard = _group(clock)
    made[0].on_assign(made[0], PARTITIONS)
    made[0].on_revoke(made[0], PARTITIONS)  # session timed out: out of the group
    before = _replaced()
    clock.now += 30
    group.consume(10)
    assert len(made) == 1  # at the bound, not yet
    clock.now += 0.1
    group.consume(10)
    assert len(made) == 2
    assert made[0].closed
    assert not made[1].closed
    assert {**made[1].config, "logger": None} == {**made[0].config, "logger": None}
    assert made[1].topics == ["telemetry.v1"]
    assert _replaced() == before + 1
    made[1].on_assign(made[1], PARTITIONS)
    assert heard == ["assign 0", "revoke 0", "assign 1"]
    assert group.consumer is made[1]


def test_a_member_that_never_joins_is_replaced_too_and_again() -> None:
    clock = Clock()
    group, made, _ = _group(clock)
    for expected in (2, 3):
        clock.now += 31
        group.consume(10)
        assert len(made) == expected  # each new member has the whole bound again


def test_the_replaced_member_is_not_heard_any_more() -> None:
    clock = Clock()
    group, made, heard = _group(clock)
    clock.now += 31
    group.consume(10)
    made[0].on_assign(made[0], PARTITIONS)  # late: its close was under way
    made[0].on_revoke(made[0], PARTITIONS)
    assert heard == []
    clock.now += 31
    group.consume(10)
    assert len(made) == 3  # the old member's late assignment did not count for the new one


def test_commits_go_through_the_current_member_without_waiting() -> None:
    clock = Clock()
    group, made, _ = _group(clock)
    clock.now += 31
    group.consume(10)
    group.commit({("telemetry.v1", 0): 7})
    assert made[0].commits == []
    [(offsets, asynchronous)] = made[1].commits
    assert asynchronous is True
    assert [(tp.topic, tp.partition, tp.offset) for tp in offsets] == [("telemetry.v1", 0, 7)]


def test_a_member_replaced_while_in_its_group_is_heard_leaving_first() -> None:
    """The relay replaces its member when its producer is stuck: the owner must hear the
    member leave its partitions (readiness, buffers to commit) before the new one joins."""
    clock = Clock()
    group, made, heard = _group(clock)
    made[0].on_assign(made[0], PARTITIONS)
    group.replace("its producer was replaced")
    assert len(made) == 2
    assert made[0].closed
    assert heard == ["assign 0", "revoke 0"]
    clock.now += 31
    group.consume(10)
    assert len(made) == 3  # the new member never got in: replaced in its turn


def test_a_member_fenced_for_good_fails_instead_of_polling_on_deaf() -> None:
    """Another process joined with the same group.instance.id: librdkafka only logs it (no
    error event, nothing from consume), then polls on without a group."""
    group, made, _ = _group(Clock())
    made[0].on_assign(made[0], PARTITIONS)
    client_log = made[0].config["logger"]
    client_log.log(3, "%s [%s]: %s", "SESSTMOUT", "rdkafka#consumer-1", "session timed out")
    assert group.consume(10) == []  # an error it recovers from: logged, no more
    client_log.log(50, "FATAL [rdkafka#consumer-1] [thrd:main]: Fatal error: Broker: Static "
                   "consumer fenced by other consumer with same group.instance.id")
    with pytest.raises(ConsumerFailed, match=(
            f"consumer of group {GROUP} failed for good: .*Static consumer fenced.* another "
            "process runs with the same --instance-id")):
        group.consume(10)


def test_a_replaced_member_fenced_by_its_successor_does_not_end_the_consumer() -> None:
    """With static membership, the successor joins under the same group.instance.id: a
    replaced member whose close did not finish is fenced by it. That is the replacement
    working, not another process."""
    clock = Clock()
    group, made, _ = _group(clock)
    made[0].on_revoke(made[0], PARTITIONS)
    clock.now += 31
    group.consume(10)  # replaced
    made[0].config["logger"].log(50, "FATAL [rdkafka#consumer-1] [thrd:main]: Fatal error: "
                                 "Broker: Static consumer fenced by other consumer with same "
                                 "group.instance.id")
    assert group.consume(10) == []
    made[1].config["logger"].log(50, "FATAL [rdkafka#consumer-2] [thrd:main]: Fatal error: "
                                 "Broker: Static consumer fenced by other consumer with same "
                                 "group.instance.id")
    with pytest.raises(ConsumerFailed):
        group.consume(10)
