"""Flushing a producer while it makes progress: however long Kafka is slow, but not for ever
once it delivers nothing (a producer left with no broker to ask after a Kafka restart), and
not past a stop."""

from __future__ import annotations

import threading

from smartport.kafka import flush_while_progressing


class _Producer:
    """Delivers ``per_flush`` records per flush (0: stuck)."""

    def __init__(self, held: int, per_flush: int) -> None:
        self.held, self.per_flush, self.flushes = held, per_flush, 0

    def flush(self, timeout: float) -> int:
        self.flushes += 1
        self.held = max(0, self.held - self.per_flush)
        return self.held

    def __len__(self) -> int:
        return self.held


def test_a_slow_producer_is_flushed_until_it_holds_nothing() -> None:
    producer = _Producer(held=5, per_flush=1)
    assert flush_while_progressing(producer, stalled_after_s=0.5) == 0  # type: ignore[arg-type]
    assert producer.flushes == 5


def test_a_producer_that_delivers_nothing_is_given_up_after_the_bound() -> None:
    producer = _Producer(held=3, per_flush=0)
    assert flush_while_progressing(producer, stalled_after_s=0.05) == 3  # type: ignore[arg-type]
    assert producer.flushes >= 1


def test_a_stop_ends_the_wait_with_what_is_left() -> None:
    stop = threading.Event()
    stop.set()
    producer = _Producer(held=3, per_flush=0)
    assert flush_while_progressing(producer, 60.0, stop) == 3  # type: ignore[arg-type]
    assert producer.flushes == 0
