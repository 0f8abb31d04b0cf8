"""The container-state table as the agents use it: written back once per commit, not per reading.

Each container's rule state is parsed from the changelog-backed table once, changed in place by
whichever agent handles the container's next event, and only marked dirty. When the worker
commits its offsets, faust first tells its sensors (``on_commit_initiated``), and this table's
sensor writes every dirty state back to the table and stages its changelog record; faust then
flushes its producer (the alerts the agents queued) and, before it commits, the staged records
are delivered (``ChangelogWriter``). A container that gets fifty readings between two commits
costs one serialisation and one changelog record instead of fifty. The offsets committed never
run ahead of the states written, nor a state ahead of the alerts it raised: after a crash the
readings since the last commit are replayed from the state as of that commit (their alerts
come again with the same ids and versions).

The changelog records go through a confluent-kafka producer of their own, not faust's: faust's
conductor holds every stream while its producer buffer holds more than 100 messages, and a
commit at 5,000 readings/s wrote about 1,600 states through it, one aiokafka send at a time:
0.3 to 1.4 s of held streams at every commit, the worst of the alerts' latency.

A state whose partition was revoked before it was written is dropped: its new owner replays the
readings since the last commit from the state as of that commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import faust
from confluent_kafka import KafkaError, Message, Producer

from smartport.errors import StackError
from smartport.kafka import (
    discard_producer,
    flush_while_progressing,
    produce,
    producer_config,
)
from smartport.readiness import Readiness
from smartport.settings import KafkaSettings
from streams.rules.state import ContainerState

log = logging.getLogger(__name__)

T = TypeVar("T")

CHANGELOG = "changelog"  # the worker's readiness condition: its commits are not held up


class Parsed(Generic[T]):
    """A table's values parsed, each valid while the table still holds the very bytes it was
    parsed from: saves re-parsing on every reading (a rebalance or recovery replaces them)."""

    def __init__(self, table: Any, parse: Callable[[bytes], T]) -> None:
        self._table = table
        self._parse = parse
        self._cache: dict[bytes, tuple[bytes, T]] = {}

    def get(self, key: bytes) -> T | None:
        raw = self._table.get(key)
        if raw is None:
            return None
        cached = self._cache.get(key)
        if cached is None or cached[0] is not raw:
            cached = (raw, self._parse(raw))
            self._cache[key] = cached
        return cached[1]

    def put(self, key: bytes, value: T, raw: bytes) -> None:
        """Set ``key`` in the table (inside a stream: faust writes the changelog too)."""
        self._table[key] = raw
        self.remember(key, value, raw)

    def remember(self, key: bytes, value: T, raw: bytes) -> None:
        """``raw``, just stored for ``key``, parses to ``value``."""
        self._cache[key] = (raw, value)


class ChangelogRefused(StackError):
    """Kafka refused a state's changelog record: the commit cannot go on without losing it."""


