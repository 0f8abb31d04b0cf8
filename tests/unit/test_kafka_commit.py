"""Offset commits ride out a coordinator move, give way to a rebalance, and raise otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from smartport.kafka import commit_offsets


class FailingConsumer:
    """Fails its first commits with ``errors``, then succeeds."""

    def __init__(self, *errors: int) -> None:
        self.errors = list(errors)
        self.commits: list[Any] = []

    def commit(self, offsets: Any, asynchronous: bool) -> None:
        assert asynchronous is False
        self.commits.append(offsets)
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0)))


def test_a_moving_coordinator_is_waited_out() -> None:
    consumer = FailingConsumer(KafkaError.NOT_COORDINATOR, KafkaError._TRANSPORT)
    assert commit_offsets(consumer, {("telemetry.v1", 3): 42}) is True  # type: ignore[arg-type]
    assert len(consumer.commits) == 3
    committed = consumer.commits[-1][0]
    assert (committed.topic, committed.partition, committed.offset) == ("telemetry.v1", 3, 42)


def test_a_rebalance_supersedes_the_commit() -> None:
    consumer = FailingConsumer(KafkaError.ILLEGAL_GENERATION)
    assert commit_offsets(consumer, {("telemetry.v1", 0): 1}) is False  # type: ignore[arg-type]
    assert len(consumer.commits) == 1


def test_other_failures_raise() -> None:
    consumer = FailingConsumer(KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        commit_offsets(consumer, {("telemetry.v1", 0): 1})  # type: ignore[arg-type]


def test_a_coordinator_that_never_returns_raises_in_the_end() -> None:
    consumer = FailingConsumer(*[KafkaError.NOT_COORDINATOR] * 100)
    with pytest.raises(KafkaException):
        commit_offsets(consumer, {("telemetry.v1", 0): 1}, timeout=0.5)  # type: ignore[arg-type]
