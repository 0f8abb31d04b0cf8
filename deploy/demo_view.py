"""The demo's live status: messages/s per stage, alerts by rule, batches anchored, rows stored.

Figures come from where the data is, not from the processes' own counters: Kafka high
watermarks (telemetry, DLQ, anchors), the alerts topic itself, and the store's row count.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from schemas import Alert, topics
from smartport.kafka import consume_records
from smartport.settings import KafkaSettings

T = TypeVar("T")
_REFRESH_S = 1.0
_PLAIN_EVERY_S = 10.0  # without a terminal, one status line this often


class Counted(Iterable[T]):
    """Counts what a consumer has taken from ``items`` (the simulator's published messages)."""

    def __init__(self, items: Iterable[T]) -> None:
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[T]:
        for item in self._items:
            self.count += 1
            yield item


@dataclass
class _Stage:
    name: str
    total: int = 0
    rate: float = 0.0

    def update(self, total: int, seconds: float) -> None:
        self.rate = max(0, total - self.total) / seconds if seconds > 0 else 0.0
        self.total = total


@dataclass
class StageCounts:
    stages: dict[str, _Stage] = field(default_factory=dict)
    alerts_by_rule: Counter[str] = field(default_factory=Counter)

    def table(self, elapsed_s: float) -> Table:
        table = Table("stage", "total", "per second", title=f"smartport demo — {elapsed_s:.0f} s")
        for stage in self.stages.values():
            table.add_row(stage.name, f"{stage.total:,}", f"{stage.rate:,.0f}")
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(self.alerts_by_rule.items()))
        table.add_row("alerts raised by rule", rules or "none yet", "")
        return table

    def line(self, elapsed_s: float) -> str:
        parts = [f"{stage.name} {stage.total:,} ({stage.rate:,.0f}/s)"
                 for stage in self.stages.values()]
        return f"[{elapsed_s:.0f} s] " + "; ".join(parts)


class LiveStatus:
    """A thread that refreshes the counts once a second until stopped (use as a context)."""

    def __init__(self, kafka: KafkaSettings, published: Counted[Any],
                 since: dict[str, dict[int, int]], stored_rows: Callable[[], int | None],
                 console: Console) -> None:
        self._published = published
        self._since = since
        self._stored_rows = stored_rows
        self._console = console
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-status", daemon=True)
        config = {**kafka.client_config(), "group.id": "smartport-demo-status",
                  "enable.auto.commit": False}
        # Two clients: a watermark request waits behind an assigned consumer's fetch long-poll.
        self._watermarks = Consumer(config)
        self._alerts = Consumer(config)
        self._alerts.assign([TopicPartition(topics.ALERTS, p, offset)
                             for p, offset in since[topics.ALERTS].items()])
        self._stored_at_start = stored_rows() or 0
        self.counts = StageCounts({key: _Stage(name) for key, name in (
            ("published", "published over MQTT"),
            (topics.TELEMETRY, "valid → telemetry.v1 (Kafka)"),
            (topics.TELEMETRY_DLQ, "invalid → telemetry.dlq.v1"),
            ("stored", "rows stored in ClickHouse"),
            (topics.ANCHORS, "Merkle batches anchored"),
        )})
        self._started = time.monotonic()

    def __enter__(self) -> LiveStatus:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._watermarks.close()
        self._alerts.close()

    def _grown(self, topic: str) -> int | None:
        """Records added to ``topic`` since the start; None while Kafka cannot say (a broker
        restarting or a leader moving)."""
        total = 0
        for partition, start in self._since[topic].items():
            try:
                _, high = self._watermarks.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=5)
            except KafkaException:
                return None
            total += max(0, high - start)
        return total

    def _refresh(self, seconds: float) -> None:
        stages = self.counts.stages
        stages["published"].update(self._published.count, seconds)
        for topic in (topics.TELEMETRY, topics.TELEMETRY_DLQ, topics.ANCHORS):
            grown = self._grown(topic)
            if grown is not None:
                stages[topic].update(grown, seconds)
        stored = self._stored_rows()
        if stored is not None:
            stages["stored"].update(stored - self._stored_at_start, seconds)
        for message in consume_records(self._alerts, 10_000, timeout=0):
            try:
                alert = Alert.model_validate_json(message.value() or b"")
            except ValueError:
                continue
            if alert.state.value == "raised":
                self.counts.alerts_by_rule[alert.rule.value] += 1

    def _run(self) -> None:
        live = Live(console=self._console, auto_refresh=False, transient=False)
        last, last_line = time.monotonic(), 0.0
        with live if self._console.is_terminal else contextlib.nullcontext():
            while not self._stop.wait(_REFRESH_S):
                now = time.monotonic()
                self._refresh(now - last)
                last, elapsed = now, now - self._started
                if self._console.is_terminal:
                    live.update(self.counts.table(elapsed), refresh=True)
                elif elapsed - last_line >= _PLAIN_EVERY_S:
                    self._console.print(self.counts.line(elapsed), highlight=False)
                    last_line = elapsed