class ChangelogWriter:
    """Delivers staged changelog records of one table, in order, with a producer of its own.

    ``write`` waits (off the event loop) until Kafka has every record: while Kafka is away it
    keeps trying, and a producer that delivers nothing for ``kafka.replace_after_s`` (seen
    after a Kafka restart: a producer left with no broker to ask) is replaced and the records
    sent again (the changelog is compacted: a record twice is the same state twice). From then
    until they are delivered, the worker's ``changelog`` readiness condition is false: it is
    alive and judging, but no commit passes."""

    def __init__(self, kafka: KafkaSettings, topic: str, client_id: str, readiness: Readiness,
                 new_producer: Callable[[dict[str, Any]], Producer] = Producer) -> None:
        self._kafka = kafka
        self._topic = topic
        self._client_id = client_id
        self._readiness = readiness
        readiness.set(CHANGELOG, True)
        self._new_producer = new_producer
        self._producer: Producer | None = None
        self._staged: list[tuple[int, bytes, bytes]] = []

    def stage(self, partition: int, key: bytes, value: bytes) -> None:
        self._staged.append((partition, key, value))

    async def write(self) -> None:
        """Deliver every staged record (faust awaits this after flushing its producer)."""
        staged, self._staged = self._staged, []
        if staged:
            await asyncio.get_running_loop().run_in_executor(None, self._deliver, staged)

    def _deliver(self, records: list[tuple[int, bytes, bytes]]) -> None:
        started = time.monotonic()
        while not self._delivered_by_one_producer(records):
            self._readiness.set(CHANGELOG, False)
            log.warning("the changelog producer delivered nothing: replaced; commits wait, "
                        "readiness 0 until it is delivered",
                        extra={"topic": self._topic, "records": len(records),
                               "waited_s": round(time.monotonic() - started)})
        if not self._readiness.holds(CHANGELOG):
            log.warning("the changelog was delivered: commits go on", extra={
                "topic": self._topic, "waited_s": round(time.monotonic() - started)})
            self._readiness.set(CHANGELOG, True)
        log.debug("changelog written", extra={
            "topic": self._topic, "records": len(records),
            "ms": round((time.monotonic() - started) * 1000)})

    def _delivered_by_one_producer(self, records: list[tuple[int, bytes, bytes]]) -> bool:
        if self._producer is None:
            self._producer = self._new_producer(producer_config(self._kafka, self._client_id))
        producer, refused = self._producer, []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                refused.append(error.str())

        for partition, key, value in records:
            produce(producer, self._topic, key, value, partition=partition,
                    on_delivery=delivered)
        if flush_while_progressing(producer, self._kafka.resolved_replace_after_s):
            discard_producer(producer, self._client_id)
            self._producer = None
            return False
        if refused:
            raise ChangelogRefused(f"Kafka refused a changelog record for {self._topic}: "
                                   f"{refused[0]}")
        return True


class StateTable:
    """Rule states by container number (key), over a faust Table with the memory store; their
    changelog records go through ``changelog`` (delivered before each offset commit)."""

    def __init__(self, table: Any, changelog: ChangelogWriter) -> None:
        self._table = table
        self._changelog = changelog
        self._written = Parsed(table, ContainerState.model_validate_json)
        self._dirty: dict[bytes, tuple[int, ContainerState]] = {}  # key → partition, state

    def get(self, key: bytes) -> ContainerState | None:
        dirty = self._dirty.get(key)
        return dirty[1] if dirty is not None else self._written.get(key)

    def put(self, key: bytes, state: ContainerState, partition: int) -> None:
        """``state`` changed while handling an event of ``partition`` (co-partitioned with
        the table): written at the next commit."""
        self._dirty[key] = (partition, state)

    def write_back(self, owned: set[int]) -> int:
        """Write every dirty state of an ``owned`` partition to the table and stage its
        changelog record; how many were written."""
        written = 0
        for key, (partition, state) in self._dirty.items():
            if partition not in owned:
                continue
            raw = state.model_dump_json().encode()
            self._table.data[key] = raw
            self._changelog.stage(partition, key, raw)
            self._written.remember(key, state, raw)
            written += 1
        self._dirty.clear()
        return written

    def forget(self, partitions: set[int]) -> None:
        """``partitions`` were revoked: their unwritten states are the new owner's to redo."""
        self._dirty = {key: entry for key, entry in self._dirty.items()
                       if entry[0] not in partitions}


class WriteBackOnCommit(faust.Sensor):
    """Writes ``states`` back as the worker's consumer starts a commit (``source`` is one of the
    co-partitioned topics the table is keyed like: its assigned partitions are the owned
    ones)."""

    def __init__(self, states: StateTable, source: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._states = states
        self._source = source
        self.crashing: asyncio.Future[None] | None = None

    def on_commit_initiated(self, consumer: Any) -> None:
        owned = {tp.partition for tp in consumer.assignment() if tp.topic == self._source}
        try:
            self._states.write_back(owned)
        except Exception as exc:
            # Raising stops this commit (no offset passes an unwritten state), but faust would
            # go on without committing, alive and never committing again: crash the worker.
            self.crashing = asyncio.ensure_future(consumer.app.crash(exc))
            raise
