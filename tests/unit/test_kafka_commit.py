"""Offset commits never hold up the poll loop; their failures are counted, give way to a
coordinator moving or a rebalance, and raise otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from prometheus_client import REGISTRY

from smartport.kafka import commit_offsets, consumer_config, on_commit
from smartport.settings import KafkaSettings


class RecordingConsumer:
    def __init__(self) -> None:
        self.commits: list[tuple[Any, bool]] = []

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        self.commits.append((offsets, asynchronous))


def _failures(error: int) -> float:
    return REGISTRY.get_sample_value("smartport_kafka_commit_failures_total",
                                     {"error": KafkaError(error).name()}) or 0.0


def test_the_commit_is_sent_without_waiting_for_the_coordinator() -> None:
    consumer = RecordingConsumer()
    commit_offsets(consumer, {("telemetry.v1", 3): 42})  # type: ignore[arg-type]
    [(offsets, asynchronous)] = consumer.commits
    assert asynchronous is True
    assert [(tp.topic, tp.partition, tp.offset) for tp in offsets] == [("telemetry.v1", 3, 42)]


def test_every_consumer_hears_how_its_commits_ended() -> None:
    assert consumer_config(KafkaSettings(), "g")["on_commit"] is on_commit


@pytest.mark.parametrize("error", [
    KafkaError.NOT_COORDINATOR, KafkaError._WAIT_COORD, KafkaError._TRANSPORT,  # moving
    KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS,  # superseded
])
def test_a_commit_lost_to_a_restart_or_a_rebalance_is_counted(error: int) -> None:
    before = _failures(error)
    on_commit(KafkaError(error), [TopicPartition("telemetry.v1", 0, 1)])
    assert _failures(error) == before + 1


@dataclass
class FailedPartition:
    """A TopicPartition as librdkafka reports one it could not commit (its ``error`` is
    read-only on the real class)."""

    error: KafkaError


def test_partition_level_failures_are_counted_once_per_commit() -> None:
    failed = [FailedPartition(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS))] * 11
    before = _failures(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
    on_commit(None, [TopicPartition("telemetry.v1", 1, 5), *failed])  # type: ignore[list-item]
    assert _failures(KafkaError.COORDINATOR_LOAD_IN_PROGRESS) == before + 1


def test_a_successful_commit_counts_nothing() -> None:
    before = _failures(KafkaError.NOT_COORDINATOR)
    on_commit(None, [TopicPartition("telemetry.v1", 0, 1)])
    assert _failures(KafkaError.NOT_COORDINATOR) == before


def test_other_failures_raise_out_of_the_poll_that_delivers_them() -> None:
    with pytest.raises(KafkaException):
        on_commit(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED),
                  [TopicPartition("telemetry.v1", 0, 1)])
