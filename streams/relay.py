"""The streams worker's relay: telemetry.v1 into micro-batches on an internal topic.

A thread of the worker process reads telemetry.v1 with a plain consumer (its own group,
``<app id>-relay``) and writes what each poll brought of each partition as micro-batches
(streams.micro_batch) to partition *p* of ``<app id>-telemetry-batches`` for telemetry.v1's
partition *p*: the batches are co-partitioned with the worker's tables, as telemetry.v1 is, and
carry each record's telemetry.v1 offset, so the worker's evidence names the record it judged.

It commits telemetry.v1 offsets only after Kafka acknowledged the batches holding them; after a
crash it relays again from the last commit, and the worker's dedup set skips readings it has
seen. One poll's batches are acknowledged before the next poll, so a partition that moves to
another worker's relay cannot have its batches interleaved with the old owner's.

It works or says so: ``relay`` is a readiness condition of the worker, and a relay that fails,
or stays out of its consumer group longer than ``kafka.join_timeout_s``, crashes the worker.
Its consumer is replaced by a new member after ``kafka.replace_after_s`` out of the group
(smartport.group_consumer), which is what brought it back after a Kafka restart; and a
producer that delivers nothing for as long while holding batches is replaced, with the
consumer member, so that the batches are read and sent again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from smartport.errors import StackError
from smartport.group_consumer import GroupConsumer
from smartport.kafka import (
    BULK_FETCH,
    committed_offsets,
    discard_producer,
    flush_while_progressing,
    high_watermarks,
    produce,
    producer_config,
    read_range,
)
from smartport.readiness import NotWorking, Readiness
from smartport.settings import KafkaSettings
from streams.micro_batch import chunks, pack, unpack

log = logging.getLogger(__name__)
RELAY = "relay"  # the worker's readiness condition
BATCHES_SUFFIX = "telemetry-batches"
POLL_S = 0.05  # what one poll waits for: the latency a reading gains, and the batch size
POLL_RECORDS = 5000
BATCH_BYTES = 512 * 1024
BATCH_TOPIC_MAX_BYTES = 8 * 1024 * 1024  # a single telemetry.v1 record always fits
STOP_JOIN_S = 10.0


def batches_topic(app_id: str) -> str:
    return f"{app_id}-{BATCHES_SUFFIX}"


def relay_group(app_id: str) -> str:
    return f"{app_id}-relay"


def unjudged_readings(kafka: KafkaSettings, app_id: str, source: str) -> int:
    """Readings of ``source`` the streams worker ``app_id`` has not judged as of its last
    commit: those its relay has not batched, and those in batches it has not committed."""
    ends = high_watermarks(kafka, source)
    relayed = committed_offsets(kafka, relay_group(app_id), source, kafka.partitions)
    batches = batches_topic(app_id)
    judged = committed_offsets(kafka, app_id, batches, kafka.partitions)
    return sum(ends[p] - relayed.get(p, 0) for p in ends) + sum(
        len(unpack(message.value() or b"")) for message in read_range(kafka, batches, judged))


class RelayFailed(StackError):
    """Kafka refused a batch: the relay cannot go on without losing readings."""


class _Undelivered(Exception):
    """The producer delivered nothing for the bound while holding batches."""


class TelemetryRelay:
    def __init__(self, kafka: KafkaSettings, source: str, app_id: str, *,
                 readiness: Readiness, instance_id: str | None = None,
                 new_producer: Callable[[dict[str, Any]], Producer] = Producer) -> None:
        self._kafka = kafka
        self._new_producer = new_producer
        self._producers = 0  # which producer's delivery reports count: the current one's
        self._source = source
        self._target = batches_topic(app_id)
        self._app_id = app_id
        self._instance_id = instance_id
        self._readiness = readiness
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telemetry-relay", daemon=True)
        self._unassigned_since: float | None = None  # set when it starts
        self._refused: list[str] = []
        self.failure: BaseException | None = None  # why the relay ended, if it did by itself

    def start(self) -> None:
        self._unassigned_since = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(STOP_JOIN_S)

    def _run(self) -> None:
        consumer = GroupConsumer(
            self._kafka, relay_group(self._app_id), [self._source],
            on_assign=self._on_assign, on_revoke=self._on_revoke, options={
                # A fetch in bulk but for at most half a poll: with 1 byte and 20 ms the broker
                # answered 210 fetches/s at 1,000 msg/s, each with a few records.
                **BULK_FETCH, "fetch.wait.max.ms": int(POLL_S * 1000 / 2),
                "max.poll.interval.ms": 3_600_000,  # a Kafka outage keeps the assignment
                **({"group.instance.id": self._instance_id} if self._instance_id else {}),
            })
        producer = self._producer()
        try:
            while not self._stop.is_set():
                try:
                    self._relay(consumer, producer, consumer.consume(POLL_RECORDS, POLL_S))
                except _Undelivered as exc:
                    # Seen after a Kafka restart: a producer left with no broker to ask, for
                    # good. What it holds was not committed: a new consumer member reads it
                    # again from the commit, and a new producer sends it.
                    log.warning("the relay's producer delivered nothing: replaced",
                                extra={"why": str(exc)})
                    discard_producer(producer, relay_group(self._app_id))
                    producer = self._producer()
                    consumer.replace("its producer was replaced: what it read is read again")
                self._check_joined()
        except BaseException as exc:
            self.failure = exc
            self._readiness.set(RELAY, False)
            log.critical("the telemetry relay failed; the worker stops", exc_info=True)
        finally:
            consumer.close()

    def _relay(self, consumer: GroupConsumer, producer: Producer, messages: list[Message]
               ) -> None:
        by_partition: dict[int, list[tuple[int, bytes]]] = {}
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None:
                by_partition.setdefault(partition, []).append((offset, message.value() or b""))
        if not by_partition:
            return
        delivered = partial(self._delivered, self._producers)
        for partition, records in by_partition.items():
            for run in chunks(records, BATCH_BYTES):
                produce(producer, self._target, None, pack(run), partition=partition,
                        on_delivery=delivered)
        bound = self._kafka.resolved_replace_after_s
        left = flush_while_progressing(producer, bound, self._stop)
        if left and self._stop.is_set():
            return  # not committed: relayed again by whoever reads the partitions next
        if left:
            raise _Undelivered(f"{left} batches undelivered for {bound:g} s "
                               "(bound: kafka.replace_after_s)")
        if self._refused:
            raise RelayFailed(f"Kafka refused a micro-batch for {self._target}: "
                              f"{self._refused[0]}")
        consumer.commit({(self._source, partition): records[-1][0] + 1
                         for partition, records in by_partition.items()})

    def _producer(self) -> Producer:
        self._producers += 1
        return self._new_producer(producer_config(self._kafka, relay_group(self._app_id), **{
            "linger.ms": 5, "message.max.bytes": BATCH_TOPIC_MAX_BYTES}))

    def _delivered(self, producer: int, error: KafkaError | None, message: Message) -> None:
        if error is not None and producer == self._producers:
            self._refused.append(error.str())

    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self._unassigned_since = None
        self._readiness.set(RELAY, True)  # in the group, even with no partition to own

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._unassigned_since = time.monotonic()
        self._readiness.set(RELAY, False)

    def _check_joined(self) -> None:
        since, bound = self._unassigned_since, self._kafka.join_timeout_s
        if since is not None and time.monotonic() - since > bound:
            raise NotWorking(
                f"the streams worker's telemetry relay has not been assigned its Kafka "
                f"partitions for {time.monotonic() - since:.0f} s (bound: kafka.join_timeout_s "
                f"= {bound:.0f} s); exiting so that a supervisor restarts it — check that "
                "Kafka is reachable (`smartport stack status`)")
