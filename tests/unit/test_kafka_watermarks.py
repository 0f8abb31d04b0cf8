"""Watermarks ride out a partition leader being elected (a broker lost under load) instead of
failing whoever asked — a drain wait, a report, a test."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from smartport import kafka
from smartport.settings import KafkaSettings


class _Topic:
    partitions: ClassVar[dict[int, None]] = {0: None, 1: None}


class _Metadata:
    topics: ClassVar[dict[str, _Topic]] = {"telemetry.v1": _Topic()}


class ElectingConsumer:
    """A consumer whose watermark requests fail with ``error`` ``failures`` times first."""

    failures = 0
    error = KafkaError.OFFSET_NOT_AVAILABLE

    def __init__(self, config: dict[str, Any]) -> None:
        pass

    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        return _Metadata()

    def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
        if ElectingConsumer.failures:
            ElectingConsumer.failures -= 1
            raise KafkaException(KafkaError(ElectingConsumer.error))
        return (0, 10 + partition.partition)

    def close(self) -> None:
        pass


@pytest.fixture
def electing(monkeypatch: pytest.MonkeyPatch) -> type[ElectingConsumer]:
    monkeypatch.setattr(kafka, "Consumer", ElectingConsumer)
    monkeypatch.setattr(time, "sleep", lambda _: None)  # the retry's pause
    return ElectingConsumer


@pytest.mark.parametrize("error", [
    # a new leader whose high watermark has not caught up yet (seen in CI, broker killed)
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._TRANSPORT,
])
def test_an_election_in_progress_is_waited_out(electing: type[ElectingConsumer],
                                               error: int) -> None:
    electing.failures, electing.error = 3, error
    assert kafka.watermarks(KafkaSettings(), "telemetry.v1") == {0: (0, 10), 1: (0, 11)}


def test_other_errors_are_not_retried(electing: type[ElectingConsumer]) -> None:
    electing.failures, electing.error = 1, KafkaError.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException, match="TOPIC_AUTHORIZATION_FAILED"):
        kafka.watermarks(KafkaSettings(), "telemetry.v1")


def test_an_election_that_never_ends_is_an_error(electing: type[ElectingConsumer]) -> None:
    electing.failures, electing.error = 10**9, KafkaError.OFFSET_NOT_AVAILABLE
    with pytest.raises(KafkaException, match="OFFSET_NOT_AVAILABLE"):
        kafka.watermarks(KafkaSettings(), "telemetry.v1", timeout=0.0)
