"""`smartport sink`: Kafka → ClickHouse in batched inserts, offsets committed after the insert.

A consumer group over telemetry, alerts, declarations, anchors and the DLQ. Rows are buffered
per table and inserted every ``batches.sink_rows`` rows or ``batches.sink_seconds``, by
inserter threads (``Store.inserts_in_flight`` batches at once) while the next batch is read;
only when every table accepted a batch's rows are its offsets committed, in the order read,
so a crash never loses a row and a redelivery only adds duplicates that ReplacingMergeTree
collapses. While ClickHouse is
unreachable the sink retries with backoff and keeps its offsets. Rows ClickHouse refuses (a
value it cannot store, a batch spanning too many partitions) are split off until each refused
row is alone, and that row goes to ``sink_rejects`` with ClickHouse's reason: one row never
stops the others.

telemetry.v1's records go to ClickHouse as they are (``telemetry_intake``, on a server through
chDB in this process: ``streams.analytics.intake``): ClickHouse judges their shape and turns them
into rows, or into ``sink_rejects`` with the reason, at a fraction of the cost of doing it here
(the gateway validated their content; the streams worker does again). Records without a
reading_id (written before it existed), other topics, and flushes of fewer than
``Store.intake_min_rows`` telemetry records (each insert into the intake has a fixed cost) are
converted here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from schemas import clickhouse as ch
from smartport.group_consumer import GroupConsumer
from smartport.kafka import BULK_FETCH
from smartport.readiness import GROUP, STALL_S, Readiness
from smartport.settings import Settings
from smartport.signals import stop_on_signals
from streams.analytics.rows import CONVERTERS, SINK_TOPICS, Row, reject_row, to_row
from streams.analytics.store import PreparedInsert, Store

log = logging.getLogger(__name__)

ROWS = Counter("smartport_sink_rows", "rows inserted into ClickHouse", ["table"])
REJECTED = Counter("smartport_sink_rejected", "records kept in sink_rejects", ["topic"])
CLICKHOUSE_UP = Gauge("smartport_sink_clickhouse_up", "1 when the last insert succeeded")
READY_GAUGE = Gauge("smartport_sink_ready",
                    "1 while the sink holds its partitions and ClickHouse takes its rows")
INSERT_SECONDS = Histogram("smartport_sink_insert_seconds", "one batch insert, all tables")
MAX_BACKOFF_S = 30.0
_HAS_READING_ID = b'"reading_id":"'
INTAKE_WRITES = 3  # rows ClickHouse writes per intake record: the record, judged, then stored


@dataclass(slots=True)
class _Buffered:
    """A row and the record it came from (kept whole in sink_rejects if ClickHouse refuses)."""

    row: Row
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class _Batch:
    """Rows for one insert per table, and the offsets to commit once they are stored."""

    items: dict[ch.Table, list[_Buffered]]
    offsets: dict[tuple[str, int], int]
    rows: int
    sends: dict[ch.Table, PreparedInsert]  # taken by the first try: a retry encodes again


class Sink:
    def __init__(self, settings: Settings, store: Store, group: str = "smartport-sink",
                 source_topics: tuple[str, ...] = SINK_TOPICS,
                 on_stored: Callable[[int], None] | None = None) -> None:
        """``on_stored`` is called from the inserter thread with a batch's row count as soon as
        ClickHouse took the batch (before its offsets are committed)."""
        self._store = store
        self._on_stored = on_stored
        self._max_rows = settings.batches.sink_rows
        self._max_seconds = settings.batches.sink_seconds
        self._topics = source_topics
        self._consumer = GroupConsumer(
            settings.kafka, group, list(source_topics),
            on_assign=self._on_assign, on_revoke=self._on_revoke,
            # a ClickHouse outage keeps the assignment
            options={**BULK_FETCH, "max.poll.interval.ms": 3_600_000})
        self._buffer: dict[ch.Table, list[_Buffered]] = defaultdict(list)
        self._offsets: dict[tuple[str, int], int] = {}
        self._buffered = 0
        self._first_buffered = 0.0
        self._inserter = ThreadPoolExecutor(store.inserts_in_flight,
                                            thread_name_prefix="sink-insert")
        self._in_flight: deque[tuple[Future[bool], _Batch]] = deque()
        self._stop = threading.Event()
        self.readiness = Readiness(READY_GAUGE, "sink", settings.kafka.join_timeout_s,
                                   conditions=("store",), stall_s=STALL_S)
        self.readiness.set("store", True)  # opened; an insert that fails says otherwise
        self._intake = store.has_intake()
        self.inserted = 0

    def _add(self, message: Message) -> None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            return
        value = message.value()
        if self._intake and value and _HAS_READING_ID in value and (
                CONVERTERS[topic][0] is ch.TELEMETRY):
            try:
                raw = value.decode()
            except UnicodeDecodeError:
                pass  # converted here, to be rejected with the reason
            else:
                self._buffer_row(ch.INTAKE, {"topic": topic, "kafka_partition": partition,
                                             "kafka_offset": offset, "raw": raw},
                                 (topic, partition, offset, value))
                return
        self._buffer_row(*self._convert(topic, partition, offset, value),
                         (topic, partition, offset, value))

    @staticmethod
    def _convert(topic: str, partition: int, offset: int, value: bytes | None
                 ) -> tuple[ch.Table, Row]:
        table, row = to_row(topic, partition, offset, value, datetime.now(UTC))
        if table is ch.REJECTS:
            REJECTED.labels(topic).inc()
            log.warning("record kept in sink_rejects", extra={
                "topic": topic, "partition": partition, "offset": offset,
                "reason": row["reason"]})
        return table, row

    def _buffer_row(self, table: ch.Table, row: Row,
                    source: tuple[str, int, int, bytes | None]) -> None:
        if not self._buffered:
            self._first_buffered = time.monotonic()
        self._buffer[table].append(_Buffered(row, *source))
        self._buffered += 1
        self._offsets[source[0], source[1]] = source[2] + 1

    def _convert_small_intake(self) -> None:
        """Convert the intake's records here when they are too few to repay its cost per
        insert (chDB analyses the intake's views at every insert; ``Store.intake_min_rows``);
        the rows are the same either way."""
        intake = self._buffer[ch.INTAKE]
        if len(intake) >= self._store.intake_min_rows:
            return
        for item in intake:
            table, row = self._convert(item.topic, item.partition, item.offset, item.value)
            self._buffer[table].append(replace(item, row=row))
        intake.clear()

    def _flush(self, wait: bool = False) -> None:
        """Make the buffered rows a batch and hand it to an inserter thread once fewer than
        ``Store.inserts_in_flight`` batches are in flight (the oldest stored and committed
        first); with ``wait``, until every batch is. The batch's inserts are encoded here,
        under the GIL, while the inserters send the ones before (chDB and the network release
        the GIL): on chDB, 68-71k rows/s one batch after the other, 87-88k overlapped
        (bench/sink_bench.py, 10,000 rows per insert). So at most one batch more than those
        in flight is held."""
        if self._buffered:
            self._convert_small_intake()
            by_table = {table: items for table, items in self._buffer.items() if items}
            batch = _Batch(by_table, self._offsets, self._buffered, sends={
                table: send for table, items in by_table.items()
                if (send := self._prepare(table, items)) is not None})
            self._buffer, self._offsets, self._buffered = defaultdict(list), {}, 0
            while len(self._in_flight) >= self._store.inserts_in_flight:
                self._settle()
            self._in_flight.append((self._inserter.submit(self._store_batch, batch), batch))
        while wait and self._in_flight:
            self._settle()

    def _prepare(self, table: ch.Table, items: list[_Buffered]) -> PreparedInsert | None:
        try:
            return self._store.prepare(table, [item.row for item in items])
        except Exception:  # a row the store cannot encode: the inserter's insert meets it
            return None    # again, where a refused row goes to sink_rejects

    def _settle(self) -> None:
        """Wait for the oldest batch in flight; once stored, commit its offsets. Batches are
        committed in the order they were read, whichever insert ended first: a later batch's
        offsets would commit an earlier one's records too."""
        future, batch = self._in_flight.popleft()
        if not future.result():  # shutting down: its records are redelivered next time,
            for later, _ in self._in_flight:  # and so are those of the batches after it
                later.result()
            self._in_flight.clear()
            return
        self._consumer.commit(batch.offsets)
        self.inserted += batch.rows
        log.info("inserted", extra={"rows": batch.rows, "total": self.inserted})

    def _store_batch(self, batch: _Batch) -> bool:
        """Insert every table's rows of ``batch``, retrying until ClickHouse takes them (the
        inserter thread). False when the sink stops first."""
        backoff = 1.0
        while True:
            started = time.monotonic()
            since = int(time.time())  # sink_rejects.rejected_at is in seconds
            try:
                for table, items in batch.items.items():
                    self._insert(table, items, batch.sends.pop(table, None))
                break
            except Exception as exc:  # unreachable, restarting, out of disk: keep offsets, retry
                CLICKHOUSE_UP.set(0)
                self.readiness.set("store", False)
                log.error("ClickHouse insert failed; retrying", extra={
                    "error": str(exc).splitlines()[0], "retry_in_s": backoff})
                if self._stop.wait(backoff):
                    return False
                self.readiness.beat()  # retrying is not stuck: the store condition says why
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        INSERT_SECONDS.observe(time.monotonic() - started)
        intake = batch.items.get(ch.INTAKE)
        if intake and self._intake:  # else the sink converted and counted
            self._count_intake(intake, since)
        CLICKHOUSE_UP.set(1)
        self.readiness.set("store", True)
        if self._on_stored is not None:
            self._on_stored(batch.rows)
        return True

    def _insert(self, table: ch.Table, items: list[_Buffered],
                send: PreparedInsert | None = None) -> None:
        """Insert ``items`` (through ``send`` when prepared); when ClickHouse refuses them,
        halve until each refused row is alone and keep it in sink_rejects. Raises only when
        the store is unreachable (or refuses sink_rejects itself): the caller retries the
        whole batch, and what was inserted again is folded by ReplacingMergeTree."""
        try:
            written = send() if send else self._store.insert(table, [item.row for item in items])
        except Exception as exc:
            if table is ch.REJECTS or self._store.transient(exc):
                raise
            if len(items) > 1:
                half = len(items) // 2
                self._insert(table, items[:half])
                self._insert(table, items[half:])
                return
            item = items[0]
            reason = f"ClickHouse refused the {table.name} row: {str(exc).splitlines()[0]}"
            self._store.insert(ch.REJECTS, [reject_row(
                item.topic, item.partition, item.offset, item.value, reason=reason[:2000],
                now=datetime.now(UTC))])
            REJECTED.labels(item.topic).inc()
            log.warning("record kept in sink_rejects", extra={
                "topic": item.topic, "partition": item.partition, "offset": item.offset,
                "reason": reason})
            return
        if table is ch.INTAKE:  # counted once ClickHouse has judged them
            self._check_intake(items, written)
        else:
            ROWS.labels(table.name).inc(len(items))

    def _check_intake(self, items: list[_Buffered], written: int | None) -> None:
        """Make sure ClickHouse wrote each of ``items`` twice more: once judged, once to
        telemetry or sink_rejects. With one of the intake's views gone its Null table takes
        rows and keeps nothing; then the sink converts ``items`` itself, inserts them again
        (ReplacingMergeTree folds what was there after all) and stops using the intake."""
        if written is None or written == INTAKE_WRITES * len(items):
            return
        log.critical("ClickHouse's intake did not keep every record (is one of its views "
                     "gone? they are created again when the sink starts); the sink converts "
                     "them, and every telemetry record until it restarts",
                     extra={"records": len(items), "rows_written": written})
        self._intake = False
        converted: dict[ch.Table, list[_Buffered]] = defaultdict(list)
        for item in items:
            table, row = self._convert(item.topic, item.partition, item.offset, item.value)
            converted[table].append(replace(item, row=row))
        for table, again in converted.items():
            self._insert(table, again)

    def _count_intake(self, items: list[_Buffered], since: int) -> None:
        """Count and log the records of ``items`` that ClickHouse kept in sink_rejects."""
        spans: dict[tuple[str, int], tuple[int, int]] = {}
        for item in items:
            first, last = spans.get((item.topic, item.partition), (item.offset, item.offset))
            spans[item.topic, item.partition] = min(first, item.offset), max(last, item.offset)
        where = " OR ".join(  # topic names are Kafka's: letters, digits, '.', '_' and '-'
            f"(topic = '{topic}' AND kafka_partition = {partition} "
            f"AND kafka_offset BETWEEN {first} AND {last})"
            for (topic, partition), (first, last) in spans.items())
        try:
            _, rejected = self._store.query(
                f"SELECT DISTINCT topic, kafka_partition, kafka_offset, reason "
                f"FROM {ch.REJECTS.name} WHERE rejected_at >= toDateTime({since}) AND ({where})")
        except Exception as exc:  # the rows are stored: only the count is lost
            log.error("cannot count the intake's rejects", extra={"error": str(exc)})
            return
        for topic, partition, offset, reason in rejected:
            REJECTED.labels(topic).inc()
            log.warning("record kept in sink_rejects", extra={
                "topic": topic, "partition": partition, "offset": offset, "reason": reason})
        ROWS.labels(ch.TELEMETRY.name).inc(len(items) - len(rejected))

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self.readiness.set(GROUP, True)  # in the group, even with no partition to own

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self.readiness.set(GROUP, False)
        self._flush(wait=True)  # commit what we hold before another member takes them

    def run(self, stop: threading.Event | None = None, idle_exit_s: float | None = None) -> None:
        """Consume and insert until ``stop`` (or SIGTERM/SIGINT), or ``idle_exit_s`` of quiet."""
        if stop is not None:
            self._stop = stop
        stop_on_signals(self._stop)
        log.info("subscribed", extra={"topics": list(self._topics)})
        last_message = time.monotonic()
        try:
            with self.readiness.watching():
                while not self._stop.is_set():
                    for message in self._consumer.consume(5000):
                        last_message = time.monotonic()
                        self._add(message)
                    if self._buffered and (self._buffered >= self._max_rows or time.monotonic()
                                           - self._first_buffered >= self._max_seconds):
                        self._flush()
                    while self._in_flight and self._in_flight[0][0].done():
                        self._settle()  # commit as soon as it is stored
                    self.readiness.check()
                    if idle_exit_s is not None and not self._buffered and (
                            not self._in_flight) and (
                            time.monotonic() - last_message > idle_exit_s):
                        break
                self._flush(wait=True)
        finally:
            if self._in_flight:  # left by an error: stop their retries
                self._stop.set()
            self._inserter.shutdown()
            self._consumer.close()
